from __future__ import annotations

from typing import Optional

import typer

from si_bench import store


def command(
    model: str = typer.Option("smollm2-135m", help="Preset (smollm2-135m, tiny-test), model directory or hub id."),
    dataset: str = typer.Option("arith", help="arith, gsm8k, math or math500."),
    split: str = typer.Option("test", help="Dataset split."),
    limit: Optional[int] = typer.Option(None, help="Seeded random sample of N prompts (stratified for MATH)."),
    samples: int = typer.Option(4, help="N sampled answers per prompt."),
    verifier: str = typer.Option("tf", help="Self-verification method: tf (True/False) or qe (quality rating)."),
    sigma: float = typer.Option(0.5, help="Verifier score threshold of the hybrid best-of-N pick."),
    num_fewshot: int = typer.Option(3, "--num-fewshot", help="Few-shot examples in the solver prompt."),
    verifier_shots: int = typer.Option(2, help="Few-shot examples in the verifier prompt."),
    apply_chat_template: bool = typer.Option(False, "--apply-chat-template", help="Render prompts with the chat template."),
    backend: str = typer.Option("hf", help="hf (CPU/GPU) or vllm (GPU)."),
    batch_size: int = typer.Option(32, help="Sequences per generation batch."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Cap on generated tokens (the task sets its own maximum)."),
    seed: int = typer.Option(0, help="Seed of the prompt sample, the sampling and the bootstrap."),
    n_boot: int = typer.Option(1000, help="Bootstrap replicates for the 95% CIs."),
    chunk_prompts: int = typer.Option(8, help="Prompts per stored chunk: the most work a crash can lose."),
    db: str = typer.Option(store.DEFAULT_DB, help="DuckDB file."),
) -> None:
    """Measure solver and verifier accuracy and uncertainty (U_s, U_v, G) with 95% CIs; store everything."""
    from si_bench.cli.progress import progress_bar
    from si_bench.evaluation import EvalConfig, evaluate
    from si_bench.reports.terminal import evaluation_table, print_table

    cfg = EvalConfig(
        model=model, dataset=dataset, split=split, limit=limit, samples=samples, verifier=verifier, sigma=sigma,
        num_fewshot=num_fewshot, verifier_shots=verifier_shots, apply_chat_template=apply_chat_template,
        backend=backend, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed, n_boot=n_boot, chunk_prompts=chunk_prompts, db=db,
    )
    with progress_bar() as progress:
        result = evaluate(cfg, progress=progress)
    print_table(evaluation_table(result))

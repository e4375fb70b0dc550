from __future__ import annotations

from typing import Optional

import typer

from si_bench import store
from si_bench.errors import SIBenchError
from si_bench.trainers.config import SelfImproveConfig

D = SelfImproveConfig()  # the CLI's defaults are the config's (the embedded demo)


def command(
    model: str = typer.Option(D.model, help="Starting model: preset, directory or hub id."),
    dataset: str = typer.Option(D.dataset, help="arith, gsm8k, math or math500."),
    rounds: int = typer.Option(D.rounds, help="Rounds (regenerate) or epochs (fixed)."),
    samples: int = typer.Option(D.samples, help="N candidates per prompt."),
    verifier: str = typer.Option(D.verifier, help="tf or qe: picks the training data."),
    sigma: float = typer.Option(D.sigma, help="Verifier threshold of the best-of-N pick."),
    mode: str = typer.Option(D.mode, help="regenerate (t = rounds) or fixed (t = epochs, half-epoch measurements)."),
    train_prompts: int = typer.Option(D.train_prompts, help="Training prompts (the same every round)."),
    test_limit: int = typer.Option(D.test_limit, help="Test prompts measured at t=0, every --eval-every rounds and at the end."),
    eval_every: int = typer.Option(D.eval_every, help="Measure the test split every this many rounds."),
    num_fewshot: int = typer.Option(D.num_fewshot, "--num-fewshot", help="Few-shot examples in the solver prompt."),
    verifier_shots: int = typer.Option(D.verifier_shots, help="Few-shot examples in the verifier prompt."),
    apply_chat_template: bool = typer.Option(False, "--apply-chat-template", help="Use the chat template."),
    max_new_tokens: Optional[int] = typer.Option(D.max_new_tokens, help="Cap on generated tokens."),
    backend: str = typer.Option(D.backend, help="hf or vllm (sampling backend)."),
    batch_size: int = typer.Option(D.batch_size, help="Sequences per generation batch."),
    external: Optional[str] = typer.Option(None, help="Cross-improvement source: ground-truth or a model spec."),
    budget: int = typer.Option(D.budget, help="External items in total."),
    allocation: str = typer.Option(D.allocation, help="early, uniform, late or comma-separated shares per round."),
    full_finetune: bool = typer.Option(False, "--full-finetune", help="Full fine-tuning instead of LoRA."),
    lora_r: int = typer.Option(D.lora_r, help="LoRA rank."),
    learning_rate: float = typer.Option(D.learning_rate, help="SFT learning rate."),
    epochs_per_round: float = typer.Option(D.epochs_per_round, help="SFT epochs over a round's picks (regenerate mode)."),
    train_batch_size: int = typer.Option(D.train_batch_size, help="SFT batch size."),
    keep_checkpoints: str = typer.Option(D.keep_checkpoints, help="all or last."),
    seed: int = typer.Option(D.seed, help="Seed of the run."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds: replicate runs that fit combines."),
    n_boot: int = typer.Option(D.n_boot, help="Bootstrap replicates for CIs."),
    workdir: Optional[str] = typer.Option(None, help="Where checkpoints go (default: si-bench-runs/ beside the db)."),
    db: str = typer.Option(store.DEFAULT_DB, help="DuckDB file."),
) -> None:
    """Self-improvement: round-0 evaluation plus K rounds of sample -> self-verify -> fine-tune -> evaluate.
    Resumable: the same command continues a killed run."""
    from si_bench import api
    from si_bench.cli.progress import progress_bar
    from si_bench.reports.terminal import print_trajectory

    try:
        seed_list = [int(s) for s in seeds.split(",")] if seeds else None
    except ValueError:
        raise SIBenchError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    cfg = SelfImproveConfig(
        model=model, dataset=dataset, verifier=verifier, mode=mode, rounds=rounds, samples=samples, sigma=sigma,
        train_prompts=train_prompts, test_limit=test_limit, eval_every=eval_every, num_fewshot=num_fewshot,
        verifier_shots=verifier_shots, apply_chat_template=apply_chat_template, max_new_tokens=max_new_tokens,
        batch_size=batch_size, backend=backend, seed=seed, external=external, budget=budget, allocation=allocation,
        lora=not full_finetune, lora_r=lora_r, lora_alpha=2 * lora_r, learning_rate=learning_rate,
        epochs_per_round=epochs_per_round, train_batch_size=train_batch_size, keep_checkpoints=keep_checkpoints,
        n_boot=n_boot,
    )
    with progress_bar() as progress:
        run_ids = api.run(cfg, seeds=seed_list, db=db, workdir=workdir, progress=progress, log=progress.console.print)
    for run_id in run_ids:
        print_trajectory(run_id, db)

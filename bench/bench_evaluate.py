"""Benchmark: si-bench's solver phase against a plain lm-eval `generate_until` run doing the same work.

Both sides get identical prompts (same documents, same 3-shot examples, same template), the same
repeats (N), batch size, stop strings (`until`) and generation length, and both load only the task they
need. Model loading is excluded from both timings; each side is warmed up once, then timed 3 times
(median). Sampling settings are temperature 1, top_k 0, top_p 1 on both sides. On HF, `top_k=0`
disables top-k filtering (transformers otherwise applies its default top_k=50); si-bench's sampler
draws from the full distribution by construction. Verification (TF scoring of si-bench's candidates)
is timed separately.

Plain side: the stock `HFLM` and a stock-style YAML task (json data files) in a temporary folder,
loaded with `TaskManager(include_path=..., include_defaults=False)`, run with `lm_eval.evaluator.evaluate`.
si-bench side: `si_bench.lmeval.sample_solutions` with `LogprobHFLM`, in chunks of `--chunk-prompts`
prompts as `Evaluation._sample` does.

Run:
    .venv/bin/python bench/bench_evaluate.py --model tiny-test
    .venv/bin/python bench/bench_evaluate.py --model smollm2-135m --limit 32 --samples 4   (target ratio <= 1.10)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import yaml

from si_bench import lmeval
from si_bench.backends import load_lm
from si_bench.datasets import get_dataset
from si_bench.evaluation import EvalConfig, fewshot_pool, select_prompts
from si_bench.models import resolve_model
from si_bench.tasks import TASKS_DIR
from si_bench.verify import get_verifier, score_candidates

REPEATS = 3


def solver_task_config(task_name: str) -> dict:
    """The si-bench solver task's prompt and generation settings (its YAML merged over _solver.yaml)."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: None)
    base = yaml.load((TASKS_DIR / "_solver.yaml").read_text(), Loader=Loader)
    own = yaml.load((TASKS_DIR / f"{task_name}.yaml").read_text(), Loader=Loader)
    return {**base, **own}


def write_plain_task(folder: Path, docs: list[dict], fewshot: list[dict], si_task: dict, *, n: int, shots: int,
                     max_new_tokens: int) -> str:
    """A stock-style lm-eval task over json files: the prompts si-bench sees, nothing of si-bench's code."""
    for split, rows in (("train", fewshot), ("test", docs)):
        with open(folder / f"{split}.jsonl", "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
    gen = dict(si_task["generation_kwargs"])
    gen["max_gen_toks"] = max_new_tokens
    task = {
        "task": "plain_solver",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {s: str(folder / f"{s}.jsonl") for s in ("train", "test")}},
        "output_type": "generate_until",
        "training_split": "train", "fewshot_split": "train", "test_split": "test",
        "doc_to_text": si_task["doc_to_text"], "doc_to_target": si_task["doc_to_target"],
        "target_delimiter": si_task["target_delimiter"], "fewshot_delimiter": si_task["fewshot_delimiter"],
        "num_fewshot": shots, "fewshot_config": {"sampler": "first_n"}, "repeats": n,
        "generation_kwargs": gen,
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1},
    }
    (folder / "plain_solver.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return "plain_solver"


class StepCounter:
    """Counts the token slots `model.generate` computes (rows x generated steps): the work actually done."""

    def __init__(self, lm):
        self.slots = 0
        self._generate = lm.model.generate
        lm.model.generate = self

    def __call__(self, *args, **kwargs):
        output = self._generate(*args, **kwargs)
        prompt = kwargs.get("input_ids", args[0] if args else None)
        self.slots += output.shape[0] * (output.shape[1] - prompt.shape[1])
        return output


def run_plain(lm, folder: Path, task_name: str, seed: int) -> tuple[float, list[dict]]:
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    torch.manual_seed(seed)
    started = time.perf_counter()
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    task_dict = manager.load([task_name])  # as simple_evaluate does
    results = evaluate(lm=lm, task_dict=task_dict, bootstrap_iters=0, log_samples=True, verbosity="ERROR")
    elapsed = time.perf_counter() - started
    return elapsed, sorted(results["samples"][task_name], key=lambda s: s["doc_id"])


def run_si(lm, dataset: str, prompts, fewshot, *, n: int, shots: int, chunk: int, seed: int):
    lm.seed_base = f"bench-{seed}"
    started = time.perf_counter()
    texts = []
    for i in range(0, len(prompts), chunk):
        texts += lmeval.sample_solutions(lm, dataset, prompts[i : i + chunk], fewshot, n=n, shots=shots,
                                         apply_chat_template=False)
    return time.perf_counter() - started, texts


def compare_sampling(model_path: str, dataset_name: str, prompts, fewshot, *, samples: int, batch_size: int,
                     max_new_tokens: int, num_fewshot: int, chunk_prompts: int, device: str = "cpu",
                     dtype: str = "float32", repeats: int = REPEATS) -> tuple[dict, object, list]:
    """Time plain lm-eval `hf` generate_until against si-bench's sampling on identical prompts, N, batch and
    length, each warmed up once, then alternated `repeats` times (medians). Returns the figures, si-bench's
    model and its last samples."""
    from lm_eval.models.huggingface import HFLM

    dataset = get_dataset(dataset_name)
    docs = [{**p.as_doc(), "dataset": dataset_name} for p in prompts]
    fewshot_docs = [{**p.as_doc(), "dataset": dataset_name} for p in fewshot]
    t0 = time.perf_counter()
    plain_lm = HFLM(pretrained=model_path, device=device, batch_size=batch_size, dtype=dtype)
    si_lm = load_lm("hf", model_path, None, batch_size=batch_size, max_new_tokens=max_new_tokens, seed_base="bench",
                    device=device, dtype=dtype)
    load_s = time.perf_counter() - t0
    tokenizer = si_lm.tokenizer
    plain_steps, si_steps = StepCounter(plain_lm), StepCounter(si_lm)
    task_config = solver_task_config(dataset.task)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        task_name = write_plain_task(folder, docs, fewshot_docs, task_config, n=samples, shots=num_fewshot,
                                     max_new_tokens=max_new_tokens)
        warm = max(1, min(len(prompts), batch_size // samples))
        # Warm-up once on each side (a batch's worth of prompts), then alternate the timed repeats.
        warm_folder = folder / "warm"
        warm_folder.mkdir()
        write_plain_task(warm_folder, docs[:warm], fewshot_docs, task_config, n=samples, shots=num_fewshot,
                         max_new_tokens=max_new_tokens)
        run_plain(plain_lm, warm_folder, task_name, seed=999)
        run_si(si_lm, dataset_name, prompts[:warm], fewshot, n=samples, shots=num_fewshot, chunk=chunk_prompts,
               seed=999)

        plain_times, si_times, plain_tokens, si_tokens, si_counted, plain_slots, si_slots = [], [], [], [], [], [], []
        contexts_equal = None
        for r in range(repeats):
            plain_steps.slots = si_steps.slots = 0
            elapsed, results = run_plain(plain_lm, folder, task_name, seed=r)
            plain_slots.append(plain_steps.slots)
            plain_times.append(elapsed)
            responses = [t for s in results for group in s["resps"] for t in group]  # all N per prompt
            assert len(responses) == len(prompts) * samples, len(responses)
            plain_tokens.append(sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in responses))

            elapsed, texts = run_si(si_lm, dataset_name, prompts, fewshot, n=samples, shots=num_fewshot,
                                    chunk=chunk_prompts, seed=r)
            si_times.append(elapsed)
            si_slots.append(si_steps.slots)
            flat = [t for row in texts for t in row]
            assert len(flat) == len(prompts) * samples
            si_tokens.append(sum(len(tokenizer.encode(str(t), add_special_tokens=False)) for t in flat))
            si_counted.append(sum(t.n_tokens for t in flat))
            if contexts_equal is None:
                plain_contexts = {s["doc"]["prompt_id"]: s["arguments"][0][0] for s in results}
                contexts_equal = plain_contexts == {p.prompt_id: c for p, c in zip(prompts, si_contexts(
                    si_lm, dataset_name, prompts, fewshot, num_fewshot), strict=True)}

    plain_s, si_s = statistics.median(plain_times), statistics.median(si_times)
    report = {
        "prompts": len(prompts), "samples": samples, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
        "chunk_prompts": chunk_prompts, "device": device, "dtype": dtype, "repeats": repeats,
        "prompts_identical": contexts_equal, "load_s": load_s,
        "plain_s": plain_s, "si_bench_s": si_s, "ratio": si_s / plain_s,
        "plain_times": plain_times, "si_times": si_times,
        "plain_tokens": statistics.median(plain_tokens), "si_tokens": statistics.median(si_tokens),
        "si_tokens_counted": statistics.median(si_counted),
        "plain_token_slots": plain_slots, "si_token_slots": si_slots,
        "plain_tok_per_s": statistics.median(plain_tokens) / plain_s,
        "si_tok_per_s": statistics.median(si_tokens) / si_s,
    }
    return report, si_lm, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="arith")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--num-fewshot", type=int, default=3)
    parser.add_argument("--chunk-prompts", type=int, default=EvalConfig.chunk_prompts)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--json", dest="json_out", default=None, help="write the numbers to this file")
    args = parser.parse_args()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = EvalConfig(model=args.model, dataset=args.dataset, limit=args.limit, samples=args.samples, device="cpu")
    prompts = select_prompts(cfg)
    fewshot = fewshot_pool(get_dataset(args.dataset))
    sampling, si_lm, texts = compare_sampling(
        resolve_model(args.model).path, args.dataset, prompts, fewshot, samples=args.samples,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, num_fewshot=args.num_fewshot,
        chunk_prompts=args.chunk_prompts)

    method = get_verifier("tf")
    items = [(p, str(t)) for p, row in zip(prompts, texts, strict=True) for t in row]
    score_candidates(si_lm, method, items[: args.batch_size], fewshot, shots=cfg.verifier_shots,
                     apply_chat_template=False)  # warm-up
    verify_times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        score_candidates(si_lm, method, items, fewshot, shots=cfg.verifier_shots, apply_chat_template=False)
        verify_times.append(time.perf_counter() - started)

    report = {"model": args.model, "dataset": args.dataset, **sampling,
              "verification_s": statistics.median(verify_times), "verified_candidates": len(items)}
    plain_s, si_s = report["plain_s"], report["si_bench_s"]
    rows = [
        ("prompts x N", f"{len(prompts)} x {args.samples}"), ("batch / max new tokens",
                                                              f"{args.batch_size} / {args.max_new_tokens}"),
        ("identical prompts", str(report["prompts_identical"])),
        ("tokens generated (re-tokenised text) plain", f"{report['plain_tokens']:.0f}"),
        ("tokens generated (re-tokenised text) si-bench", f"{report['si_tokens']:.0f}"),
        ("tokens si-bench counted (incl. stop token)", f"{report['si_tokens_counted']:.0f}"),
        ("token slots computed (rows x steps) plain", str(report["plain_token_slots"])),
        ("token slots computed (rows x steps) si-bench", str(report["si_token_slots"])),
        ("plain lm-eval s (median of 3)", f"{plain_s:.2f}  {[round(t, 2) for t in report['plain_times']]}"),
        ("si-bench s (median of 3)", f"{si_s:.2f}  {[round(t, 2) for t in report['si_times']]}"),
        ("ratio si-bench / plain (target <= 1.10)", f"{report['ratio']:.3f}"),
        ("verification s (TF, same candidates)", f"{report['verification_s']:.2f} for {len(items)} candidates"),
        ("model load s (excluded)", f"{report['load_s']:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"bench_evaluate: {args.model} on {args.dataset}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


def si_contexts(lm, dataset: str, prompts, fewshot, shots: int) -> list[str]:
    """The contexts si-bench's task renders for these prompts (what the model is given)."""
    from unittest import mock

    seen: list[str] = []

    def record(self, contexts, gen_kwargs, seeds, report=None):
        seen.extend(contexts)
        return [_Empty() for _ in contexts]

    with mock.patch.object(type(lm), "_sample_batch", record):
        lmeval.sample_solutions(lm, dataset, prompts, fewshot, n=1, shots=shots, apply_chat_template=False)
    # sample_solutions sends requests longest-first; map contexts back to prompts by their question text.
    out = []
    for p in prompts:
        matches = [c for c in seen if p.question in c.rsplit("\n\n", 1)[-1]]
        out.append(matches[0] if matches else "")
    return out


class _Empty(str):
    logprob = 0.0
    n_tokens = 0

    def __new__(cls):
        return super().__new__(cls, "")


if __name__ == "__main__":
    main()

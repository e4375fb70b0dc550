"""The NLL task (si_nll, a stock loglikelihood pass over logged samples) against the NLL si-hf captures while sampling.

Run: .venv/bin/python bench/bench_lm_eval_nll.py [model preset or directory] [prompts] [max tokens]
(default: smollm2-135m, 8 arith prompts, 48 tokens; N = 4 samples each, the task's own).
Samples arith with `si-bench lm-eval --model si-hf` (each sample's NLL captured during generation, in
`sample_nll_<k>`), runs stock lm-eval's `hf` model on `si_nll` over that --log_samples file, and prints the CPU
and wall time of each pass and the per-sample difference si-hf minus si_nll (si-hf also counts the token that
completed the stop sequence; si_nll re-tokenizes the kept text at the context/continuation boundary).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    import lm_eval.tasks
    from lm_eval.__main__ import cli_evaluate

    from si_bench.lmeval import lm_eval_cli
    from si_bench.models import resolve_model
    from si_bench.tasks import TASKS_DIR

    class OursOnly(lm_eval.tasks.TaskManager):  # indexing lm-eval's stock tasks would add seconds to each pass
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "include_defaults": False})

    lm_eval.tasks.TaskManager = OursOnly
    model = resolve_model(sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m").path
    prompts, tokens = (sys.argv[2] if len(sys.argv) > 2 else "8"), (sys.argv[3] if len(sys.argv) > 3 else "48")
    out = Path(tempfile.mkdtemp(prefix="bench-lm-eval-nll-"))
    common = ["--model_args", f"pretrained={model}", "--include_path", str(TASKS_DIR), "--device", "cpu",
              "--batch_size", "16", "--log_samples"]
    wall, cpu = time.perf_counter(), cpu_seconds()
    lm_eval_cli(["--model", "si-hf", *common, "--tasks", "si_solver_arith", "--limit", prompts,
                 "--gen_kwargs", f"max_gen_toks={tokens}", "--output_path", str(out / "solver")])
    sampled = time.perf_counter() - wall, cpu_seconds() - cpu
    [samples] = (out / "solver").rglob("samples_si_solver_arith_*.jsonl")
    wall, cpu = time.perf_counter(), cpu_seconds()
    saved, sys.argv = sys.argv, ["lm_eval", "--model", "hf", *common, "--tasks", "si_nll",
                                 "--metadata", f"samples={samples}", "--output_path", str(out / "nll")]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    scored = time.perf_counter() - wall, cpu_seconds() - cpu
    [nll_file] = (out / "nll").rglob("samples_si_nll_*.jsonl")
    nll = {(r["doc"]["prompt_id"], r["doc"]["sample_idx"]): r["nll"] for r in map(json.loads, nll_file.open())}
    pairs = [(row[f"sample_nll_{k}"], nll.get((row["doc"]["prompt_id"], k)))
             for row in map(json.loads, samples.open()) for k in range(len(row["filtered_resps"][0]))]
    a, b = (np.array([p[i] for p in pairs if p[1] is not None]) for i in (0, 1))
    print(f"model {model}: {len(pairs)} samples ({sum(p[1] is None for p in pairs)} empty)")
    print(f"sampling with si-hf (NLL captured): {sampled[1]:.1f} s CPU, {sampled[0]:.1f} s wall; "
          f"si_nll pass: {scored[1]:.1f} s CPU, {scored[0]:.1f} s wall ({scored[1] / sampled[1]:.0%} of sampling)")
    d = a - b
    print(f"NLL per sample: si-hf {a.mean():.3f}, si_nll {b.mean():.3f}; si-hf minus si_nll: mean {d.mean():.3f}, "
          f"median {np.median(d):.3f}, min {d.min():.3f}, max {d.max():.3f}; correlation {np.corrcoef(a, b)[0, 1]:.4f}")


if __name__ == "__main__":
    main()

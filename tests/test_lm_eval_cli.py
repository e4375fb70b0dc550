"""The solver tasks under lm-eval's own command line (no si-bench in between), and `si-bench lm-eval`, the same
command line with si-bench's model classes, whose `--model si-hf` adds the solver uncertainty and each sample's NLL."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from conftest import ROOT, index_our_tasks_only
from typer.testing import CliRunner

from si_bench.datasets import get_dataset
from si_bench.evaluation import EvalConfig, fewshot_pool, select_prompts
from si_bench.lmeval import render_contexts

TASK = "si_solver_gsm8k"
# The task's own settings (3-shot, 4 samples); fewer tokens than its 256 keep the tiny model quick.
ARGS = ["--include_path", "tasks", "--tasks", TASK, "--limit", "2", "--device", "cpu", "--batch_size", "8",
        "--gen_kwargs", "max_gen_toks=12", "--log_samples"]


def outputs(folder: Path) -> tuple[dict, list[dict]]:
    [results] = folder.rglob("results_*.json")
    [samples] = folder.rglob(f"samples_{TASK}_*.jsonl")
    return json.loads(results.read_text()), [json.loads(line) for line in samples.read_text().splitlines()]


def test_stock_lm_eval_runs_a_solver_task_on_the_shipped_data(tiny_model, tmp_path, monkeypatch):
    from lm_eval.__main__ import cli_evaluate

    monkeypatch.chdir(ROOT)
    index_our_tasks_only(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["lm_eval", "--model", "hf", "--model_args", f"pretrained={tiny_model.path}",
                                      *ARGS, "--output_path", str(tmp_path)])
    cli_evaluate()
    results, samples = outputs(tmp_path)
    metrics = results["results"][TASK]
    assert 0.0 <= metrics["acc,all"] <= 1.0
    assert not any(key.startswith("solver_uncertainty") for key in metrics)  # stock models return text only
    # The documents are si-bench's: its test prompts, with its seeded few-shot pool rendered exactly as it renders it.
    prompts = select_prompts(EvalConfig(dataset="gsm8k"))[:2]
    assert [s["doc"]["prompt_id"] for s in samples] == [p.prompt_id for p in prompts]
    contexts = render_contexts("gsm8k", prompts, fewshot_pool(get_dataset("gsm8k")), shots=3,
                               apply_chat_template=False)
    assert [s["arguments"]["gen_args_0"]["arg_0"] for s in samples] == contexts
    assert all(len(s["resps"][0]) == 4 for s in samples)


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_si_bench_lm_eval_adds_solver_uncertainty(tiny_model, tmp_path, monkeypatch):
    from si_bench.cli import app

    # On the logger itself: lm-eval stops its records propagating to the root (and so to caplog).
    aggregation = logging.getLogger("lm_eval.evaluator_utils")
    collect = Collect()
    aggregation.addHandler(collect)
    monkeypatch.chdir(ROOT)
    index_our_tasks_only(monkeypatch)
    try:
        result = CliRunner().invoke(app, ["lm-eval", "--model", "si-hf", "--model_args",
                                          f"pretrained={tiny_model.path}", *ARGS, "--output_path", str(tmp_path)])
    finally:
        aggregation.removeHandler(collect)
    assert result.exit_code == 0, result.output
    assert not any("No aggregation function" in m for m in collect.messages), collect.messages
    results, samples = outputs(tmp_path)
    metrics = results["results"][TASK]
    assert 0.0 <= metrics["acc,all"] <= 1.0
    assert math.isfinite(metrics["solver_uncertainty,all"]) and metrics["solver_uncertainty,all"] > 0
    for sample in samples:
        nlls = [sample[f"sample_nll_{k}"] for k in range(4)]
        assert all(math.isfinite(x) and x > 0 for x in nlls)
        assert math.isclose(sample["solver_uncertainty"], sum(nlls) / 4)
    per_prompt = [s["solver_uncertainty"] for s in samples]
    assert math.isclose(metrics["solver_uncertainty,all"], sum(per_prompt) / len(per_prompt))

"""Glue to lm-eval: stage documents for our tasks, run them, read back per-sample results; and lm-eval's own
command line with si-bench's model classes (`si-bench lm-eval`).

Only our own tasks in tasks/ are indexed (`include_defaults=False`): indexing lm-eval's 14,000 stock
tasks costs seconds on every call.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator

from si_bench.datasets import Prompt, get_dataset
from si_bench.tasks import TASKS_DIR, solver_docs, stage


def lm_eval_cli(args: list[str]) -> None:
    """lm-eval's own command line (`lm-eval ARGS`) with si-bench's model classes registered: with `--model si-hf`
    (si-vllm, si-mock) the solver tasks also report the solver uncertainty and each sample's NLL."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    from si_bench.backends import register_installed

    register_installed()
    logging.getLogger("lm_eval.evaluator_utils").addFilter(mean_is_intended)
    saved, sys.argv = sys.argv, ["lm-eval", *args]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


def mean_is_intended(record: logging.LogRecord) -> bool:
    """The uncertainty keys of the solver tasks are not in their metric_list (its YAML bytes are part of every
    generation id); lm-eval then aggregates them by the mean, which is what they mean, and says so: not a warning."""
    message = record.getMessage()
    return not (message.startswith("[si_solver_") and "No aggregation function defined" in message)


@lru_cache(maxsize=1)
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


@contextmanager
def quiet() -> Iterator[None]:
    """lm-eval logs a warning per task build about custom datasets; ours are custom by design."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_task(spec: dict):
    """A registered task with config overrides merged in (lm-eval's inline dict specs replace, not merge)."""
    manager = task_manager()
    entry = manager._entry(spec["task"])  # noqa: SLF001 - the public loader has no merge-overrides route
    return manager._factory.build(entry, overrides=spec, registry=manager._index)  # noqa: SLF001


def run_task(lm, spec: dict, *, apply_chat_template: bool) -> list[dict]:
    """Run one task spec (a registered task name plus overrides) and return lm-eval's per-doc samples."""
    from lm_eval.evaluator import evaluate

    with quiet():
        task_dict = {spec["task"]: build_task(spec)}
        results = evaluate(
            lm=lm, task_dict=task_dict, bootstrap_iters=0, log_samples=True,
            apply_chat_template=apply_chat_template, fewshot_as_multiturn=apply_chat_template,
            verbosity="ERROR",
        )
    return sorted(results["samples"][spec["task"]], key=lambda s: s["doc_id"])


def sample_solutions(lm, dataset: str, prompts: list[Prompt], fewshot: list[Prompt], *, n: int, shots: int,
                     apply_chat_template: bool) -> list[list]:
    """N sampled responses per prompt (each a `SampledText`), in prompt order."""
    task = get_dataset(dataset).task
    with stage(solver_docs(fewshot, dataset), solver_docs(prompts, dataset)) as key:
        spec: dict[str, Any] = {"task": task, "dataset_kwargs": {"docs_key": key}, "repeats": n, "num_fewshot": shots}
        samples = run_task(lm, spec, apply_chat_template=apply_chat_template)
    by_id = {s["doc"]["prompt_id"]: s["filtered_resps"][0] for s in samples}
    return [list(by_id[p.prompt_id]) for p in prompts]


def choice_logliks(lm, task: str, docs: list[dict], fewshot: list[dict], *, shots: int,
                   apply_chat_template: bool) -> list[list[float]]:
    """Per-document log-likelihood of each answer choice of a multiple-choice task."""
    with stage(fewshot, docs) as key:
        spec = {"task": task, "dataset_kwargs": {"docs_key": key}, "num_fewshot": shots}
        samples = run_task(lm, spec, apply_chat_template=apply_chat_template)
    return [[float(r[0][0]) for r in s["resps"]] for s in samples]


def render_contexts(dataset: str, prompts: list[Prompt], fewshot: list[Prompt], *, shots: int,
                    apply_chat_template: bool, tokenizer=None) -> list[str]:
    """The exact solver prompts lm-eval renders (few-shot, chat template), so training sees what sampling saw."""
    task_name = get_dataset(dataset).task
    chat = None
    if apply_chat_template:
        def chat(history: list[dict], add_generation_prompt: bool = True) -> str:
            return tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=add_generation_prompt)

    with stage(solver_docs(fewshot, dataset), solver_docs(prompts, dataset)) as key, quiet():
        task = build_task({"task": task_name, "dataset_kwargs": {"docs_key": key}, "num_fewshot": shots, "repeats": 1})
        task.build_all_requests(apply_chat_template=apply_chat_template, fewshot_as_multiturn=apply_chat_template,
                                chat_template=chat)
        contexts = {inst.doc["prompt_id"]: inst.args[0] for inst in task.instances}
    return [contexts[p.prompt_id] for p in prompts]

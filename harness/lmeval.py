"""Glue to lm-eval: stage documents for our tasks, run them, read back per-sample results; and lm-eval's own
command line with si-bench's model classes (`si-bench lm-eval`).

Only our own tasks in tasks/ are indexed (`include_defaults=False`): indexing lm-eval's 14,000 stock
tasks costs seconds on every call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from si_bench.datasets import Prompt, get_dataset
from si_bench.errors import SIBenchError
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


# ---- a solver run's --log_samples file, read back (the NLL and verifier tasks score it; import-lm-eval stores it)

SOLVER_TASK_PREFIX = "si_solver_"
LOGGED_NAME = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d\d-\d\dT[\d.-]+)\.jsonl$")  # lm-eval's own naming


@dataclass(frozen=True)
class LoggedPrompt:
    """One prompt of a solver run as lm-eval logged it: its document, the rendered prompt it sent, its N texts."""

    doc: dict
    context: str
    texts: tuple[str, ...]


@dataclass(frozen=True)
class SolverLog:
    path: Path
    task: str
    digest: str  # of the file's bytes: the NLL and verifier documents carry it, so an import can match them
    prompts: list[LoggedPrompt]


def logged_task(path: Path) -> str | None:
    """The task a file lm-eval named `samples_<task>_<date>.jsonl` logged (None for another name)."""
    match = LOGGED_NAME.match(path.name)
    return match["task"] if match else None


def solver_samples_file(path: str | Path) -> Path:
    """The solver samples file named by `--metadata samples=PATH`: the file, or the one solver samples file under a
    folder (an --output_path)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("samples_*.jsonl") if (logged_task(p) or "").startswith(
            SOLVER_TASK_PREFIX))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise SIBenchError(f"{path} holds {what} solver --log_samples files (samples_{SOLVER_TASK_PREFIX}*.jsonl): "
                               "name one with --metadata samples=FILE")
        return found[0]
    if not path.is_file():
        raise SIBenchError(f"no solver samples file at {path} (give the solver run's --log_samples file with "
                           "--metadata samples=FILE)")
    return path


def read_solver_log(path: str | Path) -> SolverLog:
    """A solver task's --log_samples file, checked: one clear error for a missing, malformed or foreign file."""
    path = solver_samples_file(path)
    task = logged_task(path)
    if task is not None and not task.startswith(SOLVER_TASK_PREFIX):
        raise SIBenchError(f"{path} holds the samples of task {task}, not of an si-bench solver task "
                           f"({SOLVER_TASK_PREFIX}*)")
    data = path.read_bytes()
    prompts = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if line.strip():
            prompts.append(_logged_prompt(line, f"{path}, line {number}"))
    if not prompts:
        raise SIBenchError(f"{path} holds no samples")
    if len({p.doc["prompt_id"] for p in prompts}) < len(prompts):
        raise SIBenchError(f"{path} holds a prompt more than once")
    counts = {len(p.texts) for p in prompts}
    if len(counts) > 1:
        raise SIBenchError(f"{path} holds prompts with different sample counts ({sorted(counts)})")
    tasks = {get_dataset(p.doc["dataset"]).task for p in prompts}
    if len(tasks) > 1 or (task is not None and tasks != {task}):
        raise SIBenchError(f"{path} holds the prompts of {', '.join(sorted(tasks))}, not of one solver task "
                           f"({task or 'its file name says none'})")
    return SolverLog(path, tasks.pop(), hashlib.sha256(data).hexdigest()[:16], prompts)


def nll_docs(log: SolverLog) -> list[dict]:
    """The NLL task's documents: each logged sample as the continuation of the rendered prompt it was sampled from.
    An empty sample has no token to score and is left out (its NLL without its stop is 0 over 0 tokens)."""
    return [{"prompt_id": p.doc["prompt_id"], "sample_idx": k, "context": p.context, "continuation": text,
             "source": log.digest}
            for p in log.prompts for k, text in enumerate(p.texts) if text]


SOLVER_DOC = ("prompt_id", "question", "answer", "dataset")


def _logged_prompt(line: str, where: str) -> LoggedPrompt:
    try:
        row = json.loads(line)
        doc, [[*texts]] = row["doc"], row["filtered_resps"]
        context = row["arguments"]["gen_args_0"]["arg_0"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SIBenchError(f"{where} is not a solver task's logged sample (--log_samples of {SOLVER_TASK_PREFIX}*): "
                           f"{type(exc).__name__} {exc}") from None
    missing = [k for k in SOLVER_DOC if not isinstance(doc, dict) or k not in doc]
    if missing or not isinstance(context, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise SIBenchError(f"{where} is not a solver task's logged sample (--log_samples of {SOLVER_TASK_PREFIX}*): "
                           + (f"its document lacks {', '.join(missing)}" if missing else "its responses are not texts"))
    get_dataset(doc["dataset"])
    return LoggedPrompt(doc, context, tuple(texts))

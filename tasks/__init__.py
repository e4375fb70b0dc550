"""lm-eval tasks of si-bench, loaded with `TaskManager(include_path=<this folder>, include_defaults=False)`.

lm-eval imports `utils.py` by file path (a module instance of its own), so the documents si-bench stages
for a task run live here, in the one importable instance, and `utils.py` fetches them by key. Without a
staged key (lm-eval's own CLI) the solver tasks read the shipped data instead (see `utils.solver_dataset`).
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from si_bench.datasets import Prompt

TASKS_DIR = Path(__file__).parent
_STAGED: dict[str, Any] = {}


def staged(key: str):
    return _STAGED[key]


def solver_docs(prompts: list[Prompt], dataset: str) -> list[dict]:
    """A solver task's documents: the prompt's fields plus the dataset that checks its answers."""
    return [{**p.as_doc(), "dataset": dataset} for p in prompts]


def dataset_dict(train: list[dict], test: list[dict]):
    """(few-shot, evaluated) documents as the `DatasetDict` a task's `custom_dataset` returns."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test)})


@contextmanager
def stage(train: list[dict], test: list[dict]) -> Iterator[str]:
    """Make (few-shot, evaluated) documents available to a task under a fresh key."""
    key = uuid.uuid4().hex
    _STAGED[key] = dataset_dict(train, test)
    try:
        yield key
    finally:
        _STAGED.pop(key, None)

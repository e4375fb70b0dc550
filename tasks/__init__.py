"""lm-eval tasks of si-bench, loaded with `TaskManager(include_path=<this folder>, include_defaults=False)`.

lm-eval imports `utils.py` by file path (a module instance of its own), so the documents si-bench stages
for a task run live here, in the one importable instance, and `utils.py` fetches them by key.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TASKS_DIR = Path(__file__).parent
_STAGED: dict[str, Any] = {}


def staged(key: str):
    return _STAGED[key]


@contextmanager
def stage(train: list[dict], test: list[dict]) -> Iterator[str]:
    """Make (few-shot, evaluated) documents available to a task under a fresh key."""
    from datasets import Dataset, DatasetDict

    key = uuid.uuid4().hex
    _STAGED[key] = DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test)})
    try:
        yield key
    finally:
        _STAGED.pop(key, None)

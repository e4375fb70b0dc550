"""lm-eval tasks of si-bench, loaded with `TaskManager(include_path=<this folder>, include_defaults=False)`."""

from pathlib import Path

TASKS_DIR = Path(__file__).parent

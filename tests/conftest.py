"""Shared fixtures: a private model cache (the tiny model is built once per session) and small configs."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What `si-bench` sets when it starts, before any library loads tqdm (which reads it once, on import): commands run
# in this process (run_cli) show only si-bench's own progress, as they do in their own process.
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    cache = os.environ.get("SI_BENCH_TEST_CACHE") or str(tmp_path_factory.mktemp("si-bench-cache"))
    os.environ["SI_BENCH_CACHE"] = cache
    return Path(cache)


@pytest.fixture(scope="session")
def tiny_model(model_cache):
    from si_bench.models import resolve_model

    return resolve_model("tiny-test")


@pytest.fixture(scope="session")
def scripted_model(tmp_path_factory) -> str:
    """A scripted model directory (si_bench.mock_backend) playing tests/scripted.py's SCRIPT."""
    from scripted import SCRIPT

    from si_bench.mock_backend import write_scripted_model

    return str(write_scripted_model(tmp_path_factory.mktemp("scripted-model"), SCRIPT))


@pytest.fixture
def scripted_training():
    """The run loop fine-tunes with tests/scripted.py's deterministic stand-in instead of trl."""
    from scripted import scripted_sft

    with scripted_sft():
        yield


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "si.duckdb")


@pytest.fixture
def tiny_cfg(tiny_model):
    from si_bench.evaluation import EvalConfig

    return EvalConfig(model="tiny-test", dataset="arith", split="test", limit=6, samples=2, max_new_tokens=8,
                      n_boot=50, chunk_prompts=2, batch_size=8)


@pytest.fixture
def scripted_cfg(scripted_model):
    from scripted import SAMPLES

    from si_bench.evaluation import EvalConfig

    return EvalConfig(model=scripted_model, backend="mock", dataset="arith", split="test", limit=6, samples=SAMPLES,
                      n_boot=50, chunk_prompts=2)


def quiet(_msg: str) -> None:
    """A log sink for API calls whose progress lines a test does not read."""


def index_our_tasks_only(patch: pytest.MonkeyPatch) -> None:
    """lm-eval's command line indexes only the tasks of --include_path (ours) while `patch` holds: indexing its
    14,000 stock tasks costs seconds a call and changes none of ours."""
    import lm_eval.tasks

    class OursOnly(lm_eval.tasks.TaskManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "include_defaults": False})

    patch.setattr(lm_eval.tasks, "TaskManager", OursOnly)


def run_cli(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """The command line in this process: `si-bench ARGS` through the CLI's own `main` (the same parsing, messages,
    exit codes and fault points), its stdout and stderr captured, `env` set and the repository the working directory
    while it runs, as for `run_process`; an uncaught exception is a traceback on stderr and exit 1, as a process
    would show it. No new interpreter imports torch, transformers, lm-eval and trl for a few milliseconds of work:
    use `run_process` only where the process itself is the point (a kill, a lock another process holds)."""
    from si_bench import faults
    from si_bench.cli import main

    if (env or {}).get("SI_BENCH_FAIL_AT", "").endswith((":kill", ":stop")):
        raise AssertionError("a fault that kills or stops its process would do it to the tests: use run_process")
    out, err = io.StringIO(), io.StringIO()
    faults.reset()
    with _environment(env), _working_directory(ROOT), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err), _argv(["si-bench", *args]):
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except Exception:  # noqa: BLE001 (what a process would print before dying: the tests look for it)
            traceback.print_exc(file=err)
            code = 1
    return _checked(subprocess.CompletedProcess(["si-bench", *args], code, out.getvalue(), err.getvalue()), check)


def run_process(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """The real command line in a fresh process: for a process killed mid-work, or one that must not share this
    one's state."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run([sys.executable, "-m", "si_bench", *args], capture_output=True, text=True, env=full_env,
                            cwd=ROOT)
    return _checked(result, check)


def _checked(result: subprocess.CompletedProcess, check: bool) -> subprocess.CompletedProcess:
    if check and result.returncode != 0:
        raise AssertionError(f"si-bench {' '.join(result.args[1:])} failed:\n{result.stderr}")
    return result


@contextlib.contextmanager
def _environment(env: dict | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    saved = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved, sys.argv = sys.argv, argv
    try:
        yield
    finally:
        sys.argv = saved


def table_rows(db: str, table: str, order: str) -> list[tuple]:
    import duckdb

    with duckdb.connect(db, read_only=True) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()

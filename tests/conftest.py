"""Shared fixtures: a private model cache (the tiny model is built once per session) and small configs."""

from __future__ import annotations

import contextlib
import functools
import io
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What `si-bench` sets when it starts, before any library loads tqdm (which reads it once, on import): commands run
# in this process (run_cli) show only si-bench's own progress, as they do in their own process.
os.environ.setdefault("TQDM_DISABLE", "1")
# One torch thread per test process: the tiny models gain nothing from a second thread, and two threads spinning on two
# cores shared with another test process (pytest -n 2) or a child process cost more than they give.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
            code = _exit_code(stop)
        except Exception:  # noqa: BLE001 (what a process would print before dying: the tests look for it)
            traceback.print_exc(file=err)
            code = 1
    return _checked(subprocess.CompletedProcess(["si-bench", *args], code, out.getvalue(), err.getvalue()), check)


def run_process(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """The real command line (`python -m si_bench ARGS`, the repository its working directory) in a process of its
    own: for a process killed mid-work, or one that must not share this one's state."""
    result = start_process(cli_process, list(args), env=env).wait()
    result.args = ["si-bench", *args]
    return _checked(result, check)


class Child:
    """A process of its own running `target(*args)` with this process's environment plus `env`, the repository its
    working directory and its stdout and stderr in files. It is forked from a server that has imported torch,
    transformers, trl and lm-eval once (multiprocessing's forkserver, started with the environment the CLI sets before
    its imports), so it starts in milliseconds rather than seconds; it shares nothing else with this process."""

    def __init__(self, target: Callable[..., None], args: Sequence, env: dict | None):
        self.folder = tempfile.TemporaryDirectory()
        self.out, self.err = Path(self.folder.name, "stdout"), Path(self.folder.name, "stderr")
        self.out.touch(), self.err.touch()
        self.args = [target.__name__, *map(str, args)]
        self.process = _process_context().Process(
            target=_in_child, args=(target, args, {**os.environ, **(env or {})}, str(self.out), str(self.err)))
        self.process.start()
        self.pid = self.process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> subprocess.CompletedProcess:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        result = subprocess.CompletedProcess(self.args, self.process.exitcode, self.out.read_text(),
                                             self.err.read_text())
        self.folder.cleanup()
        return result


def start_process(target: Callable[..., None], *args, env: dict | None = None) -> Child:
    """`target(*args)` (a module-level function) in a process of its own (see `Child`)."""
    return Child(target, args, env)


# What a fresh `python -m si_bench` imports before its first step, imported once by the process server.
PRELOADED = ["torch", "transformers", "peft", "trl", "datasets", "lm_eval.evaluator", "duckdb", "pandas", "typer",
             "rich"]


@functools.lru_cache(maxsize=1)
def _process_context():
    import si_bench.cli  # noqa: F401 - sets the environment defaults the CLI sets before any library loads

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    return context


def cli_process(args: list[str]) -> None:
    """`python -m si_bench ARGS` as the interpreter runs it."""
    sys.argv = ["si-bench", *args]
    runpy.run_module("si_bench", run_name="__main__", alter_sys=True)


def _in_child(target: Callable[..., None], args: Sequence, env: dict, out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    os.chdir(ROOT)
    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.dup2(file, fd)
        os.close(file)
    try:
        target(*args)
    except SystemExit as stop:
        code = _exit_code(stop)
    except BaseException:  # noqa: BLE001 - what the interpreter prints before it exits 1
        traceback.print_exc()
        code = 1
    else:
        code = 0
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no multiprocessing exit handlers: the code is the target's own


def _exit_code(stop: SystemExit) -> int:
    """The status a process ending with `stop` exits with (an int as it is, None 0, anything else 1)."""
    return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)


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

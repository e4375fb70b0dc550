"""Shared fixtures: a private model cache (the tiny model is built once per session) and small configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def run_cli(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """The real command line, in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run([sys.executable, "-m", "si_bench", *args], capture_output=True, text=True, env=full_env,
                            cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"si-bench {' '.join(args)} failed:\n{result.stderr}")
    return result


def table_rows(db: str, table: str, order: str) -> list[tuple]:
    import duckdb

    with duckdb.connect(db, read_only=True) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()

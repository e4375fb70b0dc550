"""The README stays true: every command is documented, every SQL example runs."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

from si_bench.cli import COMMANDS

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_documented(command):
    assert f"`si-bench {command}`" in README, f"README lacks a row for si-bench {command}"


def sql_examples() -> list[str]:
    return [block.strip() for block in re.findall(r"```sql\n(.*?)```", README, flags=re.S)]


def test_readme_has_sql_examples():
    assert len(sql_examples()) >= 3


@pytest.fixture(scope="module")
def store_with_a_run(tmp_path_factory, scripted_model):
    from scripted import scripted_sft

    from si_bench.api import run
    from si_bench.trainers.config import SelfImproveConfig

    folder = tmp_path_factory.mktemp("docs")
    db = str(folder / "si.duckdb")
    with scripted_sft():
        run(SelfImproveConfig(model=scripted_model, backend="mock", rounds=1, samples=2, train_prompts=4, test_limit=4,
                              n_boot=20, train_batch_size=4), db=db, workdir=str(folder / "runs"), log=lambda _: None)
    return db


@pytest.mark.parametrize("sql", sql_examples())
def test_readme_sql_runs(sql, store_with_a_run):
    from si_bench import store

    frame = store.query(store_with_a_run, sql)
    assert len(frame) > 0, sql


def example(containing: str) -> str:
    [sql] = [sql for sql in sql_examples() if containing in sql]
    return sql


def test_readme_sql_names_models_and_takes_the_latest_by_time(store_with_a_run):
    """The model column names the model the runs were started with, never a checkpoint directory; "latest" is the
    evaluation finished last, not the largest hash."""
    from si_bench import store

    named = store.query(store_with_a_run, example("AS model"))
    assert set(named.model) <= set(store.query(store_with_a_run, "SELECT model FROM runs").model)
    latest = store.query(store_with_a_run, "SELECT eval_id FROM evaluations ORDER BY finished_at DESC LIMIT 1")
    expected = store.query(store_with_a_run, "SELECT name, value FROM metrics WHERE eval_id = ? ORDER BY name",
                           [latest.eval_id[0]])
    measures = store.query(store_with_a_run, example("ORDER BY finished_at DESC LIMIT 1) ORDER BY name"))
    assert measures[["name", "value"]].values.tolist() == expected.values.tolist()

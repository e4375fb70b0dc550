"""Hostile input beyond single flags: SQL that would write, damaged stores and model directories, a full
disk mid-work, names that would inject into terminals, and work or values without bounds."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from conftest import run_cli, table_rows
from synth_store import make_run

from si_bench import store
from si_bench.cli import main


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The real entry point, in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["si-bench", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    return stop.value.code, out.out, out.err


def one_error(code: int, err: str, fragment: str, expected_code: int = 2) -> None:
    assert code == expected_code and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and fragment in err, err


@pytest.fixture
def stores(tmp_path):
    mine, other = tmp_path / "si.duckdb", tmp_path / "other.duckdb"
    make_run(str(mine), "run-1", ts=(0, 1), P=3, n_boot=10)
    make_run(str(other), "run-2", ts=(0, 1), P=3, n_boot=10)
    os.link(mine, tmp_path / "me.duckdb")  # the store itself under another name
    return mine, other


HOSTILE_SQL = [
    ("SELECT 1; DELETE FROM runs", "exactly one SQL statement"),
    ("ATTACH '{other}' AS o (READ_WRITE)", "only SELECT"),
    ("ATTACH '{me}' AS me (READ_WRITE)", "only SELECT"),
    ("DELETE FROM runs", "only SELECT"),
    ("COPY (SELECT 1) TO '{dir}/out.csv'", "only SELECT"),
    ("EXPORT DATABASE '{dir}/export'", "only SELECT"),
    ("SET threads = 1", "only SELECT"),
    ("CHECKPOINT", "only SELECT"),
    ("VACUUM", "only SELECT"),
    ("CREATE TABLE x AS SELECT 1", "only SELECT"),
    ("SELECT * FROM read_csv('{other}')", "file system operations are disabled"),
    ("SELECT * FROM '{other}'", "disabled"),
    ("", "exactly one SQL statement"),
]


@pytest.mark.parametrize("query, fragment", HOSTILE_SQL)
def test_sql_cannot_write_or_reach_outside(query, fragment, stores, tmp_path, monkeypatch, capsys):
    mine, other = stores
    query = query.format(other=other, me=tmp_path / "me.duckdb", dir=tmp_path)
    before = {db: table_rows(str(db), "runs", "run_id") for db in (mine, other)}
    code, _, err = cli(monkeypatch, capsys, "sql", query, "--db", str(mine))
    one_error(code, err, fragment)
    assert {db: table_rows(str(db), "runs", "run_id") for db in (mine, other)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.duckdb", "other.duckdb", "si.duckdb"]


def test_sql_lists_come_back_as_json(stores, monkeypatch, capsys):
    code, out, _ = cli(monkeypatch, capsys, "sql", "SELECT [1, 2] AS l", "--db", str(stores[0]), "-f", "json")
    assert code == 0 and json.loads(out) == [{"l": [1, 2]}]


def test_a_damaged_store_is_one_error_before_any_work(stores, tmp_path, monkeypatch, capsys):
    mine, _ = stores
    damaged = tmp_path / "damaged.duckdb"
    shutil.copy(mine, damaged)
    with open(damaged, "r+b") as handle:
        handle.truncate(os.path.getsize(damaged) // 2)
    for args in (["fit", "--db", str(damaged)], ["leaderboard", "--db", str(damaged), "--out", str(tmp_path / "b")],
                 ["import", str(damaged), "--db", str(tmp_path / "new.duckdb")],
                 ["evaluate", "--model", "tiny-test", "--limit", "1", "--samples", "1", "--db", str(damaged)]):
        code, _, err = cli(monkeypatch, capsys, *args)
        one_error(code, err, "is damaged")
    assert not (tmp_path / "new.duckdb").exists()


@pytest.mark.parametrize("content, fragment", [({"config.json": "{}"}, "holds no weight files"),
                                                ({"config.json": "{not json", "model.safetensors": "x"},
                                                 "not readable JSON")])
def test_a_broken_model_directory_is_refused(content, fragment, tmp_path, monkeypatch, capsys):
    model = tmp_path / "model"
    model.mkdir()
    for name, text in content.items():
        (model / name).write_text(text)
    code, _, err = cli(monkeypatch, capsys, "evaluate", "--model", str(model), "--db", str(tmp_path / "si.duckdb"))
    one_error(code, err, fragment)
    assert not (tmp_path / "si.duckdb").exists()


def test_vllm_backend_without_vllm(tmp_path, tiny_model, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "evaluate", "--model", "tiny-test", "--backend", "vllm", "--db",
                       str(tmp_path / "si.duckdb"))
    one_error(code, err, "needs the package 'vllm'")


def test_a_full_disk_mid_evaluation_is_one_line_and_resumes(tmp_path, tiny_model):
    args = ["evaluate", "--model", "tiny-test", "--limit", "4", "--samples", "1", "--max-new-tokens", "4",
            "--n-boot", "10", "--chunk-prompts", "2", "--db", str(tmp_path / "si.duckdb")]
    full = run_cli(*args, env={"SI_BENCH_FAIL_AT": "sample_chunk:1:enospc"})
    one_error(full.returncode, full.stderr, "No space left on device", expected_code=1)
    assert "run the same command again" in full.stderr
    assert len(table_rows(str(tmp_path / "si.duckdb"), "samples", "prompt_id")) == 2  # the first chunk is kept
    run_cli(*args, check=True)
    assert len(table_rows(str(tmp_path / "si.duckdb"), "samples", "prompt_id")) == 4


def test_a_full_disk_while_saving_a_checkpoint(tmp_path, tiny_model):
    args = ["run", "--model", "tiny-test", "--rounds", "1", "--samples", "1", "--train-prompts", "2", "--test-limit",
            "2", "--max-new-tokens", "4", "--n-boot", "10", "--train-batch-size", "2", "--db",
            str(tmp_path / "si.duckdb"), "--workdir", str(tmp_path / "runs")]
    full = run_cli(*args, env={"SI_BENCH_FAIL_AT": "checkpoint_save:1:enospc"})
    one_error(full.returncode, full.stderr, "No space left on device", expected_code=1)
    assert not list((tmp_path / "runs").glob("*/step-*")) and not list((tmp_path / "runs").glob("*/.step-*"))
    run_cli(*args, check=True)
    assert store.query(str(tmp_path / "si.duckdb"), "SELECT status FROM runs").status[0] == "done"


def test_names_cannot_reach_the_terminal_raw(tmp_path, monkeypatch, capsys):
    db = tmp_path / "si.duckdb"
    make_run(str(db), "evil\x1b[2J\nrun", model="m\x1b]0;owned\x07\nx", ts=(0, 1), P=3, n_boot=10)
    code, out, _ = cli(monkeypatch, capsys, "runs", "--db", str(db))
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert len(out.strip().splitlines()) == 3  # header, rule, one row: the newline did not break the table


def test_simulate_bounds(monkeypatch, capsys):
    base = ["simulate", "--beta", "0.3", "--k", "0.8", "--b", "0.1", "--us0", "1.2", "--uv0", "0.8"]
    one_error(*cli(monkeypatch, capsys, *base, "--alpha", "0.9", "--rounds", "1000000000")[::2], "--rounds")
    one_error(*cli(monkeypatch, capsys, *base, "--alpha", "1e300", "--k", "1e300")[::2], "--alpha must lie in")

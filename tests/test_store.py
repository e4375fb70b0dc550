"""Store schema: a database made by the previous schema version migrates and keeps its rows; the write path."""

from __future__ import annotations

import importlib.util
import sys
import time
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from si_bench import store
from si_bench.errors import SIBenchError

ROOT = Path(__file__).resolve().parents[1]


def make_v1(path: str) -> None:
    con = duckdb.connect(path)
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    con.execute(store.MIGRATIONS[0])
    con.execute("INSERT INTO schema_version VALUES (1, now())")
    con.execute("INSERT INTO runs (run_id, model, status, rounds_done) VALUES ('old-run', 'm', 'done', 3)")
    con.close()


def test_previous_version_migrates_and_keeps_rows(tmp_path):
    db = str(tmp_path / "v1.duckdb")
    make_v1(db)
    with store.write(db) as con:
        versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
        assert versions == list(range(1, store.SCHEMA_VERSION + 1))
        assert con.execute("SELECT run_id, steps_done, external_used FROM runs").fetchall() == [("old-run", 3, 0)]
        con.execute("INSERT INTO training_data (run_id, step, prompt_id, source) VALUES ('old-run', 1, 'p', 'self')")
    frame = store.query(db, "SELECT * FROM summary")
    assert "gap_per_token" in frame.columns


def test_migrations_are_idempotent(tmp_path):
    db = str(tmp_path / "si.duckdb")
    for _ in range(2):
        with store.write(db):
            pass
    assert store.query(db, "SELECT count(*) AS n FROM schema_version").n[0] == store.SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    db = str(tmp_path / "future.duckdb")
    with store.write(db) as con:
        con.execute("INSERT INTO schema_version VALUES (?, now())", [store.SCHEMA_VERSION + 1])
    with pytest.raises(SIBenchError, match="newer"):
        with store.write(db):
            pass


def test_upsert_keeps_the_schema_types_json_cells_and_the_last_of_a_key(tmp_path):
    db = str(tmp_path / "si.duckdb")
    with store.write(db) as con:
        store.upsert(con, "checkpoints", [
            {"checkpoint_id": "a", "run_id": "r", "step": 1, "created_at": "2026-01-02 03:04:05",
             "hyperparameters": {"b": [1, 2], "a": None}},
            {"checkpoint_id": "b", "run_id": None, "step": None, "created_at": datetime(2026, 1, 3),
             "hyperparameters": [1.5, "x"]},
        ])
        store.upsert(con, "picks", [{"eval_id": "e", "prompt_id": 7, "sample_idx": None, "score": float("nan")},
                                    {"eval_id": "e", "prompt_id": 7, "sample_idx": 2, "score": 0.5}])
    with store.write(db) as con:  # a rerun with fewer columns replaces those columns only, beside a new key
        store.upsert(con, "checkpoints", [{"checkpoint_id": "a", "step": 2}, {"checkpoint_id": "c", "step": 5}])
    assert table(db, "checkpoints", "checkpoint_id, run_id, step, created_at, hyperparameters") == [
        ("a", "r", 2, datetime(2026, 1, 2, 3, 4, 5), '{"a": null, "b": [1, 2]}'),
        ("b", None, None, datetime(2026, 1, 3), '[1.5, "x"]'),
        ("c", None, 5, None, None),
    ]
    assert table(db, "picks", "prompt_id, sample_idx, score") == [("7", 2, 0.5)]  # the later of one key wins


def test_a_failed_write_leaves_nothing_half_written(tmp_path):
    db = str(tmp_path / "si.duckdb")
    rows = [{"gen_id": "g", "prompt_id": f"p{i}", "sample_idx": 0, "nll": 1.0} for i in range(1000)]
    with pytest.raises(duckdb.ConversionException):
        with store.write(db) as con:
            store.upsert(con, "samples", rows[:500])
            store.upsert(con, "samples", [*rows[500:700], {**rows[700], "nll": "not a number"}, *rows[701:]])
    assert table(db, "samples", "prompt_id") == []
    with pytest.raises(duckdb.ConversionException):  # a column all of one wrong type: the columnar batch fails
        with store.write(db) as con:
            store.upsert(con, "samples", rows[:500])
            store.upsert(con, "samples", [{**row, "nll": "not a number"} for row in rows[500:]])
    assert table(db, "samples", "prompt_id") == []


def test_the_store_benchmark_runs_at_its_tiny_size(tmp_path, capsys, monkeypatch):
    """bench/bench_store.py end to end on a tiny store, each command in this process."""
    from si_bench.cli import app

    spec = importlib.util.spec_from_file_location("bench_store", ROOT / "bench" / "bench_store.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)

    def in_process(args):
        started = time.perf_counter()
        app(args, standalone_mode=False)
        return time.perf_counter() - started, None, None

    report = bench.main(["--tiny", "--dir", str(tmp_path)], run=in_process)
    scale = bench.TINY
    [write] = [r for r in report.rows if r.what.startswith("write")]
    assert write.rows == 2 * scale.runs * scale.steps * scale.prompts * scale.samples  # samples and verdicts
    assert bench.counts(tmp_path / "bench.duckdb")["samples"] == (
        write.rows // 2 + scale.evaluate_prompts * scale.samples)
    assert {r.what.split(" ")[0] for r in report.rows} >= {"sql:", "runs", "summary:", "fit", "leaderboard",
                                                           "check_intact", "import", "evaluate"}
    assert "rows/s" in capsys.readouterr().out


def table(db: str, name: str, columns: str) -> list[tuple]:
    with store.read(db) as con:
        return con.execute(f"SELECT {columns} FROM {name} ORDER BY ALL").fetchall()


def test_runs_show_running_only_while_a_process_holds_the_run(tmp_path):
    """A run left `running` in the store (a train-round finished, or a process killed) is stopped unless a process
    holds it now."""
    from synth_store import make_run

    from si_bench import locks

    db = str(tmp_path / "si.duckdb")
    make_run(db, "run-1", ts=(0, 1), P=3, n_boot=5)
    make_run(db, "run-2", ts=(0, 1), P=3, n_boot=5, seed=1)
    with store.write(db) as con:
        con.execute("UPDATE runs SET status = 'running'")
    assert statuses(db) == {"run-1": "stopped", "run-2": "stopped"}
    with locks.run_lock(db, "run-2"):
        assert statuses(db) == {"run-1": "stopped", "run-2": "running"}
    with store.write(db) as con:
        con.execute("UPDATE runs SET status = 'done' WHERE run_id = 'run-1'")
    assert statuses(db) == {"run-1": "done", "run-2": "stopped"}


def statuses(db: str) -> dict[str, str]:
    frame = store.runs_frame(db)
    return dict(zip(frame.run_id, frame.status, strict=True))

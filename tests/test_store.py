"""Store schema: a database made by the previous schema version migrates and keeps its rows."""

from __future__ import annotations

import duckdb
import pytest

from si_bench import store
from si_bench.errors import SIBenchError


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

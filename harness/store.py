"""DuckDB store: schema, migrations, short write transactions, read-only queries.

One process holding the file read-write locks out every other process, so writers open the
file, write one transaction and close it again; readers retry briefly while a writer holds it.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb

from si_bench.errors import SIBenchError

DEFAULT_DB = "si-bench.duckdb"
LOCK_RETRY_SECONDS = float(os.environ.get("SI_BENCH_LOCK_RETRY", "10"))

# Ordered, idempotent migrations; SCHEMA_VERSION is the number of entries.
MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, model VARCHAR, backend VARCHAR, dataset VARCHAR,
        mode VARCHAR, verifier VARCHAR, seed INTEGER, config JSON, config_hash VARCHAR,
        status VARCHAR, rounds_done INTEGER, git_commit VARCHAR, versions JSON,
        created_at TIMESTAMP, updated_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS checkpoints (
        checkpoint_id VARCHAR PRIMARY KEY, run_id VARCHAR, round INTEGER, t DOUBLE, t_unit VARCHAR,
        parent_id VARCHAR, model_spec VARCHAR, path VARCHAR, weights_hash VARCHAR,
        data_hash VARCHAR, hyperparameters JSON, created_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS prompts (
        dataset VARCHAR, split VARCHAR, prompt_id VARCHAR, question VARCHAR, reference VARCHAR,
        answer VARCHAR, meta JSON, PRIMARY KEY (dataset, split, prompt_id));
    CREATE TABLE IF NOT EXISTS generations (
        gen_id VARCHAR PRIMARY KEY, checkpoint_id VARCHAR, model VARCHAR,
        backend VARCHAR, dataset VARCHAR, split VARCHAR, n_prompts INTEGER, n_samples INTEGER,
        settings JSON, created_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS run_evals (
        run_id VARCHAR, eval_id VARCHAR, round INTEGER, t DOUBLE, t_unit VARCHAR, role VARCHAR,
        PRIMARY KEY (run_id, eval_id));
    CREATE TABLE IF NOT EXISTS samples (
        gen_id VARCHAR, prompt_id VARCHAR, sample_idx INTEGER, text VARCHAR, answer VARCHAR,
        correct BOOLEAN, nll DOUBLE, n_tokens INTEGER, PRIMARY KEY (gen_id, prompt_id, sample_idx));
    CREATE TABLE IF NOT EXISTS verdicts (
        gen_id VARCHAR, verifier_key VARCHAR, prompt_id VARCHAR, sample_idx INTEGER,
        score DOUBLE, raw JSON, PRIMARY KEY (gen_id, verifier_key, prompt_id, sample_idx));
    CREATE TABLE IF NOT EXISTS evaluations (
        eval_id VARCHAR PRIMARY KEY, gen_id VARCHAR, verifier VARCHAR, verifier_key VARCHAR,
        sigma DOUBLE, settings JSON, status VARCHAR, timings JSON,
        created_at TIMESTAMP, finished_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS picks (
        eval_id VARCHAR, prompt_id VARCHAR, sample_idx INTEGER, source VARCHAR, reason VARCHAR,
        score DOUBLE, PRIMARY KEY (eval_id, prompt_id));
    CREATE TABLE IF NOT EXISTS metrics (
        eval_id VARCHAR, name VARCHAR, value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, n INTEGER,
        reason VARCHAR, PRIMARY KEY (eval_id, name));
    CREATE TABLE IF NOT EXISTS fits (
        fit_key VARCHAR, run_id VARCHAR, dataset VARCHAR, split VARCHAR, verifier VARCHAR,
        unit VARCHAR, law VARCHAR, quantity VARCHAR, estimate DOUBLE, ci_low DOUBLE, ci_high DOUBLE,
        reason VARCHAR, r2 DOUBLE, details JSON, fitted_at TIMESTAMP,
        PRIMARY KEY (fit_key, law, quantity));
    """,
    # 2: self-improvement rounds: what each round trained on, and where it came from.
    """
    CREATE TABLE IF NOT EXISTS training_data (
        run_id VARCHAR, round INTEGER, prompt_id VARCHAR, source VARCHAR, eval_id VARCHAR,
        sample_idx INTEGER, score DOUBLE, completion VARCHAR, PRIMARY KEY (run_id, round, prompt_id));
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS external_used INTEGER DEFAULT 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# Views are recreated on every open so that they always match the code.
SUMMARY_VIEW = """
CREATE OR REPLACE VIEW summary AS
SELECT e.eval_id, g.gen_id, r.run_id, r.round, r.t, r.t_unit, r.role, g.model, g.backend, g.dataset, g.split,
       e.verifier, e.sigma, g.n_prompts, g.n_samples,
       {cols},
       e.status, e.created_at, e.finished_at
FROM evaluations e JOIN generations g USING (gen_id) LEFT JOIN run_evals r USING (eval_id)
"""
SUMMARY_MEASURES = {
    "solver_acc": "solver_acc", "verifier_acc": "verifier_acc", "U_s": "solver_nll",
    "U_v": "verifier_nll", "gap": "gap", "U_s_per_token": "solver_nll_per_token",
    "U_v_per_token": "verifier_nll_per_token", "gap_per_token": "gap_per_token",
    "auroc": "auroc", "rel_gap": "relative_gap", "fallback_rate": "fallback_rate",
}


def _summary_sql() -> str:
    cols = []
    for column, metric in SUMMARY_MEASURES.items():
        for field, suffix in (("value", ""), ("ci_low", "_lo"), ("ci_high", "_hi")):
            cols.append(
                f"(SELECT m.{field} FROM metrics m WHERE m.eval_id = e.eval_id AND m.name = '{metric}')"
                f" AS {column}{suffix}"
            )
    return SUMMARY_VIEW.format(cols=",\n       ".join(cols))


def _connect(path: str | Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    path = Path(path)
    if read_only and not path.exists():
        raise SIBenchError(f"no database at {path}")
    if not read_only:
        if path.exists() and not _writable(path):
            raise SIBenchError(f"database {path} is not writable")
        if not path.parent.exists() or not _writable(path.parent):
            raise SIBenchError(f"cannot create database {path}: {path.parent} is not a writable directory")
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise SIBenchError(f"cannot open database {path}: {str(exc).splitlines()[0]}") from None
            if time.monotonic() > deadline:
                raise SIBenchError(
                    f"database {path} is held by another process (tried for {LOCK_RETRY_SECONDS:.0f} s)"
                ) from None
            time.sleep(0.2)


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK)


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise SIBenchError(f"database schema v{current} is newer than this si-bench (v{SCHEMA_VERSION}); upgrade si-bench")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        con.execute("BEGIN")
        con.execute(MIGRATIONS[version - 1])
        con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
        con.execute("COMMIT")
    con.execute(_summary_sql())


@contextmanager
def write(path: str | Path = DEFAULT_DB) -> Iterator[duckdb.DuckDBPyConnection]:
    """One short write transaction: open, migrate, write, commit, close. Nothing partial on error."""
    con = _connect(path, read_only=False)
    try:
        migrate(con)
        con.execute("BEGIN")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()


@contextmanager
def read(path: str | Path = DEFAULT_DB) -> Iterator[duckdb.DuckDBPyConnection]:
    con = _connect(path, read_only=True)
    try:
        yield con
    finally:
        con.close()


def upsert(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, replacing those with the same primary key: reruns write no duplicates."""
    if not rows:
        return
    columns = list(rows[0])
    values = [[_cell(row[c]) for c in columns] for row in rows]
    placeholders = ", ".join("?" for _ in columns)
    con.executemany(
        f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", values
    )


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def query(path: str | Path, sql: str, params: Sequence[Any] | None = None):
    """Run one SQL statement read-only and return a pandas DataFrame."""
    with read(path) as con:
        try:
            return con.execute(sql, params or []).df()
        except duckdb.Error as exc:
            raise SIBenchError(f"SQL error: {str(exc).splitlines()[0]}") from None

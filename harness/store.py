"""DuckDB store: schema, migrations, short write transactions, read-only queries.

One process holding the file read-write locks out every other process, so writers open the
file, write one transaction and close it again; readers retry briefly while a writer holds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb

from si_bench import faults, locks
from si_bench.errors import RESUMES, EnvironmentFailure, SIBenchError, environment_reason
from si_bench.options import Options, option

DEFAULT_DB = "si-bench.duckdb"


def lock_retry_seconds() -> float:
    """How long a connection waits for a store another process holds (read per connection, as faults are)."""
    return float(os.environ.get("SI_BENCH_LOCK_RETRY", "10"))


@dataclass
class StoreOptions(Options):
    """The store every command reads or writes."""

    db: str = option(DEFAULT_DB, "The si-bench DuckDB store.", output="file")


@dataclass
class SqlStatement(Options):
    query: str = option(help="One SQL statement, e.g. SELECT * FROM summary.", argument=True)
    time_limit: float = option(30.0, "Seconds the query may run before it is stopped.", above=0, max=3600)
    memory_limit: float = option(1.0, "Gigabytes of memory the query may use (it never spills to disk).", min=0.1,
                                 max=1024)
    max_rows: int = option(1000, "Rows printed at most; a note says when the result has more.", min=1,
                           max=1_000_000)


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
    # 3: one name per quantity, steps named steps, and a run's evaluations keyed by step (two steps with
    # identical weights share an evaluation but stay two points of the trajectory).
    """
    DROP VIEW IF EXISTS summary;
    CREATE TABLE metrics_v3 AS SELECT eval_id, CASE name {renames} ELSE name END AS name, value, ci_low, ci_high,
        n, reason FROM metrics;
    DROP TABLE metrics;
    CREATE TABLE metrics (
        eval_id VARCHAR, name VARCHAR, value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, n INTEGER,
        reason VARCHAR, PRIMARY KEY (eval_id, name));
    INSERT INTO metrics SELECT * FROM metrics_v3;
    DROP TABLE metrics_v3;
    ALTER TABLE checkpoints RENAME COLUMN round TO step;
    ALTER TABLE runs RENAME COLUMN rounds_done TO steps_done;
    CREATE TABLE run_evals_v3 (
        run_id VARCHAR, eval_id VARCHAR, step INTEGER, t DOUBLE, t_unit VARCHAR, role VARCHAR,
        PRIMARY KEY (run_id, step, eval_id));
    INSERT INTO run_evals_v3 SELECT run_id, eval_id, round, t, t_unit, role FROM run_evals;
    DROP TABLE run_evals;
    ALTER TABLE run_evals_v3 RENAME TO run_evals;
    CREATE TABLE training_data_v3 (
        run_id VARCHAR, step INTEGER, prompt_id VARCHAR, source VARCHAR, eval_id VARCHAR,
        sample_idx INTEGER, score DOUBLE, completion VARCHAR, PRIMARY KEY (run_id, step, prompt_id));
    INSERT INTO training_data_v3 SELECT * FROM training_data;
    DROP TABLE training_data;
    ALTER TABLE training_data_v3 RENAME TO training_data;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# Metric names before schema v3 -> the one name each quantity has now.
RENAMED_METRICS = {
    "solver_acc": "solver_accuracy", "verifier_acc": "verifier_accuracy", "solver_nll": "solver_uncertainty",
    "verifier_nll": "verifier_uncertainty", "solver_nll_per_token": "solver_uncertainty_per_token",
    "verifier_nll_per_token": "verifier_uncertainty_per_token", "solver_len": "solver_length",
    "verifier_len": "verifier_length",
}
MIGRATIONS[2] = MIGRATIONS[2].format(renames=" ".join(f"WHEN '{a}' THEN '{b}'" for a, b in RENAMED_METRICS.items()))

# The `summary` view, recreated on every open so that it always matches the code: one row per evaluation
# (and run step), the headline measures with their CIs.
SUMMARY_MEASURES = ("solver_accuracy", "verifier_accuracy", "solver_uncertainty", "verifier_uncertainty", "gap",
                    "solver_uncertainty_per_token", "verifier_uncertainty_per_token", "gap_per_token", "auroc",
                    "relative_gap", "fallback_rate")
# Names the view had before schema v3, kept as aliases for one release.
SUMMARY_ALIASES = {"solver_acc": "solver_accuracy", "verifier_acc": "verifier_accuracy", "U_s": "solver_uncertainty",
                   "U_v": "verifier_uncertainty", "U_s_per_token": "solver_uncertainty_per_token",
                   "U_v_per_token": "verifier_uncertainty_per_token", "rel_gap": "relative_gap"}
CI_SUFFIXES = (("value", ""), ("ci_low", "_lo"), ("ci_high", "_hi"))


def _summary_sql() -> str:
    pivot = ",\n           ".join(f"max({field}) FILTER (WHERE name = '{m}') AS {m}{suffix}"
                                  for m in SUMMARY_MEASURES for field, suffix in CI_SUFFIXES)
    measures = ", ".join(f"m.{m}{suffix}" for m in SUMMARY_MEASURES for _, suffix in CI_SUFFIXES)
    aliases = ", ".join(f"m.{new}{suffix} AS {old}{suffix}" for old, new in SUMMARY_ALIASES.items()
                        for _, suffix in CI_SUFFIXES)
    return f"""
    CREATE OR REPLACE VIEW summary AS
    WITH m AS (
        SELECT eval_id,
           {pivot}
        FROM metrics GROUP BY eval_id)
    SELECT e.eval_id, g.gen_id, r.run_id, r.step, r.t, r.t_unit, r.role, g.model, g.backend, g.dataset, g.split,
           e.verifier, e.sigma, g.n_prompts, g.n_samples, {measures},
           e.status, e.created_at, e.finished_at,
           r.step AS round, {aliases}
    FROM evaluations e JOIN generations g USING (gen_id) LEFT JOIN run_evals r USING (eval_id)
    LEFT JOIN m USING (eval_id)"""



# `si-bench sql`: a connection that can neither write, nor reach files or other databases, nor unlock that.
LOCKED = {"enable_external_access": False, "lock_configuration": True}
# ... and, for a user's query, bounded: no spilling to a temporary folder, then no file system at all once the
# store is open (external access off still lets read_blob and read_text read the store's own file).
USER_LIMITS = {"enable_external_access": False, "temp_directory": ""}
SEALED = ("SET disabled_filesystems = 'LocalFileSystem'", "SET lock_configuration = true")
USER_STATEMENTS = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)


def _connect(path: str | Path, read_only: bool, config: dict | None = None) -> duckdb.DuckDBPyConnection:
    path = Path(path)
    if read_only and not path.exists():
        raise SIBenchError(f"no database at {path}")
    if not read_only:
        check_writable(path)
    retry = lock_retry_seconds()
    deadline = time.monotonic() + retry
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config or {})
        except duckdb.Error as exc:
            if not isinstance(exc, duckdb.IOException) or "lock" not in str(exc).lower():
                why = f"cannot open database {path}: {str(exc).splitlines()[0]}"
                if environment_reason(exc):  # the machine, not the input: a permission lost mid-work, a full disk
                    raise EnvironmentFailure(f"{why}; {RESUMES}") from None
                raise SIBenchError(why) from None
            if time.monotonic() > deadline:
                raise EnvironmentFailure(
                    f"database {path} is held by another process (tried for {retry:.0f} s); {RESUMES} "
                    "once it is free") from None
            time.sleep(0.2)


def check_writable(path: str | Path) -> None:
    """The store can be written (or created): checked before any work that would end in writing it."""
    path = Path(path)
    if path.exists() and not _writable(path):
        raise SIBenchError(f"database {path} is not writable")
    if not path.parent.exists() or not _writable(path.parent):
        raise SIBenchError(f"cannot create database {path}: {path.parent} is not a writable directory")


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE "
                                        "database_name = current_database()").fetchall()}
    if tables and "schema_version" not in tables:
        raise SIBenchError("the database is not an si-bench store (it has tables but no schema_version); "
                           "it was not changed: give another --db")
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
    current = fetch_one(con, "SELECT coalesce(max(version), 0) FROM schema_version")[0]
    if current > SCHEMA_VERSION:
        raise SIBenchError(f"database schema v{current} is newer than this si-bench (v{SCHEMA_VERSION}); "
                           "upgrade si-bench")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        con.execute("BEGIN")
        con.execute(MIGRATIONS[version - 1])
        con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
        con.execute("COMMIT")
    _refresh_summary(con)


def _refresh_summary(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the summary view when the code's differs from the store's (its comment is the SQL's hash):
    recreating it on every short write transaction would cost most of the transaction."""
    sql = _summary_sql()
    digest = hashlib.sha256(sql.encode()).hexdigest()[:16]
    stored = con.execute("SELECT comment FROM duckdb_views() WHERE view_name = 'summary' "
                         "AND database_name = current_database()").fetchall()
    if stored != [(digest,)]:
        con.execute(sql)
        con.execute(f"COMMENT ON VIEW summary IS '{digest}'")


# A writer's commit larger than this goes straight into the database file (DuckDB's checkpoint, atomic: a process
# killed during it leaves the store as it was) instead of into the write-ahead log first and the file on close:
# a 80,000-sample batch is then written once, not twice. Smaller commits go through the log as before.
WRITER = {"checkpoint_threshold": "1MB"}


@contextmanager
def write(path: str | Path = DEFAULT_DB) -> Iterator[duckdb.DuckDBPyConnection]:
    """One short write transaction: open, migrate, write, commit, close. Nothing partial on error."""
    con = _connect(path, read_only=False, config=WRITER)
    try:
        migrate(con)
        con.execute("BEGIN")
        try:
            yield con
            faults.point("store_commit")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()


@contextmanager
def read(path: str | Path = DEFAULT_DB, *, upgrade: bool = True,
         config: dict | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection (with DuckDB `config`); a store of an older schema is migrated first
    (upgrade=False leaves it as it is, for a store that must not be written, such as an import's source)."""
    if upgrade:
        _upgrade(path)
    con = _connect(path, read_only=True, config=config)
    try:
        yield con
    finally:
        con.close()


_CURRENT: set[tuple[str, int]] = set()  # (path, inode) of stores this process knows to be at SCHEMA_VERSION


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> tuple[Any, ...]:
    """The one row of a query that always returns one (an aggregate, or a key known to exist)."""
    row = con.execute(sql, params).fetchone()
    if row is None:
        raise SIBenchError(f"no row from: {sql}")
    return row


def schema_version(path: str | Path) -> int | None:
    """The schema version of an existing store, read without changing it; None for a DuckDB file that is not
    an si-bench store."""
    con = _connect(path, read_only=True)
    try:
        tables = fetch_one(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' AND "
                                "database_name = current_database()")[0]
        return fetch_one(con, "SELECT coalesce(max(version), 0) FROM schema_version")[0] if tables else None
    finally:
        con.close()


def _upgrade(path: str | Path) -> None:
    """Migrate an existing store of an older schema, once per process and file."""
    path = Path(path)
    if not path.exists():
        return
    key = (str(path.resolve()), path.stat().st_ino)
    if key in _CURRENT:
        return
    version = schema_version(path)
    if version is not None and version < SCHEMA_VERSION:
        with write(path):
            pass
    _CURRENT.add(key)


def upsert(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, replacing those with the same primary key: reruns write no duplicates, and of two rows with
    one key in `rows` the later wins. The rows go to DuckDB as one columnar batch (an Arrow table), inserted in
    one statement: a plain INSERT when none of their keys is stored yet (the common case, and DuckDB's fast one),
    else INSERT OR REPLACE. Dicts and lists are JSON text; every value converts to the column's type as an
    executemany parameter would: a column whose values are of more than one Python type goes through DuckDB's
    upsert appender instead, which converts value by value."""
    if not rows:
        return
    columns = list(rows[0])
    con.complete()  # a caller's unread result (execute(...).fetchone()) ends first, as executemany ended it
    key = primary_key(con, table)
    cells = _columns(rows, columns)
    if len(rows) >= BULK_ROWS:
        con.execute("SET max_vacuum_tasks = 0")
    batch = _arrow(cells)
    if batch is None:
        appender = con.appender(table, columns=columns, action="upsert")
        appender.append_rows(zip(*_columns(_last_per_key(rows, key), columns).values(), strict=True))
        appender.flush()
        return
    con.register(_BATCH, batch)
    [(repeated, stored)] = con.execute(_PROBE.format(batch=_BATCH, table=table, key=_names(key))).fetchall()
    if not repeated:
        verb = "INSERT OR REPLACE" if stored else "INSERT"
        con.execute(f'{verb} INTO "{table}" ({_names(columns)}) SELECT * FROM {_BATCH}')
    con.unregister(_BATCH)  # not on an error: DuckDB then allows nothing but the rollback, which the caller does
    if repeated:  # rare: the batch holds a key twice, and a batch insert would keep the first
        upsert(con, table, _last_per_key(rows, key))


_BATCH = "_si_bench_upsert_batch"  # the Arrow batch's name on the writing connection, while it is inserted
# Whether the batch repeats a key, and whether any of its keys is stored already: a semi-join that reads the
# table's key columns only, and of those only the row groups whose key range meets the batch's (together about
# 30 ms for 80,000 rows on a 1.1M-row table).
_PROBE = """SELECT (SELECT count(*) FROM {batch}) > (SELECT count(*) FROM (SELECT DISTINCT {key} FROM {batch})),
                  EXISTS (SELECT 1 FROM {batch} SEMI JOIN "{table}" USING ({key}))"""
# A batch of at least half a row group (DuckDB's are 122,880 rows) makes row groups full enough as they are:
# the checkpoint then does not merge it with its neighbours (DuckDB's vacuum, which rewrote and recompressed
# every third 80,000-row batch with its two predecessors); smaller batches are merged as before.
BULK_ROWS = 61_440


def _arrow(cells: dict[str, list]) -> Any:
    """The columns as an Arrow table, or None where a column mixes Python types (Arrow would convert them
    to one type first, not each as DuckDB would)."""
    import pyarrow as pa

    if any(len(set(map(type, values)) - {type(None)}) > 1 for values in cells.values()):
        return None
    try:
        return pa.table(cells)
    except (pa.ArrowException, OverflowError):
        return None


def _columns(rows: Sequence[dict[str, Any]], columns: list[str]) -> dict[str, list]:
    """Each column's cells, converted (`_cells`), in row order."""
    return {c: _cells(list(map(itemgetter(c), rows))) for c in columns}


def _names(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


_PRIMARY_KEYS: dict[str, tuple[str, ...]] = {}  # table -> its primary key columns (fixed by SCHEMA_VERSION)


def primary_key(con: duckdb.DuckDBPyConnection, table: str) -> tuple[str, ...]:
    """The primary key columns of a table of the current schema."""
    if table not in _PRIMARY_KEYS:
        [(columns,)] = con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() WHERE database_name = current_database() AND "
            "schema_name = 'main' AND table_name = ? AND constraint_type = 'PRIMARY KEY'", [table]).fetchall()
        _PRIMARY_KEYS[table] = tuple(columns)
    return _PRIMARY_KEYS[table]


def _last_per_key(rows: Sequence[dict[str, Any]], key: tuple[str, ...]) -> Sequence[dict[str, Any]]:
    """rows with the last of each primary key only (a batch insert would keep the first)."""
    get = itemgetter(*key)
    latest = {get(row): row for row in rows}
    return rows if len(latest) == len(rows) else list(latest.values())


def _cells(values: list) -> list:
    """One column's values as stored: dicts and lists as JSON text (sorted keys), anything else as it is."""
    if any(issubclass(kind, (dict, list)) for kind in set(map(type, values))):
        return [_cell(value) for value in values]
    return values


_JSON = json.JSONEncoder(sort_keys=True).encode  # json.dumps(value, sort_keys=True), without an encoder per call


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return _JSON(value)
    return value


def check_store(path: str | Path) -> None:
    """Every command's check before it uses a store, readers included: a DuckDB file that is not an si-bench store,
    one of a newer schema, or a damaged one is one clear error, and is left as it was. A store that does not exist
    yet passes (a writer creates it; a reader then says there is none)."""
    if not Path(path).exists():
        return
    version = schema_version(path)
    if version is None:
        raise SIBenchError(f"{path} is a DuckDB database but not an si-bench store (it has no schema_version "
                           "table); it was not changed: give another --db")
    if version > SCHEMA_VERSION:
        raise SIBenchError(f"the store {path} has schema v{version}, newer than this si-bench (v{SCHEMA_VERSION}); "
                           "it was not changed: upgrade si-bench")
    check_intact(path)


def check_intact(path: str | Path) -> None:
    """Read every row of every table once: a truncated or corrupted store is one clear error before any work,
    not a traceback after it. A store that does not exist yet is intact."""
    if not Path(path).exists():
        return
    with read(path, upgrade=False) as con:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()]
        try:
            for table in tables:
                con.execute(f'SELECT count(*), bit_xor(hash(x)) FROM "{table}" x').fetchall()
        except duckdb.Error as exc:
            raise SIBenchError(f"the store {path} is damaged ({str(exc).splitlines()[0]}); it was not changed: "
                               "restore it from a copy, or give another --db") from None


def run_ids(path: str | Path) -> list[str]:
    """The runs a store holds, read without changing it (none in a missing file or a DuckDB file that is not an
    si-bench store)."""
    if not Path(path).exists():
        return []
    with read(path, upgrade=False) as con:
        has_runs = fetch_one(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'runs' AND "
                                  "database_name = current_database()")[0]
        return [row[0] for row in con.execute("SELECT run_id FROM runs").fetchall()] if has_runs else []


def runs_frame(path: str | Path):
    """Runs with model, dataset, mode, progress and status (a DataFrame): done, running while a process holds the
    run (locks.run_holder), else stopped (a train-round finished, or the run was interrupted)."""
    frame = query(path, """
        SELECT run_id, model, dataset, mode, verifier, seed, steps_done,
               CASE mode WHEN 'fixed' THEN steps_done / 2 ELSE steps_done END AS t_done,
               CAST(json_extract(config, '$.rounds') AS INTEGER) AS t_planned,
               CASE mode WHEN 'fixed' THEN 'epoch' ELSE 'round' END AS t_unit, external_used, status, updated_at
        FROM runs ORDER BY created_at""")
    frame["status"] = [run_status(path, run_id, status) for run_id, status in zip(frame.run_id, frame.status,
                                                                                   strict=True)]
    return frame


def run_status(path: str | Path, run_id: str, stored: str | None) -> str | None:
    """A run's status as it is now: the stored `running` holds only while a process holds the run."""
    if stored != "running":
        return stored
    return "running" if locks.run_holder(path, run_id) else "stopped"


def user_query(path: str | Path, sql: str, limits: SqlStatement | None = None):
    """`si-bench sql`: exactly one SELECT or EXPLAIN statement, on a read-only connection that reads no file and
    whose configuration is locked, within the time and memory limits of `limits`; anything else is refused before
    the store is opened. At most `limits.max_rows` rows come back; `frame.attrs["more_rows"]` says whether the
    result had more."""
    try:
        statements = duckdb.connect().extract_statements(sql)
    except duckdb.Error as exc:
        raise SIBenchError(f"SQL error: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise SIBenchError(f"give exactly one SQL statement (got {len(statements)})")
    if statements[0].type not in USER_STATEMENTS:
        raise SIBenchError(f"only SELECT (or EXPLAIN) is allowed, not {statements[0].type.name}: the store is "
                           "read-only here")
    check_store(path)
    limits = limits or SqlStatement(query=sql)
    with read(path, config={**USER_LIMITS, "memory_limit": f"{limits.memory_limit * 1024:.0f}MB"}) as con:
        for statement in SEALED:
            con.execute(statement)
        timer = threading.Timer(limits.time_limit, con.interrupt)
        timer.start()
        try:
            con.execute(sql)
            return _first_rows(con, limits.max_rows)
        except duckdb.Error as exc:
            raise SIBenchError(_limit_hit(exc, limits)) from None
        finally:
            timer.cancel()


def _first_rows(con: duckdb.DuckDBPyConnection, max_rows: int):
    """At most max_rows of a streaming result (a billion-row SELECT is never materialised)."""
    import pandas as pd

    chunks: list[pd.DataFrame] = []
    n = 0
    while n <= max_rows:
        chunk = con.fetch_df_chunk(1)
        if chunk.empty and chunks:
            break
        chunks.append(chunk)
        n += len(chunk)
        if chunk.empty:
            break
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    rows = frame.head(max_rows).reset_index(drop=True)
    rows.attrs["more_rows"] = n > max_rows
    return rows


# A limit a user's query hit -> its one line (anything else is an SQL error as DuckDB words it).
LIMIT_HIT = {
    duckdb.InterruptException: lambda q: f"the query ran past its time limit of {q.time_limit:g} s and was stopped "
                                         "(--time-limit)",
    duckdb.OutOfMemoryException: lambda q: f"the query needs more than its memory limit of {q.memory_limit:g} GB "
                                           "(--memory-limit)",
    duckdb.PermissionException: lambda q: "SQL error: file system operations are disabled: a query reads the "
                                          "store's tables and views, never a file (the store's own included)",
}


def _limit_hit(exc: duckdb.Error, limits: SqlStatement) -> str:
    for kind, message in LIMIT_HIT.items():
        if isinstance(exc, kind):
            return message(limits)
    return f"SQL error: {str(exc).splitlines()[0]}"


def query(path: str | Path, sql: str, params: Sequence[Any] | None = None):
    """Run one SQL statement read-only and return a pandas DataFrame."""
    with read(path) as con:
        try:
            return con.execute(sql, params or []).df()
        except duckdb.Error as exc:
            raise SIBenchError(f"SQL error: {str(exc).splitlines()[0]}") from None

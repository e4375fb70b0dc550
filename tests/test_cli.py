"""Bad input through the command line (its own entry point, in-process; a real process where another one holds
the store): one `error:` line on stderr, a non-zero exit, nothing written."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from si_bench import store
from si_bench.reports.tables import render_frame

EVALUATE = ["evaluate", "--model", "tiny-test", "--limit", "2", "--samples", "1", "--max-new-tokens", "4",
            "--n-boot", "10"]
TABLES = ("prompts", "generations", "samples", "verdicts", "evaluations", "picks", "metrics")


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode not in (0, None), result
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def row_counts(db: str) -> dict[str, int]:
    import duckdb

    with duckdb.connect(db, read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


@pytest.fixture
def seeded_db(tmp_path) -> str:
    """A store with a few rows, NaN and NULL included."""
    path = str(tmp_path / "seeded.duckdb")
    with store.write(path) as con:
        store.upsert(con, "metrics", [
            {"eval_id": "e1", "name": "gap", "value": 0.25, "ci_low": 0.1, "ci_high": 0.4, "n": 32, "reason": None},
            {"eval_id": "e1", "name": "auroc", "value": float("nan"), "ci_low": None, "ci_high": None, "n": 32,
             "reason": "one class only"},
            {"eval_id": "e1", "name": "note, with \"quotes\"", "value": 1.0, "ci_low": None, "ci_high": None,
             "n": 1, "reason": "a,b"},
        ])
    return path


BAD_EVALUATE = [
    (["--model", "no-such-model"], ["unknown model 'no-such-model'"]),
    (["--model", "smollm2-1.7b"], ["unknown model 'smollm2-1.7b'", "tiny-test"]),  # a preset-like name
    (["--dataset", "mmlu"], ["unknown dataset 'mmlu'"]),
    (["--dataset", "math500", "--split", "validation"], ["no split 'validation'"]),
    (["--verifier", "oracle"], ["unknown verifier 'oracle'"]),
    (["--sigma", "1.5"], ["--sigma must lie in [0, 1]"]),
]


def run_many(*calls: list[str]) -> list[subprocess.CompletedProcess]:
    """Independent CLI calls, one after another (in this process, each takes milliseconds)."""
    return [run_cli(*args) for args in calls]


def test_evaluate_rejects_bad_input(tmp_path, tiny_model):
    calls, dbs = [], []
    for i, (args, _) in enumerate(BAD_EVALUATE):
        base = EVALUATE if "--model" not in args else [a for a in EVALUATE if a not in ("--model", "tiny-test")]
        dbs.append(str(tmp_path / f"si-{i}.duckdb"))
        calls.append([*base, *args, "--db", dbs[-1]])
    for (args, fragments), result, db in zip(BAD_EVALUATE, run_many(*calls), dbs, strict=True):
        assert_user_error(result, *fragments)
        assert not os.path.exists(db), args


def test_hub_id_offline_is_a_user_error(db):
    result = run_cli(*EVALUATE[:1], "--model", "some-org/some-model", "--db", db, env={"HF_HUB_OFFLINE": "1"})
    assert_user_error(result, "some-org/some-model")


def test_unwritable_database_path(tmp_path, tiny_model):
    # Tests run as root, where chmod does not stop writes: a path under a regular FILE fails for everyone.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = run_cli(*EVALUATE, "--db", str(blocker / "si.duckdb"))
    assert_user_error(result, "database")
    assert blocker.read_text() == "x"


def test_database_held_by_another_writer(seeded_db, tiny_model):
    before = row_counts(seeded_db)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True);"
         " time.sleep(120)", seeded_db], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = run_cli(*EVALUATE, "--db", seeded_db, env={"SI_BENCH_LOCK_RETRY": "1"})
        assert_user_error(result, "held by another process")
        assert time.monotonic() - started < 30
        read = run_cli("sql", "SELECT * FROM metrics", "--db", seeded_db, env={"SI_BENCH_LOCK_RETRY": "1"})
        assert_user_error(read, "held by another process")
    finally:
        holder.kill()
        holder.wait()
    assert row_counts(seeded_db) == before


def test_sql_errors(tmp_path, seeded_db):
    missing = str(tmp_path / "absent.duckdb")
    before = row_counts(seeded_db)
    results = run_many(
        ["sql", "SELECT 1", "--db", missing],
        ["sql", "SELEC * FROM metrics", "--db", seeded_db],
        ["sql", "SELECT * FROM no_such_table", "--db", seeded_db],
        ["sql", "DELETE FROM metrics", "--db", seeded_db],  # the store is opened read-only
        ["sql", "SELECT 1", "--db", seeded_db, "--format", "xml"],
    )
    fragments = ["no database at", "SQL error", "SQL error", "", "unknown format 'xml'"]
    for result, fragment in zip(results, fragments, strict=True):
        assert_user_error(result, fragment)
    assert not (tmp_path / "absent.duckdb").exists()
    assert row_counts(seeded_db) == before


def _strict_json(text: str):
    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def test_sql_formats(seeded_db):
    query = "SELECT name, value, reason FROM metrics ORDER BY name"
    table, csv, out = run_many(["sql", query, "--db", seeded_db], ["sql", query, "--db", seeded_db, "--format", "csv"],
                               ["sql", query, "--db", seeded_db, "-f", "json"])
    assert (table.returncode, csv.returncode, out.returncode) == (0, 0, 0), (table.stderr, csv.stderr, out.stderr)
    assert table.stderr == ""
    lines = table.stdout.strip().splitlines()
    assert lines[0].split() == ["name", "value", "reason"] and set(lines[1]) <= {"-", " "}
    assert len(lines) == 5 and "0.25" in table.stdout

    import csv as csv_module
    import io

    rows = list(csv_module.reader(io.StringIO(csv.stdout)))
    assert rows[0] == ["name", "value", "reason"] and len(rows) == 4
    assert ["note, with \"quotes\"", "1.0", "a,b"] in rows

    records = _strict_json(out.stdout)
    assert [r["name"] for r in records] == ["auroc", "gap", "note, with \"quotes\""]
    assert records[0]["value"] is None and records[0]["reason"] == "one class only"
    assert math.isclose(records[1]["value"], 0.25) and records[1]["reason"] is None


def test_sql_table_shows_null_for_every_column_type(seeded_db):
    # DuckDB gives pd.NA for a NULL integer or list; the table says NULL for it as for a NULL float or text.
    frame = store.user_query(seeded_db, "SELECT CAST(NULL AS INTEGER) AS i, CAST(NULL AS INTEGER[]) AS l, "
                                        "CAST(NULL AS DOUBLE) AS d, [1, 2] AS full_list")
    lines = render_frame(frame).splitlines()
    assert lines[2].split() == ["NULL", "NULL", "NULL", "[1,", "2]"], lines

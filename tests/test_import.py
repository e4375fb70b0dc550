"""`si-bench import`: merge a store from another machine without duplicates."""

from __future__ import annotations

import shutil

import duckdb
import pytest
from conftest import run_cli
from synth_store import make_run

from si_bench import api, merge, store
from si_bench.errors import SIBenchError

TABLES = ("runs", "prompts", "generations", "evaluations", "run_evals", "samples", "verdicts", "picks", "metrics",
          "checkpoints")


def counts(db) -> dict[str, int]:
    with store.read(db) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    d = tmp_path_factory.mktemp("import-templates")
    here, there = d / "here.duckdb", d / "there.duckdb"
    make_run(here, "run-1", ts=(0, 1, 2), P=6, n_boot=10)
    make_run(there, "run-1", ts=(0, 1, 2), P=6, n_boot=10)  # the same rows on both machines
    make_run(there, "run-2", ts=(0, 1, 2, 3), P=6, n_boot=10, seed=1)
    return here, there


@pytest.fixture
def pair(templates, tmp_path):
    here, there = str(tmp_path / "here.duckdb"), str(tmp_path / "there.duckdb")
    shutil.copy(templates[0], here)
    shutil.copy(templates[1], there)
    return here, there


def test_merge_without_duplicates(pair):
    here, there = pair
    before, other = counts(here), counts(there)
    added = api.import_store(there, here)
    after = counts(here)
    assert after == other  # run-1 was in both: only run-2 came in
    assert added["runs"] == {"added": 1, "updated": 0}
    assert added["samples"]["added"] == other["samples"] - before["samples"] > 0
    assert store.query(here, "SELECT count(*) AS n FROM summary WHERE run_id = 'run-2'").n[0] == 4
    again = api.import_store(there, here)
    assert all(c == {"added": 0, "updated": 0} for c in again.values())
    assert counts(here) == after


def test_newer_rows_replace_older(pair):
    here, there = pair
    with store.write(here) as con:
        con.execute("UPDATE evaluations SET status = 'running', finished_at = NULL WHERE eval_id LIKE 'run-1%e2'")
        con.execute("UPDATE runs SET steps_done = 1, updated_at = updated_at - INTERVAL 1 DAY")
    res = api.import_store(there, here)
    assert res["evaluations"]["updated"] == 1 and res["runs"]["updated"] == 1
    s = store.query(here, "SELECT status FROM evaluations WHERE eval_id LIKE 'run-1%e2'")
    assert list(s.status) == ["done"]
    assert store.query(here, "SELECT steps_done FROM runs WHERE run_id = 'run-1'").steps_done[0] == 2
    # the target's newer copy wins the other way round
    assert api.import_store(here, there)["runs"]["updated"] == 0


def test_a_checkpoint_path_is_no_conflict(pair):
    here, there = pair
    with store.write(here) as con:  # the same run's checkpoints under another directory (another machine)
        con.execute("UPDATE generations SET model = '/elsewhere/' || model")
        con.execute("UPDATE checkpoints SET path = '/elsewhere/' || path")
    added = api.import_store(there, here)
    assert added["generations"]["updated"] == 0 and added["runs"] == {"added": 1, "updated": 0}


def test_into_a_new_store(pair, tmp_path):
    _, there = pair
    fresh = tmp_path / "fresh.duckdb"
    api.import_store(there, fresh)
    assert counts(fresh) == counts(there)


def test_rejects_what_is_not_a_store(pair, tmp_path):
    here, _ = pair
    before = counts(here)
    text = tmp_path / "notes.duckdb"
    text.write_text("hello")
    with pytest.raises(SIBenchError, match="not a (valid )?DuckDB"):
        api.import_store(text, here)
    plain = tmp_path / "plain.duckdb"
    con = duckdb.connect(str(plain))
    con.execute("CREATE TABLE runs (run_id VARCHAR PRIMARY KEY)")
    con.close()
    with pytest.raises(SIBenchError, match="not an si-bench store"):
        api.import_store(plain, here)
    with pytest.raises(SIBenchError, match="no store to import"):
        api.import_store(tmp_path / "missing.duckdb", here)
    with pytest.raises(SIBenchError, match="into itself"):
        api.import_store(here, here)
    assert counts(here) == before  # nothing written on failure


def test_rejects_a_newer_schema(pair, tmp_path):
    here, there = pair
    with store.write(there) as con:
        con.execute("INSERT INTO schema_version VALUES (?, now())", [store.SCHEMA_VERSION + 1])
    with pytest.raises(SIBenchError, match="newer"):
        api.import_store(there, here)


def test_cli_import(pair, tmp_path):
    here, there = pair
    r = run_cli("import", there, "--db", here)
    assert r.returncode == 0, r.stderr
    assert "runs" in r.stdout and "rows added" in r.stdout
    r = run_cli("import", str(tmp_path / "missing.duckdb"), "--db", here)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_float_noise_is_the_same_measurement(pair):
    """Sample NLLs, scores and metrics a few float32 ulps apart (one thread against two, another CPU) are the same
    rows; a difference beyond the tolerance in a row that is not a sample still refuses."""
    here, there = pair
    before = counts(here)
    with store.write(there) as con:
        con.execute(f"UPDATE samples SET nll = nll * (1 + {merge.FLOAT_RTOL / 4})")
        con.execute(f"UPDATE verdicts SET score = score + {merge.FLOAT_ATOL / 2}")
        con.execute(f"UPDATE metrics SET value = value * (1 - {merge.FLOAT_RTOL / 4})")
    result = api.import_store(there, here)
    assert result["samples"]["updated"] == 0 and result.diverged == []
    assert counts(here)["samples"] > before["samples"]  # run-2 came in
    with store.write(there) as con:
        con.execute(f"UPDATE metrics SET value = value * (1 + {merge.FLOAT_RTOL * 10})")
    with pytest.raises(SIBenchError, match="import refused: metrics"):
        api.import_store(there, here)


def _resample(db: str, gen_id: str) -> None:
    """The same generation sampled again elsewhere: other texts (another CPU picked another token) and the
    verdicts, picks and metrics that follow from them."""
    with store.write(db) as con:
        con.execute("UPDATE samples SET text = text || ' (elsewhere)', nll = nll + 0.5 WHERE gen_id = ?", [gen_id])
        con.execute("UPDATE verdicts SET score = 1 - score WHERE gen_id = ?", [gen_id])
        evals = "SELECT eval_id FROM evaluations WHERE gen_id = ?"
        con.execute(f"UPDATE picks SET sample_idx = sample_idx + 1 WHERE eval_id IN ({evals})", [gen_id])
        con.execute(f"UPDATE metrics SET value = value + 1 WHERE eval_id IN ({evals})", [gen_id])


def gen_family(db: str, gen_id: str) -> tuple:
    with duckdb.connect(db, read_only=True) as con:
        evals = [r[0] for r in con.execute("SELECT eval_id FROM evaluations WHERE gen_id = ?", [gen_id]).fetchall()]
        return tuple(con.execute(f"SELECT * EXCLUDE ({key}) FROM {t} WHERE {key} IN (SELECT unnest(?::VARCHAR[])) "
                                 "ORDER BY ALL", [[gen_id] if key == "gen_id" else evals]).fetchall()
                     for t, key in (("samples", "gen_id"), ("verdicts", "gen_id"), ("picks", "eval_id"),
                                    ("metrics", "eval_id")))


def test_a_generation_sampled_twice_is_kept_whole_from_one_side(pair, tmp_path):
    here, there = pair
    gen_id = store.query(here, "SELECT min(gen_id) AS g FROM generations").g[0]
    _resample(there, gen_id)
    ours, theirs = gen_family(here, gen_id), gen_family(there, gen_id)
    copy, cli = str(tmp_path / "copy.duckdb"), str(tmp_path / "cli.duckdb")
    shutil.copy(here, copy)
    shutil.copy(here, cli)
    kept = api.import_store(there, here)  # the default refuses conflicts, but a resampled generation is none
    assert kept.diverged == [gen_id] and kept.kept == "ours"
    assert gen_family(here, gen_id) == ours and kept["runs"] == {"added": 1, "updated": 0}
    taken = api.import_store(there, copy, on_conflict="theirs")
    assert taken.diverged == [gen_id] and taken.kept == "theirs" and gen_family(copy, gen_id) == theirs
    result = run_cli("import", there, "--db", cli)
    assert result.returncode == 0, result.stderr
    assert "1 generation(s) sampled in both stores with different texts: kept ours whole" in result.stdout
    assert f"({gen_id})" in result.stdout

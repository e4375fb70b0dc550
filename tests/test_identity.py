"""Keys that cannot collide: lineage of identical weights, a swapped checkpoint, another --n-boot, import
conflicts, scratch directories of a killed step."""

from __future__ import annotations

import dataclasses
import shutil

import duckdb
import pytest
from conftest import quiet, run_cli, run_process, table_rows
from synth_store import make_run

from si_bench import api, store
from si_bench.errors import SIBenchError
from si_bench.evaluation import evaluate
from si_bench.trainers.config import SelfImproveConfig

TINY = dict(model="tiny-test", dataset="arith", mode="regenerate", samples=2, train_prompts=2, test_limit=2,
            max_new_tokens=16, n_boot=20, train_batch_size=2, chunk_prompts=2, batch_size=8)


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory, tiny_model):
    """Three rounds at learning rate 0: steps 1-3 hold identical weights."""
    folder = tmp_path_factory.mktemp("frozen")
    db = str(folder / "si.duckdb")
    [run_id] = api.run(SelfImproveConfig(**TINY, rounds=3, learning_rate=0.0), db=db, workdir=str(folder / "runs"),
                       log=quiet)
    return db, run_id, folder


def test_identical_weights_keep_their_lineage(frozen_run):
    db, run_id, _ = frozen_run
    ckpts = store.query(db, "SELECT step, checkpoint_id, parent_id, weights_hash FROM checkpoints "
                            "WHERE run_id = ? ORDER BY step", [run_id])
    assert ckpts.step.tolist() == [1, 2, 3]
    assert ckpts.weights_hash.nunique() == 1  # the same weights...
    assert ckpts.checkpoint_id.nunique() == 3  # ...in three checkpoints, each the child of the one before
    base = store.query(db, "SELECT checkpoint_id FROM checkpoints WHERE run_id IS NULL").checkpoint_id.tolist()
    assert ckpts.parent_id.tolist() == [*base, *ckpts.checkpoint_id[:2]]
    assert not (ckpts.parent_id == ckpts.checkpoint_id).any()
    points = store.query(db, "SELECT step, t FROM summary WHERE run_id = ? AND role = 'test' ORDER BY step", [run_id])
    assert points.step.tolist() == [0, 1, 2, 3] and points.t.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_swapped_checkpoint_is_refused(frozen_run, tmp_path):
    src_db, run_id, folder = frozen_run
    db = str(tmp_path / "copy.duckdb")
    shutil.copy(src_db, db)
    runs = tmp_path / "runs"
    shutil.copytree(folder / "runs", runs)
    # steps 1-3 hold equal weights here; step 1 of another run holds other weights
    other = tmp_path / "other"
    api.run(SelfImproveConfig(**TINY, rounds=1, seed=5), db=str(tmp_path / "other.duckdb"), workdir=str(other),
            log=quiet)
    with store.write(db) as con:
        con.execute("UPDATE checkpoints SET path = replace(path, ?, ?)", [str(folder / "runs"), str(runs)])
    step3 = runs / run_id / "step-003"
    shutil.rmtree(step3)
    shutil.copytree(next(other.glob("*/step-001")), step3)
    before = table_rows(db, "checkpoints", "checkpoint_id")
    result = run_cli("train-round", "--run", run_id, "--db", db, "--workdir", str(runs))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(step3) in result.stderr and "other weights" in result.stderr
    assert table_rows(db, "checkpoints", "checkpoint_id") == before


def test_another_n_boot_never_rewrites_stored_intervals(tiny_cfg, db):
    first = evaluate(tiny_cfg, db=db)
    stored = table_rows(db, "metrics", "name")
    with pytest.raises(SIBenchError, match="--n-boot 50"):
        evaluate(dataclasses.replace(tiny_cfg, n_boot=200), db=db)
    assert table_rows(db, "metrics", "name") == stored
    again = evaluate(tiny_cfg, db=db)
    assert again.eval_id == first.eval_id and again.generated == 0 and again.scored == 0
    assert {k: (m.value, m.ci_low) for k, m in again.metrics.items()} == \
        {k: (m.value, m.ci_low) for k, m in first.metrics.items()}


# ---- import conflicts -------------------------------------------------------------------------------------


@pytest.fixture
def shards(tmp_path):
    """The same run on two machines (only timestamps, timings and paths differ), and a third store."""
    here, there = str(tmp_path / "here.duckdb"), str(tmp_path / "there.duckdb")
    make_run(here, "run-1", ts=(0, 1, 2), P=5, n_boot=10)
    make_run(there, "run-1", ts=(0, 1, 2), P=5, n_boot=10)
    with store.write(there) as con:
        con.execute("UPDATE evaluations SET finished_at = finished_at + INTERVAL 3 HOUR, timings = '{\"x\": 1}'")
        con.execute("UPDATE checkpoints SET path = '/elsewhere/' || checkpoint_id, created_at = now()")
        con.execute("UPDATE runs SET git_commit = 'other', updated_at = updated_at - INTERVAL 1 HOUR")
    return here, there


def test_shards_of_the_same_work_are_not_a_conflict(shards):
    here, there = shards
    before = table_rows(here, "metrics", "eval_id, name")
    counts = api.import_store(there, here)
    assert all(c["added"] == 0 for c in counts.values()) and table_rows(here, "metrics", "eval_id, name") == before


def _tamper(db: str) -> str:
    """Another sigma under the same eval_id, with the metrics and picks computed at it."""
    with store.write(db) as con:
        eval_id = con.execute("SELECT min(eval_id) FROM evaluations").fetchone()[0]
        con.execute("UPDATE evaluations SET sigma = 0.99 WHERE eval_id = ?", [eval_id])
        con.execute("UPDATE metrics SET value = value + 1 WHERE eval_id = ? AND name = 'verifier_uncertainty'",
                    [eval_id])
        con.execute("UPDATE picks SET reason = 'fallback' WHERE eval_id = ?", [eval_id])
    return eval_id


def family(db: str, eval_id: str) -> tuple:
    with duckdb.connect(db, read_only=True) as con:
        return tuple(con.execute(f"SELECT * FROM {t} WHERE eval_id = ? ORDER BY ALL", [eval_id]).fetchall()
                     for t in ("evaluations", "metrics", "picks"))


def test_a_conflict_refuses_the_whole_import(shards):
    here, there = shards
    eval_id = _tamper(there)
    make_run(there, "run-2", ts=(0, 1), P=5, n_boot=10, seed=1)
    before = {t: table_rows(here, t, "1") for t in ("runs", "evaluations", "metrics")}
    with pytest.raises(SIBenchError, match=f"import refused: evaluations \\(eval_id={eval_id}\\)"):
        api.import_store(there, here)
    assert {t: table_rows(here, t, "1") for t in before} == before  # run-2 did not come in either
    result = run_cli("import", there, "--db", here)
    assert result.returncode == 2 and result.stderr.startswith("error: import refused")
    assert "--on-conflict" in result.stderr


def test_theirs_and_ours_move_row_families_together(shards, tmp_path):
    here, there = shards
    eval_id = _tamper(there)
    ours = str(tmp_path / "ours.duckdb")
    shutil.copy(here, ours)
    mine = family(here, eval_id)
    api.import_store(there, ours, on_conflict="ours")
    assert family(ours, eval_id) == mine
    api.import_store(there, here, on_conflict="theirs")
    assert family(here, eval_id) == family(there, eval_id)
    query = "SELECT sigma, verifier_uncertainty FROM summary WHERE eval_id = ?"
    assert store.query(here, query, [eval_id]).values.tolist() == store.query(there, query, [eval_id]).values.tolist()
    assert store.query(here, query, [eval_id]).sigma[0] == 0.99


def test_a_killed_step_leaves_no_scratch_directory(tmp_path, tiny_model):
    db, runs = str(tmp_path / "si.duckdb"), tmp_path / "runs"
    args = ["run", "--model", "tiny-test", "--rounds", "1", "--samples", "2", "--train-prompts", "4", "--test-limit",
            "2", "--max-new-tokens", "6", "--n-boot", "10", "--train-batch-size", "2", "--db", db, "--workdir",
            str(runs)]
    killed = run_process(*args, env={"SI_BENCH_FAIL_AT": "train_step:1:kill"})
    assert killed.returncode == -9
    assert list(runs.glob("*/.step-001-*")), "the kill should have left a scratch directory"
    run_cli(*args, check=True)
    assert not list(runs.glob("*/.step-*")) and list(runs.glob("*/step-001"))

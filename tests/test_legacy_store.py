"""A store written by si-bench before the namespace and schema-v3 changes (tests/fixtures/store-v2.duckdb.gz,
made by make_store_v2.py at commit 538c1fb) opens, migrates, keeps its ids, resumes and imports without
re-sampling."""

from __future__ import annotations

import gzip
import shutil

import pytest
from conftest import ROOT, table_rows

from si_bench import lmeval, store
from si_bench.api import import_store, run
from si_bench.evaluation import EvalConfig, Evaluation
from si_bench.trainers.config import SelfImproveConfig

FIXTURE = ROOT / "tests" / "fixtures" / "store-v2.duckdb.gz"
EVAL = dict(model="tiny-test", dataset="arith", split="test", limit=4, samples=2, max_new_tokens=6, n_boot=20,
            chunk_prompts=2, batch_size=8)
# The verifier as these runs were made (zero-shot TF), named so that another run default keeps their ids.
RUN = dict(model="tiny-test", dataset="arith", mode="regenerate", verifier="tf", verifier_shots=0, samples=2,
           test_limit=4, max_new_tokens=6, n_boot=20, chunk_prompts=2, batch_size=8)
KILLED_RUN = SelfImproveConfig(**RUN, rounds=2, train_prompts=6, train_batch_size=3)
FINISHED_RUN = SelfImproveConfig(**RUN, rounds=1, train_prompts=4, train_batch_size=2, seed=1)


@pytest.fixture
def legacy(tmp_path) -> str:
    path = tmp_path / "legacy.duckdb"
    with gzip.open(FIXTURE) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return str(path)


def test_ids_of_unchanged_settings_are_pinned(legacy, tiny_model):
    assert KILLED_RUN.run_id == "tiny-test-arith-regenerate-s0-c2c30bbe606e"
    assert FINISHED_RUN.run_id == "tiny-test-arith-regenerate-s1-38516faba779"
    tf = Evaluation(EvalConfig(**EVAL, verifier_shots=0), db=legacy)
    assert (tf.gen_id, tf.eval_id) == ("6c895e13601fc058", "7e8fc644635322fa")
    # Few-shot verdicts changed setting when corrupt() made the wrong example wrong throughout (few-shot revision
    # 2): their keys moved, so the stored 2-shot evaluations (4cd1396f1493c872, a1bc97ec81deb3a9) are not reused.
    tf2 = Evaluation(EvalConfig(**EVAL, verifier_shots=2), db=legacy)
    qe = Evaluation(EvalConfig(**EVAL, verifier="qe", sigma=0.9), db=legacy)
    assert (tf2.eval_id, qe.eval_id) == ("149641e60da359e3", "4fdb71f93c901fb6")
    assert tiny_model.identity == "0eca8a30655f069b"


def test_opens_and_migrates_keeping_every_row(legacy):
    with store.read(legacy) as con:
        before = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("samples", "metrics", "picks")}
    with store.write(legacy) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == store.SCHEMA_VERSION
        after = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in before}
    assert after == before
    points = store.query(legacy, "SELECT run_id, step, role, solver_uncertainty, U_s FROM summary "
                                 "WHERE run_id LIKE '%s1-%' AND role = 'test' ORDER BY step")
    assert points.step.tolist() == [0, 1] and (points.solver_uncertainty == points.U_s).all()
    assert store.query(legacy, "SELECT steps_done FROM runs WHERE run_id LIKE '%s1-%'").steps_done[0] == 1


def test_killed_run_resumes_without_resampling(legacy, tmp_path, monkeypatch):
    stored = table_rows(legacy, "samples", "gen_id, prompt_id, sample_idx")
    sampled: list[int] = []
    original = lmeval.sample_solutions
    monkeypatch.setattr(lmeval, "sample_solutions", lambda lm, ds, prompts, *a, **k: (
        sampled.append(len(prompts)) or original(lm, ds, prompts, *a, **k)))
    run(KILLED_RUN, db=legacy, workdir=str(tmp_path / "runs"), log=lambda _: None)
    # Stored: the round-0 test evaluation and 4 of the 6 training prompts. Left: 2 training prompts, then
    # rounds 1 and 2 (6 training prompts for round 2, 4 test prompts after each round).
    assert sum(sampled) == 2 + 4 + 6 + 4
    now = set(table_rows(legacy, "samples", "gen_id, prompt_id, sample_idx"))
    assert set(stored) <= now
    status = store.query(legacy, "SELECT status, steps_done FROM runs WHERE run_id = ?", [KILLED_RUN.run_id])
    assert status.values.tolist() == [["done", 2]]


def test_imports_into_a_new_store(legacy, tmp_path):
    fresh = str(tmp_path / "fresh.duckdb")
    counts = import_store(legacy, fresh)
    assert counts["samples"]["added"] == len(table_rows(legacy, "samples", "gen_id"))
    names = set(store.query(fresh, "SELECT DISTINCT name FROM metrics").name)
    assert "solver_uncertainty" in names and "solver_nll" not in names
    assert import_store(legacy, fresh)["samples"] == {"added": 0, "updated": 0}


def test_read_only_commands_upgrade_it_first(legacy):
    from si_bench.api import fit

    assert store.user_query(legacy, "SELECT count(*) AS n FROM summary WHERE U_s IS NOT NULL").n[0] == 6
    out = fit(legacy)
    assert out["n_fitted"] == 0 and all("too few points" in t["note"] for t in out["trajectories"])

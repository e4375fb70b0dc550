"""Trajectories read from the store: grouping, ordering, prompt-bootstrap replicates, seed replicates."""

from __future__ import annotations

import numpy as np
import pytest
from synth_store import TOKENS, law, make_run

from si_bench import store
from si_bench.errors import SIBenchError
from si_bench.fit import MIN_POINTS
from si_bench.trajectories import load_trajectories, pool_seeds, seed_groups, trajectories_frame


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("traj") / "si.duckdb")
    make_run(db, "run-a", seed=0, ts=(0, 1, 2, 3, 4, 5))
    make_run(db, "run-a", seed=0, ts=(0, 1, 2, 3, 4, 5), split="train", P=20)
    make_run(db, "run-b", seed=1, ts=(0, 1, 2, 3, 4, 5))
    make_run(db, "run-c", seed=2, ts=(0, 2, 4), mode="fixed")
    return db


def test_one_trajectory_per_run_split_ordered_by_t(two_runs):
    trajs = load_trajectories(two_runs)
    keys = [tr.key for tr in trajs]
    assert keys == sorted(keys)
    assert {(tr.run_id, tr.split) for tr in trajs} == {("run-a", "test"), ("run-a", "train"), ("run-b", "test"),
                                                      ("run-c", "test")}
    a = next(tr for tr in trajs if tr.run_id == "run-a" and tr.split == "test")
    assert a.key == "run-a|gsm8k|test|self|total"
    assert list(a.t) == [0, 1, 2, 3, 4, 5] and a.t_unit == "round" and a.mode == "regenerate"
    assert a.model == "tiny" and a.verifier == "self" and a.n_points == 6 and a.n_prompts == 40
    s = store.query(two_runs, "SELECT solver_uncertainty, verifier_uncertainty, solver_accuracy FROM summary "
                              "WHERE run_id = 'run-a' AND split = 'test' "
                              "ORDER BY t")
    np.testing.assert_allclose(a.solver_uncertainty, s["solver_uncertainty"])
    np.testing.assert_allclose(a.verifier_uncertainty, s["verifier_uncertainty"])
    np.testing.assert_allclose(a.solver_accuracy, s["solver_accuracy"])
    assert np.all(np.diff(a.solver_uncertainty) < 0) and np.all(a.solver_uncertainty > a.verifier_uncertainty)
    c = next(tr for tr in trajs if tr.run_id == "run-c")
    assert c.mode == "fixed" and c.n_points == 3


def test_per_token_unit_matches_the_law(two_runs):
    a = next(tr for tr in load_trajectories(two_runs, unit="per_token") if tr.key.startswith("run-a|gsm8k|test"))
    us, uv = law(a.t)
    assert a.unit == "per_token" and a.key.endswith("|per_token")
    assert np.max(np.abs(a.solver_uncertainty - us)) < 0.2 and np.max(np.abs(a.verifier_uncertainty - uv)) < 0.2
    with pytest.raises(SIBenchError, match="unit"):
        load_trajectories(two_runs, unit="bits")


def test_replicates_resample_prompts_paired_over_t(two_runs):
    a = next(tr for tr in load_trajectories(two_runs) if tr.key.startswith("run-a|gsm8k|test"))
    reps = a.replicates(300, seed=1)
    assert reps.shape == (300, 6, 2) and np.isfinite(reps).all()
    np.testing.assert_array_equal(reps, a.replicates(300, seed=1))  # seeded
    np.testing.assert_allclose(reps.mean(axis=0)[:, 0], a.solver_uncertainty,
                               atol=3 * reps.std(axis=0)[:, 0].max() / 10)
    sd = reps.std(axis=0)
    assert np.all(sd > 0) and np.all(sd[:, 0] < 0.1 * TOKENS)
    # the same prompts at every t: replicate deviations are strongly correlated over time
    dev = reps[:, :, 0] - reps[:, :, 0].mean(axis=0)
    assert np.corrcoef(dev[:, 0], dev[:, -1])[0, 1] > 0.5
    assert a.replicates(0) is None


def test_only_shared_prompts_and_external_picks_skipped(tmp_path):
    db = str(tmp_path / "si.duckdb")
    make_run(db, "run-x", drop_prompt_at=2, external_prompts=3, P=12)
    (tr,) = load_trajectories(db)
    assert tr.n_prompts == 11
    verifier = tr.runs[0][:, :, 1]
    assert verifier.shape == (6, 11) and np.isnan(verifier).sum() > 0  # external picks: no U_v
    reps = tr.replicates(100, seed=0)
    assert np.isfinite(reps).all()
    assert abs(reps[:, :, 1].mean() - tr.verifier_uncertainty.mean()) < 0.05 * TOKENS


def test_pool_seed_replicates(two_runs):
    trajs = [tr for tr in load_trajectories(two_runs) if tr.split == "test"]
    pooled = pool_seeds(trajs)
    means = [tr for tr in pooled if len(tr.run_ids) > 1]
    assert len(means) == 1 and len(pooled) == 2  # run-c has another mode and grid: left alone
    m = means[0]
    a, b = (next(tr for tr in trajs if tr.run_id == r) for r in ("run-a", "run-b"))
    assert m.run_ids == ["run-a", "run-b"] and m.run_id == "mean(run-a,run-b)"
    np.testing.assert_allclose(m.solver_uncertainty, (a.solver_uncertainty + b.solver_uncertainty) / 2)
    reps = m.replicates(200, seed=0)
    assert reps.shape == (200, 6, 2) and np.isfinite(reps).all()
    np.testing.assert_allclose(reps.mean(axis=0)[:, 0], m.solver_uncertainty, rtol=0.05)


def _pooled_width(db: str, runs: tuple[str, ...]) -> float:
    from si_bench.fit import FitOptions
    from si_bench.trajectories import fit_entry

    [m] = pool_seeds([tr for tr in load_trajectories(db) if tr.run_id in runs])
    # The coupled-law interval is the one the replicates make; the published hull may open at the domain edge.
    lo, hi = fit_entry(m, FitOptions(n_boot=300)).result.to_json()["solver_limit"]["coupled_law"]["ci95"]
    return hi - lo


def test_seed_noise_widens_pooled_intervals(tmp_path):
    """Two seeds whose runs converge to other limits (seed noise) give wider limit intervals than two seeds
    that agree."""
    db = str(tmp_path / "seeds.duckdb")
    shifted = {"us_inf": 1.6, "a_s": 2.0, "uv_inf": 1.0, "a_v": 1.2, "lam": 0.5}
    make_run(db, "run-a", seed=0)
    make_run(db, "run-b", seed=1)
    make_run(db, "run-s", seed=2, truth=shifted)
    assert _pooled_width(db, ("run-a", "run-s")) > 2 * _pooled_width(db, ("run-a", "run-b"))


def test_long_frame(two_runs):
    f = trajectories_frame(two_runs)
    assert {"run_id", "model", "dataset", "split", "t", "series", "value"} <= set(f.columns)
    assert set(f["series"]) == {"solver", "verifier", "gap", "solver_accuracy", "verifier_accuracy"}
    sub = f[(f.run_id == "run-a") & (f.split == "test") & (f.series == "solver")]
    assert list(sub.t) == [0, 1, 2, 3, 4, 5]


def test_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(SIBenchError, match="not found"):
        load_trajectories(tmp_path / "nope.duckdb")


def test_seeds_on_unequal_t_grids_pool_on_the_common_grid_or_say_why_not(tmp_path):
    db = str(tmp_path / "grids.duckdb")
    make_run(db, "run-a", seed=0, ts=(0, 1, 2, 3, 4, 5), P=6, n_boot=10)
    make_run(db, "run-d", seed=3, ts=(0, 1, 2, 3), P=6, n_boot=10)  # stopped earlier: pooled on t = 0..3
    make_run(db, "run-x", seed=0, ts=(0, 1, 2), dataset="math", P=6, n_boot=10)
    make_run(db, "run-y", seed=1, ts=(3, 4, 5), dataset="math", P=6, n_boot=10)  # shares no t with run-x
    trajs = load_trajectories(db)
    groups = {tr.run_id: note for tr, note in seed_groups(trajs)}
    assert set(groups) == {"mean(run-a,run-d)", "run-x", "run-y"}
    assert groups["mean(run-a,run-d)"] == "pooled on the 4 t every run measured; t 4, 5 measured by only some runs " \
                                         "left out"
    assert groups["run-x"] == groups["run-y"] == (f"not pooled with run-x, run-y: they share 0 t (none), at least "
                                                  f"{MIN_POINTS} needed")
    [pooled] = [tr for tr in pool_seeds(trajs) if tr.run_ids == ["run-a", "run-d"]]
    a, d = (next(tr for tr in trajs if tr.run_id == r) for r in ("run-a", "run-d"))
    np.testing.assert_array_equal(pooled.t, [0, 1, 2, 3])
    np.testing.assert_allclose(pooled.solver_uncertainty, (a.solver_uncertainty[:4] + d.solver_uncertainty) / 2)
    assert [r.shape[0] for r in pooled.runs] == [4, 4] and len(pooled.eval_ids) == 8
    assert pooled.replicates(20, seed=0).shape == (20, 4, 2)

"""Intervals of the fit: measured coverage, ends the data do not determine, domains, replicates, adequacy, odd input."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest

from si_bench.errors import SIBenchError
from si_bench.fit import FitOptions, fit_trajectory, pooled_replicates
from si_bench.fit._calibration import QUANTITIES, coverage

N_TRAJ = 1000  # per case; the whole test vectorises across trajectories


def test_coverage_on_simulated_trajectories():
    start = time.perf_counter()
    table = {}
    for T in (5, 8, 11, 20):
        table[f"T={T}"] = cov = coverage(T, N_TRAJ, seed=T)
        for q in QUANTITIES:
            for count in ("strict", "lenient"):  # open ends counted as misses, then as hits
                assert 0.90 <= cov[q][count] <= 0.99, (T, q, count, cov[q])
        assert 0.90 <= cov["accuracy_limit"]["lenient"] <= 0.99, (T, cov["accuracy_limit"])
        if T >= 11:  # with fewer points the accuracy limit's ends often reach the domain edge (reported open)
            assert 0.90 <= cov["accuracy_limit"]["strict"] <= 0.99, (T, cov["accuracy_limit"])
    table["T=4 (measured)"] = coverage(4, N_TRAJ, seed=4)
    table["T=20 AR(1) 0.7 (measured)"] = coverage(20, N_TRAJ, seed=21, rho=0.7)
    for case, cov in table.items():
        print(case, " ".join(f"{q} {v['strict']:.3f}/{v['lenient']:.3f}" for q, v in cov.items()))
    print(f"coverage test: {time.perf_counter() - start:.1f} s")


def _strict_json(obj) -> dict:
    return json.loads(json.dumps(obj, allow_nan=False))


def test_undetermined_ends_are_null_with_a_reason():
    # the demo's 4 points: the whole drop happens in round 1, so the rate may be arbitrarily fast
    t = np.arange(4.0)
    res = fit_trajectory(t, [5.36, 1.79, 1.78, 1.32], [4.9, 1.7, 1.6, 1.25], options=FitOptions(n_boot=50))
    j = _strict_json(res.to_json())
    rate = j["rate"]
    assert rate["ci95"][0] is not None and rate["ci95"][1] is None
    assert "search bound" in rate["unbounded"]["high"] and "high end not determined" in rate["reason"]
    assert j["interval"]["method"].startswith("profile likelihood") and j["interval"]["level"] == 0.95
    assert {"includes", "excludes"} <= set(j["interval"])
    assert j["adequacy"]["conditional"] and "not tested" in j["adequacy"]["why"]
    row = next(r for r in res.rows() if r["law"] == "coupled" and r["quantity"] == "rate")
    assert row["ci_high"] is None and "not determined" in row["reason"] and row["details"]["conditional"]


def test_uncertainty_limits_stay_in_their_domain():
    # slow decay towards a limit near 0: the lower ends reach the domain edge 0 and are reported open
    rng = np.random.default_rng(2)
    t = np.arange(6.0)
    e = np.exp(-0.15 * t)
    j = fit_trajectory(t, 0.05 + 0.9 * e + rng.normal(0, 0.02, 6), 0.02 + 0.4 * e + rng.normal(0, 0.02, 6),
                       options=FitOptions(n_boot=50)).to_json()
    for q in ("solver_limit", "verifier_limit"):
        lo, hi = j[q]["ci95"]
        assert lo is None and "domain edge 0" in j[q]["unbounded"]["low"], j[q]
        assert hi is None or hi >= 0
        assert j[q]["estimate"] is None or j[q]["estimate"] >= 0


def test_accuracy_limits_flat_or_not_saturating_give_no_limit():
    rng = np.random.default_rng(5)
    t = np.arange(8.0)
    s = 1.0 + 0.5 * np.exp(-0.5 * t)
    v = 0.6 + 0.2 * np.exp(-0.5 * t)
    flat = 0.5 + rng.normal(0, 0.01, 8)
    linear = 0.1 + 0.05 * t + rng.normal(0, 0.005, 8)
    acc = fit_trajectory(t, s, v, solver_accuracy=flat, verifier_accuracy=linear,
                         options=FitOptions(n_boot=20)).to_json()
    acc = _strict_json(acc)["accuracy"]
    assert acc["solver"]["limit"]["estimate"] is None and "no limit identified" in acc["solver"]["limit"]["reason"]
    lim = acc["verifier"]["limit"]
    assert lim["ci95"][1] is None and "domain edge 1" in lim["reason"]  # never [-70, 88]
    assert lim["estimate"] is None or 0 <= lim["estimate"] <= 1
    assert lim["ci95"][0] is None or 0 <= lim["ci95"][0] <= 1
    saturating = 0.8 - 0.3 * np.exp(-0.5 * t) + rng.normal(0, 0.005, 8)
    good = fit_trajectory(t, s, v, solver_accuracy=saturating, options=FitOptions(n_boot=20)).to_json()["accuracy"]
    lo, hi = good["solver"]["limit"]["ci95"]
    assert lo <= 0.8 <= hi and hi - lo < 0.1


def _prompt_level_runs(rng, seed_sd: float, R: int = 4, P: int = 40):
    """R runs x P prompts of per-prompt (solver, verifier) values on 8 points: the law, a per-prompt effect shared
    by every t, per-(prompt, t) noise, and a per-run shift of the limits (seed noise)."""
    t = np.arange(8.0)
    e = np.exp(-0.5 * t)
    curve = np.stack([0.8 + 0.9 * e, 0.5 + 0.35 * e], axis=-1)  # (T, 2)
    runs = []
    for _ in range(R):
        shift = rng.normal(0, seed_sd, 2)
        prompt = rng.normal(0, 0.1, (1, P, 1))
        runs.append(curve[:, None, :] + shift + prompt + rng.normal(0, 0.1, (len(t), P, 2)))
    return t, runs


def _width(j: dict, q: str) -> float:
    lo, hi = j[q]["ci95"]
    return hi - lo


def test_pooled_seed_replicates_widen_intervals_with_seed_noise():
    widths = {}
    for seed_sd in (0.0, 0.1):
        t, runs = _prompt_level_runs(np.random.default_rng(11), seed_sd)
        reps = pooled_replicates(runs, n_boot=300, seed=0)
        assert reps.shape == (300, len(t), 2)
        mean = np.mean([r.mean(axis=1) for r in runs], axis=0)
        j = fit_trajectory(t, mean[:, 0], mean[:, 1], replicates=reps, options=FitOptions(n_boot=10)).to_json()
        assert j["bootstrap"]["kind"] == "replicates"
        widths[seed_sd] = {q: _width(j, q) for q in ("solver_limit", "verifier_limit")}
    for q in ("solver_limit", "verifier_limit"):
        assert widths[0.1][q] > 1.5 * widths[0.0][q], widths
    with pytest.raises(SIBenchError, match="same t grid"):
        pooled_replicates([np.zeros((5, 3, 2)), np.zeros((6, 3, 2))])


def test_adequacy_flag_follows_the_law_test():
    rng = np.random.default_rng(4)
    t = np.arange(20.0)
    e = np.exp(-0.4 * t)
    law = fit_trajectory(t, 0.6 + 0.8 * e + rng.normal(0, 0.005, 20), 0.4 + 0.3 * e + rng.normal(0, 0.005, 20),
                         options=FitOptions(n_boot=20)).to_json()
    assert not law["adequacy"]["conditional"] and law["adequacy"]["linearisation"] == "consistent"
    power = (t + 1.0) ** -0.7
    other = fit_trajectory(t, 0.2 + 1.0 * power + rng.normal(0, 0.002, 20), 0.1 + 0.4 * power,
                           options=FitOptions(n_boot=20)).to_json()
    assert other["adequacy"]["conditional"] and "law test" in other["adequacy"]["why"]
    assert other["solver_limit"]["conditional"]


@pytest.mark.parametrize("t, s, match", [
    (np.arange(6.0), 1e308 * (0.5 + 0.4 * np.exp(-0.5 * np.arange(6.0))), "rescale"),
    (np.arange(6.0) * 6e299, 0.5 + 0.4 * np.exp(-0.5 * np.arange(6.0)), "rescale t"),
    (np.arange(6.0), 1e-300 * (0.5 + 0.4 * np.exp(-0.5 * np.arange(6.0))), "rescale"),
    (np.array([0.0, 1, 2, 3, 4, 3e7]), 0.5 + 0.4 * np.exp(-0.5 * np.arange(6.0)), "uneven"),
])
def test_extreme_inputs_are_clear_errors_without_warnings(t, s, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SIBenchError, match=match):
            fit_trajectory(t, s, 0.5 * s, options=FitOptions(n_boot=10))

"""Limits under the law's uncertainty (the hull over the candidate laws the data do not reject) and weighted
fits from per-point standard errors (issue 20, items 3-4). The full table: bench/bench_law_coverage.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from si_bench.errors import SIBenchError
from si_bench.fit import FitOptions, _coupled, _laws, fit_frame, fit_trajectory

N = 200


def _published(t, Y, W=None):
    p = _coupled.fit_many(t, Y, weights=W)
    iv, _, inflation = _coupled.intervals_many(t, Y, p, weights=W)
    hull, _, test = _laws.any_law_intervals(t, Y, p["rss"], iv, domain=_coupled.UNCERTAINTY_DOMAIN,
                                            inflation=inflation, weights=W)
    return iv, hull, test


def _edge_read(iv, truth) -> float:
    lo_open, hi_open = iv.lo_open.astype(bool), iv.hi_open.astype(bool)
    return float(np.mean(((iv.lo <= truth) | lo_open) & ((truth <= iv.hi) | hi_open)))


def _limits(rng):
    a_s = rng.uniform(0.5, 1.0, N)
    uv = rng.uniform(0.3, 1.5, N)
    return a_s, a_s * rng.uniform(0.25, 0.6, N), uv + rng.uniform(0.05, 0.3, N), uv


def test_power_law_truth_is_covered_by_the_published_limits_not_by_the_coupled_law():
    rng = np.random.default_rng(11)
    t = np.arange(11.0)
    a_s, a_v, us, uv = _limits(rng)
    p_s, p_v = rng.uniform(0.3, 1.5, N), rng.uniform(0.3, 1.5, N)
    Y = np.stack([us[:, None] + a_s[:, None] * (1 + t) ** -p_s[:, None],
                  uv[:, None] + a_v[:, None] * (1 + t) ** -p_v[:, None]], axis=-1) + rng.normal(0, 0.02, (N, 11, 2))
    coupled, hull, test = _published(t, Y)
    assert _edge_read(hull["solver_limit"], us) >= 0.9 and _edge_read(hull["verifier_limit"], uv) >= 0.9
    assert _edge_read(coupled["solver_limit"], us) < 0.5  # the coupled law alone is confidently wrong
    assert np.mean(test["rejected"]["coupled"]) > 0.5  # and mostly flagged


def test_the_law_itself_is_rarely_called_conditional_and_stays_covered():
    rng = np.random.default_rng(12)
    t = np.arange(11.0)
    a_s, a_v, us, uv = _limits(rng)
    r = rng.uniform(0.1, 0.3, N)
    e = np.exp(-np.outer(r, t))
    Y = np.stack([us[:, None] + a_s[:, None] * e, uv[:, None] + a_v[:, None] * e], axis=-1)
    _, hull, test = _published(t, Y + rng.normal(0, 0.02, Y.shape))
    assert np.mean(test["rejected"]["coupled"]) <= 0.1
    assert _edge_read(hull["solver_limit"], us) >= 0.9 and _edge_read(hull["gap_limit"], us - uv) >= 0.9


def test_heteroscedastic_noise_with_known_se_covers_the_rate():
    """sd 4% of the level at T = 20: weighted by the standard errors, the rate's interval covers >= 0.9."""
    rng = np.random.default_rng(13)
    t = np.arange(20.0)
    a_s, a_v, us, uv = _limits(rng)
    r = rng.uniform(0.2, 0.9, N)
    e = np.exp(-np.outer(r, t))
    Y = np.stack([us[:, None] + a_s[:, None] * e, uv[:, None] + a_v[:, None] * e], axis=-1)
    Y = Y * (1 + rng.normal(0, 0.04, Y.shape))
    W = 1 / (0.04 * Y) ** 2
    coupled, hull, _ = _published(t, Y, W)
    assert _edge_read(coupled["rate"], r) >= 0.9
    assert _edge_read(hull["solver_limit"], us) >= 0.9


def test_se_columns_weight_the_fit(tmp_path):
    """A point with a huge standard error barely counts: the fit with it matches the fit without the point."""
    t = np.arange(10.0)
    e = np.exp(-0.5 * t)
    s, v = 1.0 + 0.8 * e, 0.6 + 0.3 * e
    s_bad = s.copy()
    s_bad[5] += 0.5
    se = np.full((10, 2), 0.01)
    se[5, 0] = 1e3
    df = pd.DataFrame({"t": t, "solver_uncertainty": s_bad, "verifier_uncertainty": v,
                       "solver_uncertainty_se": se[:, 0], "verifier_uncertainty_se": se[:, 1]})
    j = fit_frame(df, options=FitOptions(n_boot=0)).to_json()
    assert j["solver_limit"]["estimate"] == pytest.approx(1.0, abs=1e-3)
    assert j["interval"]["weighted"].startswith("by 1 / se^2")
    long = pd.DataFrame({"t": np.tile(t, 2), "series": ["solver"] * 10 + ["verifier"] * 10,
                         "value": np.concatenate([s_bad, v]), "se": np.concatenate([se[:, 0], se[:, 1]])})
    assert fit_frame(long, options=FitOptions(n_boot=0)).to_json()["solver_limit"]["estimate"] == pytest.approx(
        j["solver_limit"]["estimate"], rel=1e-9)
    unweighted = fit_trajectory(t, s_bad, v, options=FitOptions(n_boot=0)).to_json()
    assert abs(unweighted["solver_limit"]["estimate"] - 1.0) > 0.01
    with pytest.raises(SIBenchError, match="both"):
        fit_frame(df.drop(columns=["verifier_uncertainty_se"]), options=FitOptions(n_boot=0))
    with pytest.raises(SIBenchError, match="finite and > 0"):
        fit_trajectory(t, s, v, se=np.zeros((10, 2)), options=FitOptions(n_boot=0))


def test_rows_keep_the_coupled_law_interval_and_add_the_published_one():
    rng = np.random.default_rng(14)
    t = np.arange(8.0)
    e = np.exp(-0.2 * t)
    res = fit_trajectory(t, 1.0 + 0.8 * e + rng.normal(0, 0.02, 8), 0.6 + 0.3 * e + rng.normal(0, 0.02, 8),
                         options=FitOptions(n_boot=0))
    j = res.to_json()
    rows = {(r["law"], r["quantity"]): r for r in res.rows()}
    for q in ("solver_limit", "verifier_limit", "gap_limit"):
        own = j[q]["coupled_law"]["ci95"]
        assert [rows["coupled", q]["ci_low"], rows["coupled", q]["ci_high"]] == own
        assert [rows["any_law", q]["ci_low"], rows["any_law", q]["ci_high"]] == j[q]["ci95"]
        lo, hi = j[q]["ci95"]
        # the published interval contains the coupled law's (an open end contains everything)
        assert lo is None or (own[0] is not None and lo <= own[0] + 1e-12)
        assert hi is None or (own[1] is not None and hi >= own[1] - 1e-12)

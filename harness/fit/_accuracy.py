"""Saturation fit for accuracy trajectories: acc(t) = a_inf - A e^{-r t}, with the profile-likelihood
intervals of the uncertainty limits (_intervals) on the domain [0, 1]."""

from __future__ import annotations

from typing import Any

import numpy as np

from si_bench.fit._coupled import r2
from si_bench.fit._intervals import interval_json, residual_intervals
from si_bench.fit._vp import exp_basis, rate_bounds, vp_fit

N_PARAMS = 3
ACCURACY_DOMAIN = (0.0, 1.0)
METHOD = "profile likelihood, F-calibrated (df = T - 3), serial-correlation inflation"
COVERAGE = ("measured on simulated saturation curves (si_bench.fit._calibration): 0.95-0.97 at 5-20 points "
            "counting open ends as covering; below 11 points the ends often reach the domain edge (null)")


def fit_many(t: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """Fit B accuracy series Y (B, T) at once; amplitude referenced to t0 = min(t), as a + amp e^{-r (t - t0)}."""
    t = np.asarray(t, dtype=float)
    r = vp_fit(t, Y[:, :, None], exp_basis(float(t.min())), *rate_bounds(t))
    return {"lam": r.theta, "limit": r.intercept[:, 0], "amp": r.amplitude[:, 0], "rss": r.rss,
            "at_bound": r.at_bound}


def intervals_many(t: np.ndarray, Y: np.ndarray, p: dict[str, np.ndarray]):
    """Intervals of the rate and the limit for B series Y (B, T) fitted as p."""
    t = np.asarray(t, dtype=float)
    fitted = p["limit"][:, None] + p["amp"][:, None] * np.exp(-np.outer(p["lam"], t - t.min()))
    return residual_intervals(t, Y[:, :, None], p["lam"], p["amp"][:, None], (Y - fitted)[:, :, None],
                              rate_bounds(t), {"limit": (1.0,)}, ACCURACY_DOMAIN)


def _changes(y: np.ndarray, rss: float) -> bool:
    """F test of the saturation curve against a constant at the 5% level."""
    df = len(y) - N_PARAMS
    rss0 = float(np.sum((y - y.mean()) ** 2))
    if rss <= 0:
        return rss0 > 0
    from scipy import stats  # imported when first used: the CLI starts without it

    return ((rss0 - rss) / 2) / (rss / df) > stats.f.ppf(0.95, 2, df)


def fit_accuracy(t: np.ndarray, acc: np.ndarray) -> dict:
    """{"limit", "rate": {estimate, ci95, method[, unbounded, reason]}, "amplitude", "r2", "at_bound"}."""
    t = np.asarray(t, dtype=float)
    y = np.asarray(acc, dtype=float)
    if np.ptp(y) <= 0:
        return {"reason": "the accuracy series is constant: no limit identified"}
    p = fit_many(t, y[None])
    (iv, _, _), bounds = intervals_many(t, y[None], p), rate_bounds(t)
    lam, limit = float(p["lam"][0]), float(p["limit"][0])
    out: dict[str, Any] = {
           "limit": interval_json(limit, iv["limit"], kind="limit", domain=ACCURACY_DOMAIN, bounds=bounds,
                                  method=METHOD),
           "rate": interval_json(lam, iv["rate"], kind="rate", domain=bounds, bounds=bounds, method=METHOD),
           # acc = a_inf - A e^{-r t}: A is minus the fitted amplitude, referenced to t = 0
           "amplitude": float(-p["amp"][0] * np.exp(lam * t.min())),
           "r2": r2(y, limit + p["amp"][0] * np.exp(-lam * (t - t.min()))),
           "at_bound": bool(p["at_bound"][0]), "coverage": COVERAGE}
    if not _changes(y, float(p["rss"][0])):
        ends = [f"{side} end not determined: {why}" for side, why in out["limit"].get("unbounded", {}).items()]
        out["limit"]["estimate"] = None
        out["limit"]["reason"] = "; ".join(["no limit identified: no significant change over t (F test against "
                                            "a constant, 5% level)"] + ends)
    return out

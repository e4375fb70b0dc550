"""Saturation fit for accuracy trajectories: acc(t) = a_inf - A e^{-r t}, residual bootstrap CIs."""

from __future__ import annotations

import numpy as np

from si_bench.fit._coupled import r2
from si_bench.fit._vp import exp_basis, rate_bounds, vp_fit

N_PARAMS = 3


def fit_accuracy(t: np.ndarray, acc: np.ndarray, *, n_boot: int = 500, seed: int = 0) -> dict:
    """Returns {"limit": {estimate, ci95}, "rate": {...}, "amplitude", "r2"} (may contain non-finite floats)."""
    t = np.asarray(t, dtype=float)
    y = np.asarray(acc, dtype=float)
    if np.ptp(y) <= 0:
        return {"reason": "the accuracy series is constant: saturation fit undefined"}
    t0 = float(t.min())
    lo, hi = rate_bounds(t)
    basis = exp_basis(t0)
    r = vp_fit(t, y[None, :, None], basis, lo, hi)
    fitted = r.intercept[0, 0] + r.amplitude[0, 0] * basis(r.theta, t)[0]
    resid = y - fitted
    n = len(t)
    if n > N_PARAMS:
        resid = resid * np.sqrt(n / (n - N_PARAMS))
    rng = np.random.default_rng(seed)
    Yb = fitted[None] + resid[rng.integers(0, n, size=(n_boot, n))]
    rb = vp_fit(t, Yb[:, :, None], basis, lo, hi)

    def ci(a: np.ndarray) -> list[float]:
        a = a[np.isfinite(a)]
        return [float(v) for v in np.percentile(a, [2.5, 97.5])] if a.size else [float("nan")] * 2

    return {
        "limit": {"estimate": float(r.intercept[0, 0]), "ci95": ci(rb.intercept[:, 0])},
        "rate": {"estimate": float(r.theta[0]), "ci95": ci(rb.theta)},
        # acc = a_inf - A e^{-r t}: A is minus the fitted amplitude, referenced to t = 0
        "amplitude": float(-r.amplitude[0, 0] * np.exp(r.theta[0] * t0)),
        "r2": r2(y, fitted),
        "at_bound": bool(r.at_bound[0]),
    }

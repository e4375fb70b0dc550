"""Alternative laws the coupled model is compared with.

- separate_exp: U(t) = c + a exp(-r t), each series with its own rate r.
- power_law:    U(t) = c + a (t + 1)^(-p), each series with its own exponent p
                (shift 1 in units of t keeps t = 0 finite, larger if t < 0; fitted by variable projection).
- persistence:  the forecast is the last observed value; its in-sample r2 is that of the
                one-step-ahead forecast y_hat(t_i) = y(t_{i-1}).
"""

from __future__ import annotations

import numpy as np

from si_bench.fit._coupled import r2
from si_bench.fit._vp import exp_basis, power_basis, rate_bounds, vp_fit

SERIES = ("solver", "verifier")
POWER_SHIFT = 1.0
POWER_BOUNDS = (1e-3, 20.0)


def fit_separate_exp(t: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    """y (T, S): one exponential per column. Returns {series: {limit, amplitude, rate}} (amplitude at t = 0)."""
    t = np.asarray(t, dtype=float)
    t0 = float(t.min())
    lo, hi = rate_bounds(t)
    out = {}
    for j, name in enumerate(SERIES[: y.shape[1]]):
        r = vp_fit(t, y[None, :, j : j + 1], exp_basis(t0), lo, hi)
        lam = float(r.theta[0])
        out[name] = {"limit": float(r.intercept[0, 0]), "amplitude": float(r.amplitude[0, 0] * np.exp(lam * t0)),
                     "rate": lam}
    return out


def predict_separate_exp(params: dict[str, dict[str, float]], t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    return np.column_stack([p["limit"] + p["amplitude"] * np.exp(-p["rate"] * t) for p in params.values()])


def fit_power_law(t: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    t = np.asarray(t, dtype=float)
    shift = POWER_SHIFT if t.min() >= 0 else POWER_SHIFT - float(t.min())  # keep t + shift >= 1
    out = {}
    for j, name in enumerate(SERIES[: y.shape[1]]):
        r = vp_fit(t, y[None, :, j : j + 1], power_basis(shift), *POWER_BOUNDS)
        out[name] = {"limit": float(r.intercept[0, 0]), "amplitude": float(r.amplitude[0, 0]),
                     "exponent": float(r.theta[0]), "shift": shift}
    return out


def predict_power_law(params: dict[str, dict[str, float]], t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    return np.column_stack([p["limit"] + p["amplitude"] * (t + p["shift"]) ** (-p["exponent"])
                            for p in params.values()])


def fit_persistence(t: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    return {name: {"last": float(y[-1, j])} for j, name in enumerate(SERIES[: y.shape[1]])}


def predict_persistence(params: dict[str, dict[str, float]], t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    return np.column_stack([np.full(t.shape, p["last"]) for p in params.values()])


def alternatives(t: np.ndarray, y: np.ndarray) -> dict[str, dict]:
    """All alternative laws with params and per-series r2 (JSON-ready, may hold non-finite floats)."""
    t = np.asarray(t, dtype=float)
    out: dict[str, dict] = {}
    sep = fit_separate_exp(t, y)
    yh = predict_separate_exp(sep, t)
    out["separate_exp"] = {"params": sep, "r2": {n: r2(y[:, j], yh[:, j]) for j, n in enumerate(sep)}}
    pw = fit_power_law(t, y)
    yh = predict_power_law(pw, t)
    out["power_law"] = {"params": pw, "r2": {n: r2(y[:, j], yh[:, j]) for j, n in enumerate(pw)}}
    ps = fit_persistence(t, y)
    out["persistence"] = {"params": ps,
                          "r2": {n: r2(y[1:, j], y[:-1, j]) for j, n in enumerate(ps)},
                          "r2_kind": "one-step-ahead"}
    return out

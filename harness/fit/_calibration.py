"""Coverage of the 95% intervals, measured on simulated trajectories whose truth is known.

Design (one draw per trajectory), shaped like the paper's Phi-4-mini curves (solver amplitude ~0.85, verifier
amplitude ~0.4 of it) with limits away from 0 as in nats of total NLL:
    rate ~ U(0.35, 0.8) per step, t = 0 .. T-1
    A_s ~ U(0.5, 1.0), A_v = A_s * U(0.25, 0.6)          (alpha/beta = A_s/A_v in 1.7 .. 4)
    Uv_inf ~ U(0.3, 1.5), G_inf ~ U(0.05, 0.3), Us_inf = Uv_inf + G_inf
    noise: N(0, 0.02) per point and series, independent or AR(1) along t.
Accuracy: acc(t) = a_inf - A e^{-rate t}, a_inf ~ U(0.4, 0.9), A ~ U(0.15, 0.35), same rate and noise.
Each interval is counted twice: an open end (null) as a miss ("strict") and as covering ("lenient").
"""

from __future__ import annotations

import numpy as np

from si_bench.fit import _accuracy, _coupled

QUANTITIES = ("solver_limit", "verifier_limit", "gap_limit", "rate")


def draw_truth(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    a_s = rng.uniform(0.5, 1.0, n)
    uv = rng.uniform(0.3, 1.5, n)
    gap = rng.uniform(0.05, 0.3, n)
    return {"rate": rng.uniform(0.35, 0.8, n), "a_s": a_s, "a_v": a_s * rng.uniform(0.25, 0.6, n),
            "verifier_limit": uv, "gap_limit": gap, "solver_limit": uv + gap,
            "accuracy_limit": rng.uniform(0.4, 0.9, n), "accuracy_amplitude": rng.uniform(0.15, 0.35, n)}


def noise(rng: np.random.Generator, shape: tuple, sd: float, rho: float) -> np.ndarray:
    """(B, T, ...) noise, AR(1) with coefficient rho along axis 1 (stationary)."""
    z = rng.normal(0.0, sd, shape)
    for i in range(1, shape[1]):
        z[:, i] = rho * z[:, i - 1] + np.sqrt(1.0 - rho**2) * z[:, i]
    return z


def simulate(rng: np.random.Generator, truth: dict[str, np.ndarray], T: int, sd: float = 0.02,
             rho: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t (T,), uncertainties (B, T, 2) and accuracies (B, T) with noise."""
    t = np.arange(T, dtype=float)
    e = np.exp(-np.outer(truth["rate"], t))
    Y = np.stack([truth["solver_limit"][:, None] + truth["a_s"][:, None] * e,
                  truth["verifier_limit"][:, None] + truth["a_v"][:, None] * e], axis=-1)
    acc = truth["accuracy_limit"][:, None] - truth["accuracy_amplitude"][:, None] * e
    return t, Y + noise(rng, Y.shape, sd, rho), acc + noise(rng, acc.shape, sd, rho)


def _count(iv, truth: np.ndarray) -> dict[str, float]:
    lo_ok = (iv.lo <= truth) & ~iv.lo_open.astype(bool)
    hi_ok = (truth <= iv.hi) & ~iv.hi_open.astype(bool)
    return {"strict": float(np.mean(lo_ok & hi_ok)),
            "lenient": float(np.mean((lo_ok | iv.lo_open.astype(bool)) & (hi_ok | iv.hi_open.astype(bool)))),
            "open": float(np.mean(iv.lo_open.astype(bool) | iv.hi_open.astype(bool)))}


def coverage(T: int, n: int = 200, *, seed: int = 0, sd: float = 0.02, rho: float = 0.0) -> dict[str, dict]:
    """Coverage of the rate and limit intervals over n simulated trajectories of T points:
    {quantity: {"strict", "lenient", "open"}} for the coupled law and the accuracy limit ("accuracy_limit",
    "accuracy_rate")."""
    rng = np.random.default_rng(seed)
    truth = draw_truth(rng, n)
    t, Y, acc = simulate(rng, truth, T, sd, rho)
    iv, _, _ = _coupled.intervals_many(t, Y, _coupled.fit_many(t, Y))
    out = {q: _count(iv[q], truth[q]) for q in QUANTITIES}
    iv, _, _ = _accuracy.intervals_many(t, acc, _accuracy.fit_many(t, acc))
    out["accuracy_limit"] = _count(iv["limit"], truth["accuracy_limit"])
    out["accuracy_rate"] = _count(iv["rate"], truth["rate"])
    return out

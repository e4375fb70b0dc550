"""The paper's coupled model: one shared rate for solver and verifier uncertainty.

    U_s(t) = Us_inf + A_s exp(-lam t),   U_v(t) = Uv_inf + A_v exp(-lam t)

fitted by unweighted joint least squares (variable projection over lam).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import statsmodels.api as sm

from si_bench.fit._vp import exp_basis, rate_bounds, vp_fit

N_PARAMS = 5  # Us_inf, A_s, Uv_inf, A_v, lam
QUANTITIES = ("rate", "solver_limit", "verifier_limit", "gap_limit", "alpha_over_beta", "alpha_k", "beta_k")


def fit_many(t: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """Fit every replicate of Y (B, T, 2) at once. Amplitudes are referenced to t = 0."""
    t = np.asarray(t, dtype=float)
    t0 = float(t.min())
    lo, hi = rate_bounds(t)
    r = vp_fit(t, Y, exp_basis(t0), lo, hi)
    lam = r.theta
    scale = np.exp(lam * t0)  # A(t=0) = A(t0) * e^{lam t0}
    a_s = r.amplitude[:, 0] * scale
    a_v = r.amplitude[:, 1] * scale
    return {"lam": lam, "us_inf": r.intercept[:, 0], "uv_inf": r.intercept[:, 1],
            "a_s": a_s, "a_v": a_v, "rss": r.rss, "at_bound": r.at_bound}


def derived(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Identifiable quantities of the paper from the fitted curve parameters."""
    lam, a_s, a_v = p["lam"], p["a_s"], p["a_v"]
    delta = a_s - a_v
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "rate": lam,
            "solver_limit": p["us_inf"],
            "verifier_limit": p["uv_inf"],
            "gap_limit": p["us_inf"] - p["uv_inf"],
            "alpha_over_beta": a_s / a_v,
            "alpha_k": lam * a_s / delta,
            "beta_k": lam * a_v / delta,
            "delta": delta,
        }


def curves(p: dict[str, np.ndarray], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fitted (solver, verifier) curves, each (B, len(t))."""
    e = np.exp(-np.outer(p["lam"], np.asarray(t, dtype=float)))
    s = p["us_inf"][:, None] + p["a_s"][:, None] * e
    v = p["uv_inf"][:, None] + p["a_v"][:, None] * e
    return s, v


def r2(y: np.ndarray, yhat: np.ndarray) -> float:
    y = np.asarray(y, dtype=float)
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst <= 0:
        return float("nan")
    return 1.0 - float(np.sum((y - yhat) ** 2)) / sst


@dataclass
class CoupledFit:
    t: np.ndarray
    y: np.ndarray  # (T, 2)
    point: dict[str, float]  # curve params + derived quantities
    boot: dict[str, np.ndarray]  # same keys, arrays over replicates
    se: dict[str, float]
    r2: dict[str, float]
    bootstrap: str  # "residual" or "replicates"
    at_bound: bool
    notes: list[str] = field(default_factory=list)


def _statsmodels_se(t: np.ndarray, y: np.ndarray, p: dict[str, float]) -> dict[str, float]:
    """Asymptotic nonlinear-LS standard errors: OLS of the residuals on the model Jacobian
    at the optimum (Gauss-Newton step of zero), then the delta method for derived quantities."""
    lam, a_s, a_v = p["lam"], p["a_s"], p["a_v"]
    T = len(t)
    e = np.exp(-lam * t)
    zeros, ones = np.zeros(T), np.ones(T)
    # columns: us_inf, a_s, uv_inf, a_v, lam
    J = np.vstack([
        np.column_stack([ones, e, zeros, zeros, -a_s * t * e]),
        np.column_stack([zeros, zeros, ones, e, -a_v * t * e]),
    ])
    fitted = np.concatenate([p["us_inf"] + a_s * e, p["uv_inf"] + a_v * e])
    resid = np.concatenate([y[:, 0], y[:, 1]]) - fitted
    try:
        res = sm.OLS(resid, J).fit()
        cov = np.asarray(res.cov_params())
    except Exception:  # noqa: BLE001 - a singular Jacobian: no standard errors, the bootstrap still runs
        return {}
    if not np.all(np.isfinite(cov)):
        return {}
    theta = np.array([p["us_inf"], a_s, p["uv_inf"], a_v, lam])
    names = ["us_inf", "a_s", "uv_inf", "a_v", "lam"]

    def g(th: np.ndarray) -> np.ndarray:
        d = derived({k: np.array([v]) for k, v in zip(names, th)})
        return np.array([d[q][0] for q in QUANTITIES])

    g0 = g(theta)
    grad = np.empty((len(QUANTITIES), 5))
    for j in range(5):
        h = 1e-6 * max(abs(theta[j]), 1e-3)
        tp, tm = theta.copy(), theta.copy()
        tp[j] += h
        tm[j] -= h
        grad[:, j] = (g(tp) - g(tm)) / (2 * h)
    var = np.einsum("qi,ij,qj->q", grad, cov, grad)
    out = {}
    for q, v, g_ in zip(QUANTITIES, var, g0):
        out[q] = float(np.sqrt(v)) if np.isfinite(v) and v >= 0 and np.isfinite(g_) else float("nan")
    return out


def fit_coupled(t: np.ndarray, solver: np.ndarray, verifier: np.ndarray, *, gap_obs: np.ndarray | None = None,
                replicates: np.ndarray | None = None, n_boot: int = 500, seed: int = 0,
                inflate: bool = True) -> CoupledFit:
    t = np.asarray(t, dtype=float)
    y = np.column_stack([solver, verifier]).astype(float)
    T = len(t)
    pt = fit_many(t, y[None])
    point = {k: float(v[0]) for k, v in pt.items() if k != "at_bound"}
    point.update({k: float(v[0]) for k, v in derived(pt).items()})
    s_hat, v_hat = curves(pt, t)
    gap = (y[:, 0] - y[:, 1]) if gap_obs is None else np.asarray(gap_obs, dtype=float)
    r2s = {"solver": r2(y[:, 0], s_hat[0]), "verifier": r2(y[:, 1], v_hat[0]),
           "gap": r2(gap, s_hat[0] - v_hat[0])}

    if replicates is not None:
        Yb = np.asarray(replicates, dtype=float)
        kind = "replicates"
    else:
        rng = np.random.default_rng(seed)
        fitted = np.column_stack([s_hat[0], v_hat[0]])
        resid = y - fitted
        n, p = 2 * T, N_PARAMS
        if inflate and n > p:
            resid = resid * np.sqrt(n / (n - p))
        idx = rng.integers(0, T, size=(n_boot, T))
        Yb = fitted[None] + resid[idx]  # rows resampled jointly: keeps solver/verifier residual pairing
        kind = "residual"
    bp = fit_many(t, Yb) if len(Yb) else None
    boot: dict[str, np.ndarray] = {}
    if bp is not None:
        boot = {k: v for k, v in bp.items() if k != "at_bound"}
        boot.update(derived(bp))
    se = _statsmodels_se(t, y, point)
    return CoupledFit(t=t, y=y, point=point, boot=boot, se=se, r2=r2s, bootstrap=kind,
                      at_bound=bool(pt["at_bound"][0]))

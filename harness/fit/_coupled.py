"""The paper's coupled model: one shared rate for solver and verifier uncertainty.

    U_s(t) = Us_inf + A_s exp(-lam t),   U_v(t) = Uv_inf + A_v exp(-lam t)

fitted by joint least squares, weighted by 1 / se^2 when per-point standard errors are known (variable
projection over lam).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from si_bench.fit._intervals import MIN_POINTS_SERIAL, jacobian, residual_intervals, serial_inflation, with_replicates
from si_bench.fit._laws import any_law_intervals
from si_bench.fit._profile import Interval, profile_intervals
from si_bench.fit._vp import exp_basis, rate_bounds, vp_fit

N_PARAMS = 5  # Us_inf, A_s, Uv_inf, A_v, lam
CONTRASTS = {"solver_limit": (1.0, 0.0), "verifier_limit": (0.0, 1.0), "gap_limit": (1.0, -1.0)}
UNCERTAINTY_DOMAIN = (0.0, np.inf)  # an uncertainty is a negative log-likelihood
LIMIT_DOMAINS = {"solver_limit": UNCERTAINTY_DOMAIN, "verifier_limit": UNCERTAINTY_DOMAIN,
                 "gap_limit": (-np.inf, np.inf)}
METHOD_PROFILE = "profile likelihood, F-calibrated (df = 2T - 5), serial-correlation inflation"
METHOD_REPLICATES = "replicate-refit percentile (+) profile likelihood of the misfit the replicates leave"
QUANTITIES = ("rate", "solver_limit", "verifier_limit", "gap_limit", "alpha_over_beta", "alpha_k", "beta_k")


def fit_many(t: np.ndarray, Y: np.ndarray, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Fit every replicate of Y (B, T, 2) at once (weights: 1 / se^2, (T, 2) or (B, T, 2)). Amplitudes are
    referenced to t = 0."""
    t = np.asarray(t, dtype=float)
    t0 = float(t.min())
    lo, hi = rate_bounds(t)
    r = vp_fit(t, Y, exp_basis(t0), lo, hi, weights=weights)
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
    r2: dict[str, float]  # solver, verifier, gap = solver - verifier
    bootstrap: str  # "residual" or "replicates"
    at_bound: bool
    intervals: dict[str, Interval]  # rate and the limits, each over one trajectory
    interval_method: str
    serial: dict  # lag-1 residual autocorrelation (bias-corrected) and the variance inflation
    bounds: tuple[float, float]  # the rate's search range
    r2_gap_input: float | None = None  # against an input gap series, when one was given
    notes: list[str] = field(default_factory=list)
    # the limits under the law's uncertainty (_laws): the hull over the candidate laws not rejected, each law's
    # intervals, and the test ({"F", "rejected", "critical"}, B = 1)
    any_law: dict[str, Interval] = field(default_factory=dict)
    per_law: dict[str, dict[str, Interval]] = field(default_factory=dict)
    law_test: dict = field(default_factory=dict)
    weighted: bool = False


def _delta_se(t: np.ndarray, p: dict[str, float], w: np.ndarray | None = None) -> dict[str, float]:
    """Asymptotic nonlinear-LS standard errors, s^2 (J'J)^-1 at the optimum, then the delta method for the
    derived quantities. Amplitudes are taken at t0 = min(t) (the quantities do not depend on the reference)."""
    shift = np.exp(-p["lam"] * float(t.min()))
    theta = np.array([p["us_inf"], p["a_s"] * shift, p["uv_inf"], p["a_v"] * shift, p["lam"]])
    J = jacobian(t, theta[4:], theta[None, [1, 3]])[0]
    if w is not None:  # rows are (series, t); weights (t, series)
        J = J * np.sqrt(w.T.reshape(-1))[:, None]
    s2 = p["rss"] / (len(J) - N_PARAMS)
    cov = s2 * np.linalg.pinv(J.T @ J)
    names = ["us_inf", "a_s", "uv_inf", "a_v", "lam"]

    def g(th: np.ndarray) -> np.ndarray:
        d = derived({k: np.array([v]) for k, v in zip(names, th, strict=True)})
        return np.array([d[q][0] for q in QUANTITIES])

    grad = np.empty((len(QUANTITIES), 5))
    for j in range(5):
        h = 1e-6 * max(abs(theta[j]), 1e-3)
        tp, tm = theta.copy(), theta.copy()
        tp[j] += h
        tm[j] -= h
        grad[:, j] = (g(tp) - g(tm)) / (2 * h)
    with np.errstate(invalid="ignore"):
        var = np.einsum("qi,ij,qj->q", grad, cov, grad)
    return {q: float(np.sqrt(v)) if v >= 0 else float("nan") for q, v in zip(QUANTITIES, var, strict=True)}


def _amplitudes(p: dict[str, np.ndarray], t: np.ndarray) -> np.ndarray:
    """(B, 2) amplitudes of solver and verifier referenced to the first t, as jacobian() takes them."""
    return np.column_stack([p["a_s"], p["a_v"]]) * np.exp(-p["lam"] * float(np.min(t)))[:, None]


def intervals_many(t: np.ndarray, Y: np.ndarray, p: dict[str, np.ndarray], weights: np.ndarray | None = None):
    """Residual-based intervals of the rate and limits for B trajectories Y (B, T, 2) fitted as p (fit_many)."""
    s, v = curves(p, t)
    resid = Y - np.stack([s, v], axis=-1)
    return residual_intervals(t, Y, p["lam"], _amplitudes(p, t), resid, rate_bounds(t), CONTRASTS,
                              UNCERTAINTY_DOMAIN, weights=weights)


def _replicate_intervals(t, y, pt, point, boot: dict, misfit_scale: float, weights=None) -> dict[str, Interval]:
    misfit = profile_intervals(t, y[None], pt["lam"], rate_bounds(t), CONTRASTS, rss_scale=misfit_scale,
                               domain=UNCERTAINTY_DOMAIN, weights=weights)
    diverge = {"solver_limit": -np.sign(point["a_s"]), "verifier_limit": -np.sign(point["a_v"]),
               "gap_limit": -np.sign(point["delta"])}
    return with_replicates(point, boot, misfit, rate_bounds(t), diverge, LIMIT_DOMAINS)


def _serial_json(rho: float, inflation: float) -> dict:
    out: dict[str, float | str | None] = {"lag1_autocorrelation": rho if np.isfinite(rho) else None,
                                          "variance_inflation": inflation}
    if not np.isfinite(rho):
        out["reason"] = f"not estimated below {MIN_POINTS_SERIAL} points"
    return out


def fit_coupled(t: np.ndarray, solver: np.ndarray, verifier: np.ndarray, *, gap_obs: np.ndarray | None = None,
                replicates: np.ndarray | None = None, n_boot: int = 500, seed: int = 0,
                se: np.ndarray | None = None) -> CoupledFit:
    """se (T, 2): per-point standard errors of (solver, verifier); the fit is then weighted by 1 / se^2."""
    t = np.asarray(t, dtype=float)
    y = np.column_stack([solver, verifier]).astype(float)
    T = len(t)
    w = None if se is None else 1.0 / np.asarray(se, dtype=float) ** 2
    pt = fit_many(t, y[None], weights=w)
    point = {k: float(v[0]) for k, v in pt.items() if k != "at_bound"}
    point.update({k: float(v[0]) for k, v in derived(pt).items()})
    s_hat, v_hat = curves(pt, t)
    r2s = {"solver": r2(y[:, 0], s_hat[0]), "verifier": r2(y[:, 1], v_hat[0]),
           "gap": r2(y[:, 0] - y[:, 1], s_hat[0] - v_hat[0])}
    fitted = np.column_stack([s_hat[0], v_hat[0]])
    unit = np.ones_like(y) if w is None else np.sqrt(w)  # residuals on the scale of 1 / se
    if replicates is not None:
        Yb = np.asarray(replicates, dtype=float)
        kind = "replicates"
    else:
        rng = np.random.default_rng(seed)
        resid = (y - fitted) * unit * np.sqrt(2 * T / (2 * T - N_PARAMS))
        idx = rng.integers(0, T, size=(n_boot, T))
        Yb = fitted[None] + resid[idx] / unit  # rows resampled jointly: keeps solver/verifier residual pairing
        kind = "residual"
    boot: dict[str, np.ndarray] = {}
    if len(Yb):
        bp = fit_many(t, Yb, weights=w)
        boot = {k: v for k, v in bp.items() if k != "at_bound"}
        boot.update(derived(bp))
    if kind == "replicates" and boot:
        rho, inflation = serial_inflation(t, (y - fitted)[None], pt["lam"], _amplitudes(pt, t), w)
        rep_var = float(np.mean(np.var(Yb, axis=0) * unit**2))
        res_var = point["rss"] / (2 * T - N_PARAMS)
        excess = max(res_var * inflation[0] - rep_var, 0.0) / res_var if res_var > 0 else 0.0
        iv = _replicate_intervals(t, y, pt, point, boot, excess, w)
        method = METHOD_REPLICATES
    else:
        iv, rho, inflation = intervals_many(t, y[None], pt, weights=w)
        method = METHOD_PROFILE
    hull, per_law, test = any_law_intervals(t, y[None], pt["rss"], iv, domain=UNCERTAINTY_DOMAIN,
                                            inflation=inflation, weights=w)
    return CoupledFit(t=t, y=y, point=point, boot=boot, se=_delta_se(t, point, w), r2=r2s, bootstrap=kind,
                      at_bound=bool(pt["at_bound"][0]), intervals=iv, interval_method=method,
                      serial=_serial_json(float(rho[0]), float(inflation[0])),
                      bounds=rate_bounds(t),
                      r2_gap_input=None if gap_obs is None else r2(gap_obs, s_hat[0] - v_hat[0]),
                      any_law=hull, per_law=per_law, law_test=test, weighted=w is not None)

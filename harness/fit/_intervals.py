"""95% intervals of the exponential laws' rate and limits, chosen by measured coverage (see _calibration).

Without replicates: the F-based profile-likelihood interval (_profile) on the residual variance, inflated
by (1 + rho) / (1 - rho) when the residuals are serially correlated (rho: lag-1 autocorrelation of the
residuals, less the value independent errors give through the fit itself; estimated from >= 8 points).

With replicates (B, T, S) that resample what was measured (prompts, seed runs): the percentile interval of
the replicate refits, widened in quadrature by the profile interval of the misfit the replicates do not
explain (residual variance beyond the replicates' pointwise variance).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from si_bench.fit._profile import DOMAIN_EDGE, SEARCH_BOUND, Interval, profile_intervals

MIN_POINTS_SERIAL = 8  # below this the fit's parameters absorb any residual autocorrelation
MAX_RHO = 0.9
COVERAGE_NOTE = ("rate and limits: coverage measured on simulated trajectories of the law, 5-20 points, "
                 "independent noise (si_bench.fit._calibration, bench/bench_coverage.py); the published limits "
                 "also on power-law, two-rate, heteroscedastic and AR(1) truths (bench/bench_law_coverage.py)")


def jacobian(t: np.ndarray, lam: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """(B, S*T, 2S+1) Jacobian of the stacked series in (c_1, a_1, ..., c_S, a_S, lam), a referenced to t0."""
    B, S = amp.shape
    T = len(t)
    u = t - t.min()
    x = np.exp(-lam[:, None] * u)  # (B, T)
    J = np.zeros((B, S, T, 2 * S + 1))
    for s in range(S):
        J[:, s, :, 2 * s] = 1.0
        J[:, s, :, 2 * s + 1] = x
        J[:, s, :, -1] = -amp[:, s, None] * u * x
    return J.reshape(B, S * T, 2 * S + 1)


def serial_rho(t: np.ndarray, resid: np.ndarray, lam: np.ndarray, amp: np.ndarray,
               weights: np.ndarray | None = None) -> np.ndarray:
    """Lag-1 autocorrelation of the residuals (B, T, S) within each series, minus its value under independent
    errors, tr(M L) / tr(M) with M = I - H the residual projection of the linearised fit (both on the scale
    of 1 / se when weights 1 / se^2 are given)."""
    B, T, S = resid.shape
    J = jacobian(t, lam, amp)
    if weights is not None:
        sw = np.sqrt(np.broadcast_to(np.asarray(weights, dtype=float).reshape(-1, T, S), resid.shape))
        resid = resid * sw
        J = J * np.swapaxes(sw, 1, 2).reshape(-1, S * T)[:, :, None]
    rho = np.einsum("bts,bts->b", resid[:, 1:], resid[:, :-1]) / np.maximum(
        np.einsum("bts,bts->b", resid, resid), 1e-300)
    M = np.eye(S * T)[None] - J @ np.linalg.pinv(J)
    lag = np.kron(np.eye(S), np.eye(T, k=1))
    rho0 = np.einsum("bij,ji->b", M, lag) / np.einsum("bii->b", M)
    return rho - rho0


def serial_inflation(t: np.ndarray, resid: np.ndarray, lam: np.ndarray, amp: np.ndarray,
                     weights: np.ndarray | None = None):
    """(rho, inflation) of the residual variance for B fits (see serial_rho); rho is NaN and the inflation 1
    below MIN_POINTS_SERIAL points."""
    if len(t) < MIN_POINTS_SERIAL:
        return np.full(len(lam), np.nan), np.ones(len(lam))
    rho = serial_rho(t, resid, lam, amp, weights)
    r = np.clip(rho, 0.0, MAX_RHO)
    return rho, (1.0 + r) / (1.0 - r)


def residual_intervals(t: np.ndarray, Y: np.ndarray, lam: np.ndarray, amp: np.ndarray, resid: np.ndarray,
                       bounds: tuple[float, float], contrasts: dict, domain: tuple[float, float],
                       weights: np.ndarray | None = None):
    """Profile intervals for B trajectories Y (B, T, S) with fitted rates lam (B,), amplitudes amp (B, S)
    and residuals (B, T, S), weighted by 1 / se^2 when weights are given. Returns (intervals, rho, inflation)."""
    rho, inflation = serial_inflation(t, resid, lam, amp, weights)
    iv = profile_intervals(t, Y, lam, bounds, contrasts, rss_scale=inflation, domain=domain, weights=weights)
    return iv, rho, inflation


def with_replicates(est: dict[str, float], boot: dict[str, np.ndarray], misfit: dict[str, Interval],
                    bounds: tuple[float, float], diverge: dict[str, int],
                    domains: dict[str, tuple[float, float]]) -> dict[str, Interval]:
    """One trajectory: for each quantity of misfit ("rate" and limits) combine the percentile interval of the
    replicate refits boot[q] with the misfit profile interval. diverge[q] = -1 (+1) when the lower (upper)
    end of limit q runs off as the rate -> 0; domains[q] the range of limit q."""
    lam = boot["rate"][np.isfinite(boot["rate"])]
    slow = lam.size == 0 or np.mean(lam <= bounds[0] * (1 + 1e-3)) > 0.025
    fast = lam.size == 0 or np.mean(lam >= bounds[1] * (1 - 1e-3)) > 0.025
    out = {}
    for q, m in misfit.items():
        b = boot[q][np.isfinite(boot[q])]
        lo_r, hi_r = np.percentile(b, [2.5, 97.5]) if b.size else (-np.inf, np.inf)
        e = est[q]
        lo = e - np.hypot(max(e - lo_r, 0.0), max(e - float(m.lo[0]), 0.0))
        hi = e + np.hypot(max(hi_r - e, 0.0), max(float(m.hi[0]) - e, 0.0))
        lo_open, hi_open = int(m.lo_open[0]), int(m.hi_open[0])
        if q == "rate":
            lo_open, hi_open = (SEARCH_BOUND if slow else lo_open), (SEARCH_BOUND if fast else hi_open)
            d_lo, d_hi = bounds
        else:
            lo_open = SEARCH_BOUND if slow and diverge[q] < 0 else lo_open
            hi_open = SEARCH_BOUND if slow and diverge[q] > 0 else hi_open
            d_lo, d_hi = domains[q]
        edge = SEARCH_BOUND if q == "rate" else DOMAIN_EDGE
        lo_open = edge if lo <= d_lo and not lo_open else lo_open
        hi_open = edge if hi >= d_hi and not hi_open else hi_open
        out[q] = Interval(lo=np.array([max(lo, d_lo)]), hi=np.array([min(hi, d_hi)]),
                          lo_open=np.array([lo_open]), hi_open=np.array([hi_open]))
    return out


def interval_json(est: float, iv: Interval, *, kind: str, domain: tuple[float, float], bounds: tuple[float, float],
                  method: str) -> dict:
    """{estimate, ci95, method[, unbounded, reason]} of one interval (B = 1): an end the data do not determine
    is null, with why in `unbounded` and `reason`. A limit outside its domain, or with neither end determined,
    has no estimate."""
    ends: list[float | None] = [float(iv.lo[0]), float(iv.hi[0])]
    why: dict[str, str] = {}
    for i, side in enumerate(("low", "high")):
        code = int((iv.lo_open, iv.hi_open)[i][0])
        if code == SEARCH_BOUND and kind == "rate":
            why[side] = (f"its interval reaches the search bound {bounds[i]:.4g} (the rate may be arbitrarily "
                         f"{('slow', 'fast')[i]})")
        elif code == SEARCH_BOUND:
            why[side] = "the rate's interval reaches its lower search bound, where the limit runs off to infinity"
        elif code == DOMAIN_EDGE:
            why[side] = f"every value {('down', 'up')[i]} to the domain edge {domain[i]:g} fits the data"
        if code:
            ends[i] = None
    out: dict[str, Any] = {"estimate": est, "ci95": ends, "method": method}
    reasons = [f"{side} end not determined: {w}" for side, w in why.items()]
    if kind == "limit" and not domain[0] <= est <= domain[1]:
        out["estimate"] = None
        reasons.insert(0, f"no limit identified: the fitted value {est:.4g} is outside the domain "
                          f"[{domain[0]:g}, {domain[1]:g}]")
    elif kind == "limit" and len(why) == 2:
        out["estimate"] = None
        reasons.insert(0, "no limit identified: neither end of its interval is determined by the data")
    if why:
        out["unbounded"] = why
    if reasons:
        out["reason"] = "; ".join(reasons)
    return out

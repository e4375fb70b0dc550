"""F-based profile-likelihood intervals for the exponential laws, vectorised over trajectories.

Each of S series is y_s(t) = c_s + a_s x(lam, t), x = exp(-lam (t - t0)), all sharing lam. For a fixed lam
the model is linear and the series separate, so a quantity q = sum_s w_s c_s (a limit, or the gap
c_0 - c_1) has the exact constrained residual sum of squares
    RSS(lam, q) = RSS(lam) + (q - q_hat(lam))^2 / v(lam),   v(lam) = sum_s w_s^2 (1/T + xbar^2 / Sxx).
The 95% set {q: min_lam RSS(lam, q) <= thr}, thr = RSS_min (1 + F_{1,df}(0.95) / df), df = S T - (2S + 1),
is the hull over lam of q_hat(lam) +- sqrt((thr - RSS(lam)) v(lam)); the rate's set is {lam: RSS(lam) <= thr}.

The limits' domain (uncertainty >= 0, accuracy in [0, 1]) is imposed: a limit outside it adds its distance^2 / v
to RSS(lam). This is what bounds slow rates: as lam -> 0 a decaying series' limit runs off to -infinity.
An end is open (not determined by the data) when it reaches a rate search bound (rate) or the lower rate bound
(limits: the limit diverges there), or when it is cut by the domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from si_bench.fit._vp import wls

N_GRID = 400  # global log grid over the rate's search range
N_LOCAL = 200  # extra points inside the rate's set, where the limits' extremes lie
N_BISECT = 40
CLOSED, SEARCH_BOUND, DOMAIN_EDGE = 0, 1, 2  # how an interval end is determined


@dataclass
class Interval:
    lo: np.ndarray  # (B,)
    hi: np.ndarray
    lo_open: np.ndarray  # (B,) int: CLOSED, SEARCH_BOUND or DOMAIN_EDGE
    hi_open: np.ndarray


def threshold_factor(df: int, level: float = 0.95) -> float:
    """thr / RSS_min for the F-based profile set."""
    from scipy import stats  # imported when first used: the CLI starts without it

    return 1.0 + float(stats.f.ppf(level, 1, df)) / df


def exp_rows(t: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """exp(-lam (t - t0)) for lam (B, L): (B, L, T)."""
    return np.exp(-lam[..., None] * (t - t.min()))


def _by_lam(t: np.ndarray, Y: np.ndarray, lam: np.ndarray, domain: tuple[float, float], basis=exp_rows, W=None):
    """Fits for every (replicate, lam), lam (B, L): per-series RSS plus the domain penalty (B, S, L),
    intercepts c (B, S, L) and an intercept's variance factor 1/sum(w) + xbar^2/Sxx (B, S, L)."""
    rss, c, _, vc = wls(basis(t, lam), Y, W)
    pen = (c - np.clip(c, *domain)) ** 2 / vc
    rss = np.where(np.isfinite(rss), np.maximum(rss, 0.0), np.inf)
    return rss, np.where(np.isfinite(pen), pen, np.inf), c, vc


def _total(t, Y, lam, domain, basis=exp_rows, W=None) -> np.ndarray:
    rss, pen, _, _ = _by_lam(t, Y, lam, domain, basis, W)
    return (rss + pen).sum(axis=1)


def profile_intervals(t: np.ndarray, Y: np.ndarray, lam_hat: np.ndarray, bounds: tuple[float, float],
                      contrasts: Mapping[str, tuple[float, ...]], *, level: float = 0.95,
                      rss_scale: float | np.ndarray = 1.0,
                      domain: tuple[float, float] = (-np.inf, np.inf), basis=exp_rows,
                      weights: np.ndarray | None = None, rss_min: np.ndarray | None = None) -> dict[str, Interval]:
    """Y (B, T, S) data, lam_hat (B,) the fitted rates, bounds the rate search range, contrasts: name -> weights
    over the S limits, domain: the range of each limit. rss_scale (scalar or (B,)) multiplies the residual
    variance the set stands for. basis(t, lam (B, L)) -> (B, L, T) the decay shared by the series (default
    exp(-lam (t - t0)); lam is then any nonlinear parameter, e.g. a power law's exponent); weights (B, T, S)
    or (T, S): 1 / se^2 per point; rss_min (B,): the best RSS of a wider family this basis is one member of
    (the set is then relative to it, and empty where this member fits worse than the threshold: lo > hi).
    Returns {"rate": Interval, name: Interval, ...}."""
    t = np.asarray(t, dtype=float)
    Y = np.asarray(Y, dtype=float)
    B, T, S = Y.shape
    W = None if weights is None else np.broadcast_to(np.asarray(weights, dtype=float).reshape(-1, T, S), Y.shape)
    lam_hat = np.asarray(lam_hat, dtype=float)
    grid = np.exp(np.linspace(np.log(bounds[0]), np.log(bounds[1]), N_GRID))
    rss_g = _total(t, Y, np.broadcast_to(grid, (B, N_GRID)), domain, basis, W)
    own = np.minimum(rss_g.min(axis=1), _total(t, Y, lam_hat[:, None], domain, basis, W)[:, 0])
    rss_min = own if rss_min is None else np.minimum(own, rss_min)
    thr = rss_min * (1.0 + (threshold_factor(S * T - (2 * S + 1), level) - 1.0) * rss_scale)
    rate = _rate_interval(t, Y, grid, rss_g <= thr[:, None], lam_hat, thr, domain, basis, W)
    local = np.exp(np.linspace(np.log(rate.lo), np.log(rate.hi), N_LOCAL, axis=1))
    lam = np.concatenate([np.broadcast_to(grid, (B, N_GRID)), local, lam_hat[:, None]], axis=1)
    rss, pen, c, vc = _by_lam(t, Y, lam, domain, basis, W)
    inside = (rss + pen).sum(axis=1) <= thr[:, None] * (1 + 1e-9) + 1e-300
    at_lower = lam <= grid[0]
    out = {"rate": rate}
    for name, w in contrasts.items():
        out[name] = _contrast(np.asarray(w, dtype=float), rss, pen, c, vc, thr, inside, at_lower, domain)
    return out


def _contrast(w, rss, pen, c, vc, thr, inside, at_lower, domain) -> Interval:
    """Hull over lam of the set of w.c; the penalties of the series w involves are replaced by the exact
    constraint when w is one limit (clipping to the domain), and dropped (a wider set) otherwise."""
    others = (w == 0)[None, :, None]
    slack = thr[:, None] - rss.sum(axis=1) - np.where(others, pen, 0.0).sum(axis=1)
    hw = np.sqrt(np.where(inside, slack, 0.0).clip(min=0.0) * np.einsum("s,bsl->bl", w * w, vc))
    q = np.einsum("s,bsl->bl", w, c)
    low, high = np.where(inside, q - hw, np.inf), np.where(inside, q + hw, -np.inf)
    rows = np.arange(len(thr))
    i_lo, i_hi = np.argmin(low, axis=1), np.argmax(high, axis=1)
    lo, hi = low[rows, i_lo], high[rows, i_hi]
    lo_open = np.where(at_lower[rows, i_lo], SEARCH_BOUND, CLOSED)
    hi_open = np.where(at_lower[rows, i_hi], SEARCH_BOUND, CLOSED)
    if np.count_nonzero(w) == 1:
        d_lo, d_hi = sorted(float(np.sum(w)) * np.asarray(domain))
        lo_open = np.where(lo <= d_lo, DOMAIN_EDGE, lo_open)
        hi_open = np.where(hi >= d_hi, DOMAIN_EDGE, hi_open)
        lo, hi = np.maximum(lo, d_lo), np.minimum(hi, d_hi)
    return Interval(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def _rate_interval(t, Y, grid, inside, lam_hat, thr, domain, basis, W) -> Interval:
    """Hull of {lam: RSS(lam) <= thr}: each end bisected on log lam between the outermost point inside
    (a grid point or lam_hat) and its outer grid neighbour."""
    L = len(grid)
    any_in = inside.any(axis=1)
    first = np.where(any_in, np.argmax(inside, axis=1), L - 1)
    last = np.where(any_in, L - 1 - np.argmax(inside[:, ::-1], axis=1), 0)
    lo_in, hi_in = np.minimum(grid[first], lam_hat), np.maximum(grid[last], lam_hat)
    lo_out = grid[np.clip(np.searchsorted(grid, lo_in) - 1, 0, L - 1)]
    hi_out = grid[np.clip(np.searchsorted(grid, hi_in, side="right"), 0, L - 1)]
    lo_open = np.where(lo_in <= grid[0], SEARCH_BOUND, CLOSED)
    hi_open = np.where(hi_in >= grid[-1], SEARCH_BOUND, CLOSED)
    lo, hi = _bisect(t, Y, np.log(lo_in), np.log(lo_out), np.log(hi_in), np.log(hi_out), thr, domain, basis, W)
    return Interval(lo=np.where(lo_open, grid[0], lo), hi=np.where(hi_open, grid[-1], hi),
                    lo_open=lo_open, hi_open=hi_open)


def _bisect(t, Y, lo_in, lo_out, hi_in, hi_out, thr: np.ndarray, domain, basis, W):
    """Crossings of RSS(lam) = thr between log lam *_in (inside) and *_out (outside), per replicate: the low and
    the high end in one pass (lam (B, 2))."""
    a_in, b_out = np.column_stack([lo_in, hi_in]), np.column_stack([lo_out, hi_out])
    for _ in range(N_BISECT):
        m = 0.5 * (a_in + b_out)
        ok = _total(t, Y, np.exp(m), domain, basis, W) <= thr[:, None]
        a_in, b_out = np.where(ok, m, a_in), np.where(ok, b_out, m)
    return np.exp(a_in[:, 0]), np.exp(a_in[:, 1])

"""Variable-projection least squares, vectorised over bootstrap replicates.

Model for each of S series sharing one nonlinear parameter theta:
    y_s(t) = c_s + a_s * f(theta, t)
For fixed theta the model is linear in (c_s, a_s); the profiled residual sum of
squares is minimised over theta by a log-spaced grid followed by a vectorised
golden-section refinement between the grid neighbours of the best grid point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Basis = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (theta (L,), t (T,)) -> (L, T)

_GOLD = (np.sqrt(5.0) - 1.0) / 2.0


@dataclass
class VPResult:
    theta: np.ndarray  # (B,)
    intercept: np.ndarray  # (B, S)
    amplitude: np.ndarray  # (B, S)
    rss: np.ndarray  # (B,)
    at_bound: np.ndarray  # (B,) bool: optimum at an end of the search range


def _profile(X: np.ndarray, Yc: np.ndarray, syy: np.ndarray):
    """X (B, T) basis per replicate; Yc (B, S, T) centred data; syy (B,) total centred SS."""
    xbar = X.mean(axis=1, keepdims=True)
    xc = X - xbar
    sxx = (xc * xc).sum(axis=1)
    sxx = np.where(sxx > 1e-300, sxx, np.nan)
    sxy = (Yc * xc[:, None, :]).sum(axis=2)
    rss = syy - (sxy**2).sum(axis=-1) / sxx
    return rss, sxy, sxx, xbar[:, 0]


def _vp_unweighted(t: np.ndarray, Y: np.ndarray, basis: Basis, lo: float, hi: float,
                   n_grid: int = 96, n_iter: int = 22) -> VPResult:
    """vp_fit without weights: one centring of the basis serves every series (the fast path)."""
    t = np.asarray(t, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 2:
        Y = Y[:, :, None]
    B, T, S = Y.shape
    ybar = Y.mean(axis=1, keepdims=True)
    Yc = np.ascontiguousarray(np.swapaxes(Y - ybar, 1, 2))  # (B, S, T)
    syy = (Yc * Yc).sum(axis=(1, 2))

    grid = np.exp(np.linspace(np.log(lo), np.log(hi), n_grid))
    Xg = basis(grid, t)  # (L, T)
    xc = Xg - Xg.mean(axis=1, keepdims=True)
    sxx = np.einsum("lt,lt->l", xc, xc)
    sxx = np.where(sxx > 1e-300, sxx, np.nan)
    sxy = np.matmul(Yc, xc.T)  # (B, S, L)
    rss_grid = syy[:, None] - (sxy**2).sum(axis=1) / sxx[None, :]
    rss_grid = np.where(np.isfinite(rss_grid), rss_grid, np.inf)
    best = np.argmin(rss_grid, axis=1)

    def f(logtheta: np.ndarray) -> np.ndarray:
        X = basis_rows(basis, np.exp(logtheta), t)
        r, *_ = _profile(X, Yc, syy)
        return np.where(np.isfinite(r), r, np.inf)

    logtheta = _golden_refine(f, grid, rss_grid, best, n_iter)

    theta = np.exp(logtheta)
    X = basis_rows(basis, theta, t)
    rss, sxy_b, sxx_b, xbar = _profile(X, Yc, syy)
    amp = sxy_b / sxx_b[:, None]
    inter = ybar[:, 0, :] - amp * xbar[:, None]
    at_bound = _at_bound(logtheta, grid)
    return VPResult(theta=theta, intercept=inter, amplitude=amp, rss=rss, at_bound=at_bound)



def _golden_refine(f, grid: np.ndarray, rss_grid: np.ndarray, best: np.ndarray, n_iter: int) -> np.ndarray:
    """Each replicate's log-rate refined by golden-section search between the best grid point's neighbours;
    never worse than that grid point."""
    lg = np.log(grid)
    a = lg[np.clip(best - 1, 0, len(grid) - 1)]
    b = lg[np.clip(best + 1, 0, len(grid) - 1)]
    c = b - _GOLD * (b - a)
    d = a + _GOLD * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(n_iter):
        left = fc < fd
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        new_c = b - _GOLD * (b - a)
        new_d = a + _GOLD * (b - a)
        # keep the surviving interior point, evaluate only one new point per replicate
        c_next = np.where(left, new_c, d)
        d_next = np.where(left, c, new_d)
        f_new = f(np.where(left, new_c, new_d))
        fc, fd = np.where(left, f_new, fd), np.where(left, fc, f_new)
        c, d = c_next, d_next
    logtheta = np.where(fc < fd, c, d)
    use_grid = rss_grid[np.arange(len(best)), best] < f(logtheta)
    return np.where(use_grid, lg[best], logtheta)


def _at_bound(logtheta: np.ndarray, grid: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Replicates whose rate ended at the edge of the search range (not identified from inside it)."""
    return (logtheta <= np.log(grid[0]) + tol) | (logtheta >= np.log(grid[-1]) - tol)

def wls(X: np.ndarray, Y: np.ndarray, W: np.ndarray | None):
    """Per-series weighted least squares of y = c + a x for every basis row: X (B, L, T) or (L, T) shared by
    all B, Y (B, T, S), W (B, T, S) weights (1 / se^2; None: all 1). Returns rss, c, a and the intercept's
    variance factor vc = 1/sum(w) + xbar^2 / Sxx (times the residual variance per unit weight), each (B, S, L)."""
    B, T, S = Y.shape
    if W is None:  # one centring of x serves every series
        xbar = X.mean(axis=-1)
        xc = X - xbar[..., None]
        sxx = np.einsum("...lt,...lt->...l", xc, xc)
        ybar = Y.mean(axis=1)
        Yc = Y - ybar[:, None, :]
        sxy = np.einsum("blt,bts->bsl", xc, Yc) if X.ndim == 3 else np.einsum("lt,bts->bsl", xc, Yc)
        xbar = np.broadcast_to(xbar, (B, xbar.shape[-1]))[:, None, :]
        sxx = np.broadcast_to(sxx, (B, sxx.shape[-1]))[:, None, :]
        sw = np.full((B, S), float(T))
        syy = np.einsum("bts,bts->bs", Yc, Yc)
    else:
        Xb = X if X.ndim == 3 else X[None]
        sw = W.sum(axis=1)  # (B, S)
        ybar = (W * Y).sum(axis=1) / sw
        Yc = Y - ybar[:, None, :]
        WYc = W * Yc
        xbar = np.einsum("bts,blt->bsl", W, np.broadcast_to(Xb, (B,) + Xb.shape[1:])) / sw[:, :, None]
        sx2 = np.einsum("bts,blt->bsl", W, np.broadcast_to(Xb * Xb, (B,) + Xb.shape[1:]))
        sxx = sx2 - sw[:, :, None] * xbar**2
        sxx = np.where(sxx > 1e-12 * np.maximum(sx2, 1e-300), sxx, 0.0)
        sxy = np.einsum("bts,blt->bsl", WYc, np.broadcast_to(Xb, (B,) + Xb.shape[1:]))
        syy = np.einsum("bts,bts->bs", WYc, Yc)
    sxx = np.where(sxx > 1e-300, sxx, np.nan)
    a = sxy / sxx
    rss = syy[:, :, None] - sxy * a
    c = ybar[:, :, None] - a * xbar
    vc = 1.0 / sw[:, :, None] + xbar**2 / sxx
    return rss, c, a, vc


def _rss(X: np.ndarray, Y: np.ndarray, W: np.ndarray | None) -> np.ndarray:
    rss = wls(X, Y, W)[0].sum(axis=1)
    return np.where(np.isfinite(rss), np.maximum(rss, 0.0), np.inf)


def vp_fit(t: np.ndarray, Y: np.ndarray, basis: Basis, lo: float, hi: float,
           n_grid: int = 96, n_iter: int = 22, weights: np.ndarray | None = None) -> VPResult:
    """Fit all replicates in Y (B, T, S) at once; theta searched in [lo, hi] on a log scale. weights (B, T, S)
    or (T, S): 1 / se^2 per point (None: unweighted)."""
    t = np.asarray(t, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 2:
        Y = Y[:, :, None]
    if weights is None:
        return _vp_unweighted(t, Y, basis, lo, hi, n_grid, n_iter)
    B, T, S = Y.shape
    W = None if weights is None else np.broadcast_to(np.asarray(weights, dtype=float).reshape(-1, T, S), Y.shape)

    grid = np.exp(np.linspace(np.log(lo), np.log(hi), n_grid))
    rss_grid = _rss(basis(grid, t), Y, W)
    best = np.argmin(rss_grid, axis=1)

    def f(logtheta: np.ndarray) -> np.ndarray:
        return _rss(basis_rows(basis, np.exp(logtheta), t)[:, None, :], Y, W)[:, 0]

    logtheta = _golden_refine(f, grid, rss_grid, best, n_iter)

    theta = np.exp(logtheta)
    rss, inter, amp, _ = wls(basis_rows(basis, theta, t)[:, None, :], Y, W)
    at_bound = _at_bound(logtheta, grid)
    return VPResult(theta=theta, intercept=inter[:, :, 0], amplitude=amp[:, :, 0],
                    rss=np.maximum(rss.sum(axis=1)[:, 0], 0.0), at_bound=at_bound)


def basis_rows(basis: Basis, theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Evaluate basis at one theta per row: returns (B, T)."""
    return basis(np.asarray(theta, dtype=float), t)


def exp_basis(t0: float) -> Basis:
    """exp(-lam (t - t0)); referencing t0 = min(t) keeps the basis well scaled."""

    def f(lam: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.exp(-np.outer(lam, t - t0))

    return f


def power_basis(shift: float) -> Basis:
    """(t + shift)^(-p)."""

    def f(p: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.exp(-np.outer(p, np.log(t + shift)))

    return f


def rate_bounds(t: np.ndarray) -> tuple[float, float]:
    """Search range for an exponential rate, per unit of t."""
    ts = np.unique(np.asarray(t, dtype=float))
    span = float(ts[-1] - ts[0])
    min_dt = float(np.min(np.diff(ts)))
    return 1e-3 / span, max(30.0 / span, 8.0 / min_dt)

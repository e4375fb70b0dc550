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


def vp_fit(t: np.ndarray, Y: np.ndarray, basis: Basis, lo: float, hi: float,
           n_grid: int = 96, n_iter: int = 22) -> VPResult:
    """Fit all replicates in Y (B, T, S) at once; theta searched in [lo, hi] on a log scale."""
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

    lg = np.log(grid)
    a = lg[np.clip(best - 1, 0, n_grid - 1)]
    b = lg[np.clip(best + 1, 0, n_grid - 1)]

    def f(logtheta: np.ndarray) -> np.ndarray:
        X = basis_rows(basis, np.exp(logtheta), t)
        r, *_ = _profile(X, Yc, syy)
        return np.where(np.isfinite(r), r, np.inf)

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
    # never do worse than the best grid point
    r_ref = f(logtheta)
    g_best = rss_grid[np.arange(B), best]
    use_grid = g_best < r_ref
    logtheta = np.where(use_grid, lg[best], logtheta)

    theta = np.exp(logtheta)
    X = basis_rows(basis, theta, t)
    rss, sxy_b, sxx_b, xbar = _profile(X, Yc, syy)
    amp = sxy_b / sxx_b[:, None]
    inter = ybar[:, 0, :] - amp * xbar[:, None]
    tol = 1e-3
    at_bound = (logtheta <= lg[0] + tol) | (logtheta >= lg[-1] - tol)
    return VPResult(theta=theta, intercept=inter, amplitude=amp, rss=rss, at_bound=at_bound)


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

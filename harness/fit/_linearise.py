"""Linearisation check of the gap dynamics: OLS of the gap increment on the gap.

With constant spacing h the exact discrete form of dG/dt = -lam (G - G_inf) is
    G_{i+1} - G_i = (1 - e^{-lam h}) (G_inf - G_i) = c0 + c1 G_i,
so c1 = -(1 - e^{-lam h}), lam = -ln(1 + c1) / h and G_inf = -c0 / c1.
With uneven spacing the Euler form (G_{i+1} - G_i) / (t_{i+1} - t_i) = c0 + c1 G_i is used
(lam ~ -c1, G_inf = -c0 / c1; approximate). CIs: delta method on statsmodels' cov_params().
"""

from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054


def linearise(t: np.ndarray, gap: np.ndarray) -> dict:
    t = np.asarray(t, dtype=float)
    g = np.asarray(gap, dtype=float)
    order = np.argsort(t)
    t, g = t[order], g[order]
    dt = np.diff(t)
    if len(g) < 4:
        return {"reason": "fewer than 4 points"}
    even = bool(np.allclose(dt, dt[0], rtol=1e-6, atol=1e-12))
    dg = np.diff(g)
    x = g[:-1]
    if np.ptp(x) <= 0:
        return {"reason": "the gap is constant: the regression slope is undefined"}
    yv = dg if even else dg / dt
    import statsmodels.api as sm  # imported when first used: the CLI starts without it

    res = sm.OLS(yv, sm.add_constant(x)).fit()
    c0, c1 = (float(v) for v in res.params)
    cov = np.asarray(res.cov_params())
    out: dict = {"slope": c1, "intercept": c0, "r2": float(res.rsquared),
                 "spacing": float(dt[0]) if even else None,
                 "form": "exact-discrete" if even else "euler (uneven spacing, approximate)"}
    # rate
    if even:
        h = float(dt[0])
        if 1.0 + c1 > 0 and c1 < 0:
            rate = -np.log1p(c1) / h
            grad = np.array([0.0, -1.0 / (h * (1.0 + c1))])
            se = float(np.sqrt(grad @ cov @ grad))
            out["rate"] = {"estimate": float(rate), "se": se, "ci95": [rate - Z95 * se, rate + Z95 * se]}
        else:
            out["rate"] = {"estimate": None, "reason": "slope outside (-1, 0): no decaying exponential"}
    else:
        se = float(np.sqrt(cov[1, 1]))
        out["rate"] = {"estimate": -c1, "se": se, "ci95": [-c1 - Z95 * se, -c1 + Z95 * se]}
    if c1 != 0:
        ginf = -c0 / c1
        grad = np.array([-1.0 / c1, c0 / c1**2])
        se = float(np.sqrt(grad @ cov @ grad))
        out["gap_limit"] = {"estimate": float(ginf), "se": se, "ci95": [ginf - Z95 * se, ginf + Z95 * se]}
    else:
        out["gap_limit"] = {"estimate": None, "reason": "zero slope"}
    return out

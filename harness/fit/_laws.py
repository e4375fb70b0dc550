"""Limits under the law's uncertainty: the candidate laws, a calibrated test of each against the best, and the
published interval of each limit as the hull over the coupled law (whose estimate is published) and the
other laws the data do not reject.

Candidate laws (each with its own 95% profile-likelihood intervals, _profile):
- coupled:      U_s, U_v = c + a exp(-lam t), one shared rate (the paper's law);
- separate_exp: each series c + a exp(-r t) with its own rate;
- power_law:    each series c + a (t + s)^(-p) with its own exponent p and shift s in POWER_SHIFTS (slower
                than any exponential: its limits often run to the domain edge).
A law is rejected when its residual sum of squares (weighted by 1/se^2 when standard errors are known) exceeds
the best law's by more than an F test allows: (RSS_law - RSS_best) / TEST_DF / (RSS_best / df) / inflation >
F_{TEST_DF, df}(1 - TEST_LEVEL), df = 2T - 6, inflation the serial-correlation factor of the coupled fit. The
coupled law is "conditional" when it is rejected. A power law's limits are the hull over its shifts, each set
relative to the best shift's fit (one profile over exponent and shift).

Chosen by simulation: with the shift fixed at 1, power laws with shift 3 went uncovered (0.87 at 20 points,
0.74 at 30); with one numerator df the law's own data were called conditional on 10-12% of trajectories.

Why the hull rather than averaging (reasoned; the hull's coverage is measured by bench/bench_law_coverage.py,
averaging was not simulated): a limit is an extrapolation, and laws that fit the observed points equally well
extrapolate to different limits; a weighted average of their intervals covers the truth only when the weights
favour the true law, which 5-20 points often cannot do (a power law and an exponential fit the same short
series within the noise). The hull covers
whenever the true law is not rejected (about 95% of the time) and its own interval covers; the price is that a
limit opens to the domain edge when a slow law fits as well, which is what the data say.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from si_bench.fit._profile import CLOSED, SEARCH_BOUND, Interval, profile_intervals
from si_bench.fit._vp import exp_basis, power_basis, rate_bounds, vp_fit

LAWS = ("coupled", "separate_exp", "power_law")
LIMIT_NAMES = ("solver_limit", "verifier_limit", "gap_limit")
TEST_LEVEL = 0.05
TEST_DF = 2  # the alternatives have up to two more free parameters than the coupled law (a rate, a shift)
POWER_SHIFT = 1.0  # t + 1 keeps t = 0 finite (more when t < 0)
POWER_SHIFTS = (1.0, 3.0, 10.0)
POWER_BOUNDS = (1e-3, 20.0)
CHUNK = 64
ALT_ITER = 8  # golden steps of the alternatives' fits (their RSS only enters the test): within 0.5% of the optimum


def _shift(t: np.ndarray) -> float:
    return POWER_SHIFT if t.min() >= 0 else POWER_SHIFT - float(t.min())


def _members(t: np.ndarray, law: str) -> tuple[tuple[float, float], list, Callable[..., np.ndarray], np.ndarray]:
    """A law's family: (bounds of its nonlinear parameter, a vp_fit basis per member, the profile basis for
    rows of any member, each member's offset). One exponential; power laws with shifts POWER_SHIFTS (the shift
    sets how soon the power-law tail begins)."""
    if law == "separate_exp":
        t0 = float(t.min())
        return rate_bounds(t), [exp_basis(t0)], lambda tt, lam, off: np.exp(-lam[..., None] * (tt - t0)), np.zeros(1)
    shifts = _shift(t) - POWER_SHIFT + np.asarray(POWER_SHIFTS)
    return (POWER_BOUNDS, [power_basis(s) for s in shifts],
            lambda tt, p, off: np.exp(-p[..., None] * np.log(tt + off[:, None, None])), shifts)


def _separate(t, Y, W, law: str, domain, rss_scale) -> tuple[np.ndarray, dict[str, Interval]]:
    """One law with its own nonlinear parameters per series: (RSS (B,), {solver_limit, verifier_limit:
    Interval}); over a family of members, the set relative to the family's best fit, hulled over members.
    Every (member, series, trajectory) is one row of a single profile call."""
    B = Y.shape[0]
    y = np.concatenate([Y[:, :, :1], Y[:, :, 1:]])  # (2B, T, 1): solver rows, then verifier rows
    w = None if W is None else np.concatenate([W[:, :, :1], W[:, :, 1:]])
    bounds, bases, rows, offsets = _members(t, law)
    fits = [vp_fit(t, y, basis, *bounds, n_iter=ALT_ITER, weights=w) for basis in bases]
    best = np.min(np.stack([f.rss for f in fits]), axis=0)
    M = len(fits)
    off = np.repeat(offsets, 2 * B)
    iv = profile_intervals(t, np.tile(y, (M, 1, 1)), np.concatenate([f.theta for f in fits]), bounds,
                           {"limit": (1.0,)}, rss_scale=np.tile(np.broadcast_to(rss_scale, (B,)), 2 * M),
                           domain=domain, basis=lambda tt, lam: rows(tt, lam, off),
                           weights=None if w is None else np.tile(w, (M, 1, 1)), rss_min=np.tile(best, M))["limit"]

    def part(m: int, j: int) -> Interval:
        k = slice((2 * m + j) * B, (2 * m + j + 1) * B)
        return Interval(lo=iv.lo[k], hi=iv.hi[k], lo_open=iv.lo_open[k], hi_open=iv.hi_open[k])

    out = {}
    for j, name in enumerate(("solver_limit", "verifier_limit")):
        ivs = [part(m, j) for m in range(M)]
        out[name] = _hull(ivs, np.stack([p.lo <= p.hi for p in ivs]))
    return best[:B] + best[B:], out


def _chunked(t, Y, W, law, domain, rss_scale, chunk: int = CHUNK):
    """_separate over chunks of trajectories (its arrays grow with trajectories x members x grid x T)."""
    parts = [_separate(t, Y[i : i + chunk], None if W is None else W[i : i + chunk], law, domain,
                       rss_scale[i : i + chunk]) for i in range(0, len(Y), chunk)]
    cat = {name: Interval(*(np.concatenate([getattr(p[1][name], f) for p in parts])
                            for f in ("lo", "hi", "lo_open", "hi_open"))) for name in parts[0][1]}
    return np.concatenate([p[0] for p in parts]), cat


def _difference(a: Interval, b: Interval) -> Interval:
    """a - b from the two limits' intervals (a conservative hull); an end is open when an end it rests on
    reached the rate's search bound (an end cut at the domain edge still bounds the difference)."""
    return Interval(lo=a.lo - b.hi, hi=a.hi - b.lo,
                    lo_open=np.where((a.lo_open == SEARCH_BOUND) | (b.hi_open == SEARCH_BOUND), SEARCH_BOUND, CLOSED),
                    hi_open=np.where((a.hi_open == SEARCH_BOUND) | (b.lo_open == SEARCH_BOUND), SEARCH_BOUND, CLOSED))


def _hull(ivs: list[Interval], use: np.ndarray) -> Interval:
    """Per trajectory, the hull of the intervals of the laws in use (L, B); an open end of any law opens it."""
    lo = np.stack([iv.lo for iv in ivs])
    hi = np.stack([iv.hi for iv in ivs])
    lo_open = np.stack([iv.lo_open for iv in ivs])
    hi_open = np.stack([iv.hi_open for iv in ivs])
    lo = np.where(use, lo, np.inf).min(axis=0)
    hi = np.where(use, hi, -np.inf).max(axis=0)
    return Interval(lo=lo, hi=hi, lo_open=np.where(use, lo_open, 0).max(axis=0),
                    hi_open=np.where(use, hi_open, 0).max(axis=0))


def law_test(rss: dict[str, np.ndarray], T: int, inflation: np.ndarray) -> dict[str, Any]:
    """{law: F statistic against the best law (B,)}, {law: rejected (B,)} and the critical value."""
    from scipy import stats  # imported when first used: the CLI starts without it

    df = 2 * T - 6
    best = np.min(np.stack(list(rss.values())), axis=0)
    scale = np.maximum(best / df, 1e-300) * inflation
    crit = float(stats.f.ppf(1 - TEST_LEVEL, TEST_DF, df))
    F = {law: (r - best) / TEST_DF / scale for law, r in rss.items()}
    return {"F": F, "rejected": {law: f > crit for law, f in F.items()}, "critical": crit}


def any_law_intervals(t: np.ndarray, Y: np.ndarray, coupled_rss: np.ndarray, coupled_iv: dict[str, Interval],
                      *, domain: tuple[float, float], inflation: np.ndarray, weights: np.ndarray | None = None):
    """B trajectories Y (B, T, 2): the candidate laws' intervals, the test, and the published hull of each
    limit over the laws not rejected. Returns (hull {limit: Interval}, per_law {law: {limit: Interval}},
    test (law_test))."""
    t = np.asarray(t, dtype=float)
    B, T, _ = Y.shape
    W = None if weights is None else np.broadcast_to(np.asarray(weights, dtype=float).reshape(-1, T, 2), Y.shape)
    per_law = {"coupled": {q: coupled_iv[q] for q in LIMIT_NAMES}}
    rss = {"coupled": coupled_rss}
    for law in LAWS[1:]:
        rss[law], iv = _chunked(t, Y, W, law, domain, np.broadcast_to(inflation, (B,)))
        iv["gap_limit"] = _difference(iv["solver_limit"], iv["verifier_limit"])
        per_law[law] = iv
    test = law_test(rss, T, inflation)
    use = ~np.stack([test["rejected"][law] for law in LAWS])
    use[0] = True  # the published estimate is the coupled law's: its interval stays in the hull even when rejected
    hull = {q: _hull([per_law[law][q] for law in LAWS], use) for q in LIMIT_NAMES}
    return hull, per_law, test

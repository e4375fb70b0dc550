"""Coverage of the published limit intervals when the law is wrong or the noise is not iid (issue 20).

Run: nice .venv/bin/python bench/bench_law_coverage.py [n_per_cell] [seed] [case name filter]
Cases (truth and noise, each at T = 5, 8, 11, 20 points, t = 0 .. T-1):
    law slow / mid / fast  the coupled law, rate per step U(0.1, 0.3) / U(0.2, 0.9) / U(1, 2), iid sd 0.02
    heteroscedastic        the coupled law (mid rates), sd 4% of the level, the fit weighted by se = 4% of
                           the observed value (what a file's *_se columns would give)
    AR(1) 0.3 / 0.7        the coupled law (mid rates), sd 0.02, AR(1) along t
    GSM8k scale            U_s,inf ~ U(150, 200), A_s ~ U(20, 80), gap ~ U(5, 40), iid sd 8
    power law              each series c + a (1 + t)^(-p), p ~ U(0.3, 1.5) per series, sd 0.02
    two rates              each series its own exponential, the verifier's rate 2.5-4 times the solver's
                           (or the reverse), sd 0.02
    heteroscedastic, no se as heteroscedastic, fitted unweighted (a file without *_se columns)
Columns, per limit: strict coverage (an open end is a miss) / edge-read coverage (an open end reads as the
domain edge: 0 or +infinity for U_s and U_v, +-infinity for the gap) and the share of intervals with an open
end; "published" is the hull over the laws the data do not reject (si_bench.fit._laws), "coupled" the
coupled-law-only interval. cond: share of trajectories on which the coupled law is rejected ("conditional").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from si_bench.fit import _coupled, _laws
from si_bench.fit._calibration import noise

T_VALUES = (5, 8, 11, 20)
LIMITS = ("solver_limit", "verifier_limit", "gap_limit")


def _limits(rng, n, scale=1.0):
    a_s = rng.uniform(0.5, 1.0, n) * scale
    uv = rng.uniform(0.3, 1.5, n) * scale
    gap = rng.uniform(0.05, 0.3, n) * scale
    return a_s, a_s * rng.uniform(0.25, 0.6, n), uv + gap, uv


def _exp(c, a, r, t):
    return c[:, None] + a[:, None] * np.exp(-np.outer(r, t))


def coupled_truth(lo, hi, sd=0.02, rho=0.0, rel=None, weighted=True):
    def draw(rng, n, t):
        a_s, a_v, us, uv = _limits(rng, n)
        r = rng.uniform(lo, hi, n)
        Y = np.stack([_exp(us, a_s, r, t), _exp(uv, a_v, r, t)], axis=-1)
        if rel is None:
            return Y + noise(rng, Y.shape, sd, rho), None, us, uv, r
        Yn = Y * (1 + noise(rng, Y.shape, rel, rho))
        return Yn, 1.0 / (rel * np.abs(Yn)) ** 2 if weighted else None, us, uv, r
    return draw


def gsm8k(rng, n, t):
    us = rng.uniform(150, 200, n)
    uv = us - rng.uniform(5, 40, n)
    a_s = rng.uniform(20, 80, n)
    a_v = a_s * rng.uniform(0.25, 0.6, n)
    r = rng.uniform(0.2, 0.9, n)
    Y = np.stack([_exp(us, a_s, r, t), _exp(uv, a_v, r, t)], axis=-1)
    return Y + rng.normal(0, 8.0, Y.shape), None, us, uv, r


def power_law(rng, n, t):
    a_s, a_v, us, uv = _limits(rng, n)
    p_s, p_v = rng.uniform(0.3, 1.5, n), rng.uniform(0.3, 1.5, n)
    Y = np.stack([us[:, None] + a_s[:, None] * (1 + t) ** -p_s[:, None],
                  uv[:, None] + a_v[:, None] * (1 + t) ** -p_v[:, None]], axis=-1)
    return Y + rng.normal(0, 0.02, Y.shape), None, us, uv, None


def two_rates(rng, n, t):
    a_s, a_v, us, uv = _limits(rng, n)
    r_s = rng.uniform(0.2, 0.9, n)
    ratio = rng.uniform(2.5, 4.0, n)
    r_v = np.where(rng.random(n) < 0.5, r_s * ratio, r_s / ratio)
    Y = np.stack([_exp(us, a_s, r_s, t), _exp(uv, a_v, r_v, t)], axis=-1)
    return Y + rng.normal(0, 0.02, Y.shape), None, us, uv, None


CASES = {
    "law slow 0.1-0.3": coupled_truth(0.1, 0.3),
    "law mid 0.2-0.9": coupled_truth(0.2, 0.9),
    "law fast 1-2": coupled_truth(1.0, 2.0),
    "heteroscedastic 4%": coupled_truth(0.2, 0.9, rel=0.04),
    "AR(1) 0.3": coupled_truth(0.2, 0.9, rho=0.3),
    "AR(1) 0.7": coupled_truth(0.2, 0.9, rho=0.7),
    "GSM8k scale": gsm8k,
    "power law": power_law,
    "two rates": two_rates,
    "heteroscedastic 4%, no se": coupled_truth(0.2, 0.9, rel=0.04, weighted=False),
}


def _cover(iv, truth) -> tuple[float, float, float]:
    lo_open, hi_open = iv.lo_open.astype(bool), iv.hi_open.astype(bool)
    lo_ok, hi_ok = (iv.lo <= truth) & ~lo_open, (truth <= iv.hi) & ~hi_open
    return (float(np.mean(lo_ok & hi_ok)), float(np.mean((lo_ok | lo_open) & (hi_ok | hi_open))),
            float(np.mean(lo_open | hi_open)))


def cell(draw, T: int, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    t = np.arange(T, dtype=float)
    Y, W, us, uv, rate = draw(rng, n, t)
    p = _coupled.fit_many(t, Y, weights=W)
    iv, _, inflation = _coupled.intervals_many(t, Y, p, weights=W)
    hull, _, test = _laws.any_law_intervals(t, Y, p["rss"], iv, domain=_coupled.UNCERTAINTY_DOMAIN,
                                            inflation=inflation, weights=W)
    truth = {"solver_limit": us, "verifier_limit": uv, "gap_limit": us - uv}
    out = {f"pub {q}": _cover(hull[q], truth[q]) for q in LIMITS}
    out |= {f"cpl {q}": _cover(iv[q], truth[q]) for q in LIMITS}
    if rate is not None:
        out["rate"] = _cover(iv["rate"], rate)
    out["cond"] = float(np.mean(test["rejected"]["coupled"]))
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    only = sys.argv[3] if len(sys.argv) > 3 else ""
    start = time.perf_counter()
    print(f"{n} trajectories per cell, seed {seed}; strict / edge-read coverage (open-end share)")
    print("| case | T | solver limit | verifier limit | gap limit | coupled-law-only solver / verifier / gap "
          "(strict / edge) | rate | conditional |")
    print("|---|---|---|---|---|---|---|---|")
    for ci, (name, draw) in enumerate(CASES.items()):
        if only not in name:
            continue
        for T in T_VALUES:
            r = cell(draw, T, n, seed + 100 * ci + T)
            pub = " | ".join(f"{r[f'pub {q}'][0]:.2f} / {r[f'pub {q}'][1]:.2f} ({r[f'pub {q}'][2]:.2f})"
                             for q in LIMITS)
            cpl = ", ".join(f"{r[f'cpl {q}'][0]:.2f}/{r[f'cpl {q}'][1]:.2f}" for q in LIMITS)
            rate = f"{r['rate'][0]:.2f} / {r['rate'][1]:.2f}" if "rate" in r else "-"
            print(f"| {name} | {T} | {pub} | {cpl} | {rate} | {r['cond']:.2f} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

"""Coverage of the fit's 95% intervals on simulated trajectories (the bigger version of the test).

Run: .venv/bin/python bench/bench_coverage.py [n_per_case]
Prints, per case, each quantity's coverage counted strictly (an open end is a miss) and leniently (an open end
covers); then the candidates the method was chosen against (percentile residual bootstrap, t intervals on the
delta-method SEs with 2T - 5 df); then the replicate path on prompt-level data (the same prompts measured at
every t, which the residuals cannot see). Design: harness/fit/_calibration.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from si_bench.fit import FitOptions, fit_trajectory, pooled_replicates
from si_bench.fit._calibration import QUANTITIES, coverage, draw_truth, simulate
from si_bench.fit._coupled import curves, fit_many
from si_bench.fit._intervals import jacobian

CASES = [(4, 0.0), (5, 0.0), (8, 0.0), (11, 0.0), (20, 0.0), (20, 0.7)]
CHUNK = 1000


def _row(label: str, cov: dict) -> str:
    return f"{label:22s} " + "  ".join(f"{q} {v['strict']:.3f}/{v['lenient']:.3f}" for q, v in cov.items())


def method_table(n: int) -> None:
    print(f"chosen method (profile likelihood), {n} trajectories per case: strict/lenient")
    for T, rho in CASES:
        parts = [coverage(T, min(CHUNK, n - i), seed=1000 * T + i, rho=rho) for i in range(0, n, CHUNK)]
        w = [min(CHUNK, n - i) for i in range(0, n, CHUNK)]
        cov = {q: {k: float(np.average([p[q][k] for p in parts], weights=w)) for k in ("strict", "lenient")}
               for q in parts[0]}
        print(_row(f"T={T} rho={rho}", cov))


def _truth_est(p: dict) -> dict:
    return {"solver_limit": p["us_inf"], "verifier_limit": p["uv_inf"], "gap_limit": p["us_inf"] - p["uv_inf"],
            "rate": p["lam"]}


def candidates(n: int, n_boot: int = 200) -> None:
    print(f"\ncandidates, {n} trajectories per case (always bounded: one number)")
    for T, rho in CASES:
        rng = np.random.default_rng(77 + T)
        truth = draw_truth(rng, n)
        t, Y, _ = simulate(rng, truth, T, rho=rho)
        p = fit_many(t, Y)
        est = _truth_est(p)
        # t intervals on delta-method SEs
        amp = np.column_stack([p["a_s"], p["a_v"]]) * np.exp(-p["lam"] * t.min())[:, None]
        J = jacobian(t, p["lam"], amp)
        C = np.linalg.pinv(np.einsum("bni,bnj->bij", J, J)) * (p["rss"] / (2 * T - 5))[:, None, None]
        se = {"solver_limit": C[:, 0, 0], "verifier_limit": C[:, 2, 2],
              "gap_limit": C[:, 0, 0] + C[:, 2, 2] - 2 * C[:, 0, 2], "rate": C[:, 4, 4]}
        tq = stats.t.ppf(0.975, 2 * T - 5)
        delta = {q: np.mean(np.abs(est[q] - truth[q]) <= tq * np.sqrt(se[q])) for q in QUANTITIES}
        # percentile residual bootstrap (the method before)
        s, v = curves(p, t)
        fitted = np.stack([s, v], axis=-1)
        res = (Y - fitted) * np.sqrt(2 * T / (2 * T - 5))
        idx = rng.integers(0, T, (n, n_boot, T))
        Yb = fitted[:, None] + np.take_along_axis(res[:, None], idx[..., None], axis=2)
        boot = _truth_est(fit_many(t, Yb.reshape(n * n_boot, T, 2)))
        perc = {}
        for q in QUANTITIES:
            lo, hi = np.nanpercentile(boot[q].reshape(n, n_boot), [2.5, 97.5], axis=1)
            perc[q] = np.mean((lo <= truth[q]) & (truth[q] <= hi))
        print(f"T={T} rho={rho}: delta-t " + " ".join(f"{q} {delta[q]:.3f}" for q in QUANTITIES)
              + " | percentile bootstrap " + " ".join(f"{q} {perc[q]:.3f}" for q in QUANTITIES), flush=True)


def replicate_path(n: int, P: int = 50, sd_prompt: float = 0.1, sd_noise: float = 0.1) -> None:
    """One run, P prompts shared by every t: per-prompt value = law + prompt effect (constant in t) + noise."""
    print(f"\nreplicate path, {n} trajectories, {P} prompts shared by every t: strict coverage, residual-only vs "
          "with the prompt bootstrap")
    for T in (8, 20):
        rng = np.random.default_rng(500 + T)
        truth = draw_truth(rng, n)
        t = np.arange(T, dtype=float)
        hits = {"residual": dict.fromkeys(QUANTITIES, 0), "replicates": dict.fromkeys(QUANTITIES, 0)}
        for i in range(n):
            e = np.exp(-truth["rate"][i] * t)
            curve = np.stack([truth["solver_limit"][i] + truth["a_s"][i] * e,
                              truth["verifier_limit"][i] + truth["a_v"][i] * e], axis=-1)
            vals = (curve[:, None, :] + rng.normal(0, sd_prompt, (1, P, 2))
                    + rng.normal(0, sd_noise, (T, P, 2)))
            mean = vals.mean(axis=1)
            for kind, reps in (("residual", None), ("replicates", pooled_replicates([vals], 200, seed=i))):
                j = fit_trajectory(t, mean[:, 0], mean[:, 1], replicates=reps, options=FitOptions(n_boot=0)).to_json()
                for q in QUANTITIES:
                    lo, hi = j[q]["ci95"]
                    hits[kind][q] += lo is not None and hi is not None and lo <= truth[q][i] <= hi
        for kind, h in hits.items():
            print(f"T={T} {kind:10s} " + " ".join(f"{q} {h[q] / n:.3f}" for q in QUANTITIES), flush=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    start = time.perf_counter()
    method_table(n)
    candidates(min(n, 1000))
    replicate_path(min(n, 200))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

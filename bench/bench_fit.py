"""Benchmark: fit 100 trajectories of 20 points with 500 residual-bootstrap replicates each.

Run: .venv/bin/python bench/bench_fit.py   (target: < 5 s on a 2-core machine)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from si_bench.fit import FitOptions, fit_trajectory
from si_bench.fit._coupled import fit_coupled


def main(n_traj: int = 100, n_points: int = 20, n_boot: int = 500) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(1, n_points + 1) * 0.5
    e = np.exp(-0.35 * t)
    data = [(0.15 + 0.9 * e + rng.normal(0, 0.02, n_points), 0.10 + 0.35 * e + rng.normal(0, 0.02, n_points))
            for _ in range(n_traj)]
    fit_coupled(t, *data[0], n_boot=10)  # warm-up
    t0 = time.perf_counter()
    for i, (s, v) in enumerate(data):
        fit_coupled(t, s, v, n_boot=n_boot, seed=i)
    coupled = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, (s, v) in enumerate(data):
        fit_trajectory(t, s, v, options=FitOptions(n_boot=n_boot, seed=i)).to_json()
    full = time.perf_counter() - t0
    print(f"coupled fit + {n_boot} bootstrap refits, {n_traj} trajectories x {n_points} points: {coupled:.2f} s")
    print(f"full fit_trajectory (+ SEs, linearisation, alternatives, backtest, JSON): {full:.2f} s")


if __name__ == "__main__":
    main()

"""Benchmark: all measures with a 1000-replicate prompt bootstrap at P=500 prompts, N=16 samples."""

import time

import numpy as np

from si_bench.measures import compute_measures

rng = np.random.default_rng(0)
P, N = 500, 16
nll = rng.gamma(5, 20, (P, N))
n_tokens = rng.integers(50, 400, (P, N))
correct = rng.random((P, N)) < 0.4
scores = rng.random((P, N))
answers = [[str(x) for x in row] for row in rng.integers(0, 4, (P, N))]
times = []
for _ in range(3):
    started = time.perf_counter()
    compute_measures(nll, n_tokens, correct, scores, answers=answers, n_boot=1000)
    times.append(time.perf_counter() - started)
print(f"compute_measures P={P} N={N} n_boot=1000: median {sorted(times)[1]:.2f} s")

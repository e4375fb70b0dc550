"""Replicate trajectories for pooled seed runs: a two-level bootstrap (runs, then prompts within each run)."""

from __future__ import annotations

import numpy as np

from si_bench.errors import SIBenchError
from si_bench.resample import resample_counts


def _prompt_means(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """values (T, P, 2) per-prompt series of one run (NaN where undefined) -> (n, T, 2) means over prompts
    resampled with replacement."""
    counts = resample_counts(values.shape[1], n, rng)
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.einsum("np,tps->nts", counts, np.where(ok, values, 0.0))
                / np.einsum("np,tps->nts", counts, ok.astype(float)))


def pooled_replicates(runs: list[np.ndarray], n_boot: int = 500, seed: int = 0) -> np.ndarray:
    """(B, T, 2) replicates of the mean trajectory of several runs of the same settings (seeds).

    runs: one (T, P_r, 2) array per run of per-prompt (solver, verifier) values on a shared t grid (P_r = 1 for
    runs known only by their mean series). Each replicate draws R runs with replacement and, within each drawn
    run, its prompts with replacement, and averages. With R > 1 the deviations from the pooled mean are scaled
    by sqrt(R / (R - 1)), the usual correction of a bootstrap's variance of a mean of R draws."""
    if not runs:
        raise SIBenchError("pooled_replicates: no runs")
    shapes = {r.shape[0] for r in runs}
    if len(shapes) != 1 or any(r.ndim != 3 or r.shape[2] != 2 for r in runs):
        raise SIBenchError("pooled_replicates: every run must be a (T, prompts, 2) array on the same t grid")
    rng = np.random.default_rng(seed)
    R = len(runs)
    means = np.stack([_prompt_means(r, n_boot * R, rng).reshape(n_boot, R, *r.shape[::2]) for r in runs])
    pick = rng.integers(0, R, size=(n_boot, R))
    reps = means[pick, np.arange(n_boot)[:, None], np.arange(R)[None, :]].mean(axis=1)
    if R > 1:
        centre = run_centre(runs)
        reps = centre + (reps - centre) * np.sqrt(R / (R - 1))
    return reps


def run_centre(runs: list[np.ndarray]) -> np.ndarray:
    """(T, 2) mean over runs of each run's prompt-mean series: the centre of pooled_replicates."""
    with np.errstate(invalid="ignore"):
        return np.mean([np.nanmean(r, axis=1) for r in runs], axis=0)

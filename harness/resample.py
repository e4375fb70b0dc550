"""The bootstrap over prompts (or runs), written once: a resample is a row of counts, so every statistic of a
resample is a weighted sum and a whole bootstrap is a few matrix products."""

from __future__ import annotations

import numpy as np


def resample_counts(n_items: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_items) float counts: how often each item is drawn (with replacement) in each resample."""
    idx = rng.integers(0, n_items, size=(n_boot, n_items))
    flat = (idx + (np.arange(n_boot) * n_items)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_items).reshape(n_boot, n_items).astype(float)

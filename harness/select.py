"""Hybrid best-of-N selection: the paper's verifier.

Per prompt, drop the candidates whose self-verification score is below ``sigma``; among the rest
keep the one with the lowest per-token NLL (``nll / n_tokens``). When no candidate passes, fall
back to the highest-scoring one (ties: lowest per-token NLL, then lowest index) and mark it as a
fallback. Ground truth is never used here.

Per-token NLL of a candidate with ``n_tokens == 0`` is +inf (it loses every NLL comparison),
unless every candidate of that prompt has 0 tokens: then the total NLL ranks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, overload

import numpy as np

__all__ = ["Selection", "hybrid_best_of_n", "per_token_nll", "as_matrix", "check_candidates"]


@dataclass(frozen=True)
class Selection:
    index: np.ndarray  # (P,) int, chosen sample index per prompt
    fallback: np.ndarray  # (P,) bool, True when no candidate reached sigma
    score: np.ndarray  # (P,) float, score of the chosen candidate


def as_matrix(name: str, x, dtype=float) -> np.ndarray:
    """x as a (P, N) array (prompts x samples) with P, N >= 1, or a ValueError naming it."""
    try:
        a = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric (P, N) array: {e}") from None
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (P, N) array (prompts x samples), got shape {a.shape}")
    if a.shape[0] < 1:
        raise ValueError(f"{name} has no prompts (P = 0); need P >= 1")
    if a.shape[1] < 1:
        raise ValueError(f"{name} has no samples per prompt (N = 0); need N >= 1")
    return a


def per_token_nll(nll: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """nll / n_tokens, +inf where n_tokens == 0; rows where every n_tokens is 0 get the total NLL."""
    nll = np.asarray(nll, dtype=float)
    n_tokens = np.asarray(n_tokens, dtype=float)
    has = n_tokens > 0
    out = np.full(nll.shape, np.inf)
    np.divide(nll, n_tokens, out=out, where=has)
    none = ~has.any(axis=-1)
    if none.any():
        out[none] = nll[none]
    return out


def check_sigma(sigma) -> float:
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"sigma must be a number in [0, 1], got {sigma!r}") from None
    if not (0.0 <= sigma <= 1.0):
        raise ValueError(f"sigma must be in [0, 1], got {sigma}")
    return sigma


@overload
def check_candidates(nll: Any, n_tokens: Any, scores: None = None) -> tuple[np.ndarray, np.ndarray, None]: ...
@overload
def check_candidates(nll: Any, n_tokens: Any, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
@overload
def check_candidates(nll: Any, n_tokens: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]: ...


def check_candidates(nll, n_tokens, scores=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(nll, n_tokens, scores) as validated (P, N) arrays: finite NLLs, token counts >= 0, scores in [0, 1]."""
    nll = as_matrix("nll", nll)
    shape = nll.shape
    n_tokens = as_matrix("n_tokens", n_tokens)
    if scores is not None:
        scores = as_matrix("scores", scores)
    for name, a in (("n_tokens", n_tokens), ("scores", scores)):
        if a is not None and a.shape != shape:
            raise ValueError(f"shape mismatch: {name} has shape {a.shape}, expected {shape} like nll")
    if not np.isfinite(nll).all():
        raise ValueError("nll must be finite (no NaN or inf)")
    if np.isnan(n_tokens).any() or (n_tokens < 0).any():
        raise ValueError("n_tokens must be >= 0 (no NaN)")
    if scores is not None and (np.isnan(scores).any() or (scores < 0).any() or (scores > 1).any()):
        raise ValueError("scores must lie in [0, 1] (no NaN)")
    return nll, n_tokens, scores


def hybrid_best_of_n(
    scores: np.ndarray, nll: np.ndarray, n_tokens: np.ndarray, sigma: float = 0.5
) -> Selection:
    """Pick one candidate per prompt; arrays are (P, N). See the module docstring for the rule."""
    nll, n_tokens, scores = check_candidates(nll, n_tokens, scores)
    sigma = check_sigma(sigma)
    P, N = scores.shape
    ptn = per_token_nll(nll, n_tokens)
    idx = np.broadcast_to(np.arange(N), (P, N))
    passing = scores >= sigma
    rows = np.arange(P)

    # lexsort: the last key is the primary one; sorts along the last axis, row by row.
    best_pass = np.lexsort((idx, ptn, ~passing))[:, 0]
    best_fallback = np.lexsort((idx, ptn, -scores))[:, 0]
    fallback = np.asarray(~passing.any(axis=1))
    index = np.where(fallback, best_fallback, best_pass).astype(np.int64)
    return Selection(index=index, fallback=fallback, score=scores[rows, index].astype(float))

"""Solver and verifier measures with 95% bootstrap confidence intervals.

Inputs are (P, N) arrays: P prompts, N sampled candidates per prompt.

* Every CI is a percentile interval from one bootstrap over PROMPTS: ``n_boot`` resamples of the
  prompt indices (with replacement), drawn once per call from ``numpy.random.default_rng(seed)``
  and shared by every measure, so differences such as ``gap`` are paired. Internally a resample is
  a row of prompt counts ``C[b, p]`` and each measure is a weighted statistic of those counts, so
  the whole bootstrap is a handful of matrix products.
* A measure that is undefined has ``value=None`` and a ``reason``; a replicate that is undefined
  (e.g. AUROC on a resample with one class only) is left out of the interval, and when fewer than
  half of the replicates are defined the interval is ``None`` with a reason. With one prompt the
  interval is ``None`` with reason ``"one prompt"``. Nothing is ever NaN.
* ``n`` is the number of prompts a measure rests on (for ``relative_gap`` the contributing
  prompts, for per-token measures the prompts with at least one token-bearing candidate).
* Per-token NLL skips candidates with ``n_tokens == 0`` (their per-token NLL is undefined).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from si_bench.resample import resample_counts
from si_bench.select import Selection, check_candidates, check_sigma, hybrid_best_of_n

__all__ = ["Measure", "compute_measures", "paired_difference", "pass_at_k", "verifier_signal", "SIGNAL_MEASURES"]

CI_LEVEL = 0.95
MIN_DEFINED_SHARE = 0.5
ECE_BINS = 10


@dataclass(frozen=True)
class Measure:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int  # number of prompts (or items) it rests on
    reason: str | None = None  # why value (or its CI) is None; None when fully defined


# --------------------------------------------------------------------------- pass@k


def _check_int(name: str, x) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {x!r}")
    return int(x)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), as a stable product."""
    n, c, k = _check_int("n", n), _check_int("c", c), _check_int("k", k)
    if n < 1:
        raise ValueError(f"pass_at_k needs n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=float)))


def _default_ks(N: int) -> list[int]:
    ks = {N}
    k = 1
    while k <= N:
        ks.add(k)
        k *= 2
    return sorted(ks)


# --------------------------------------------------------------------------- bootstrap core


class _Boot:
    """Shared prompt-resampling bootstrap; C[b, p] = times prompt p appears in resample b."""

    def __init__(self, P: int, n_boot: int, seed: int):
        self.P, self.n_boot = P, n_boot
        self.C = resample_counts(P, n_boot, np.random.default_rng(seed))

    def mean(self, x: np.ndarray) -> tuple[float | None, np.ndarray, int]:
        """Mean over prompts of per-prompt values x (P,), NaN entries excluded.

        Returns (point value or None, replicates (n_boot,) with NaN where undefined, n defined)."""
        defined = ~np.isnan(x)
        x0 = np.where(defined, x, 0.0)
        d = defined.astype(float)
        n = int(defined.sum())
        value = float(x0.sum() / n) if n else None
        if n == self.P:
            return value, (self.C @ x0) / self.P, n
        num, den = self.C @ x0, self.C @ d
        reps = np.full(self.n_boot, np.nan)
        np.divide(num, den, out=reps, where=den > 0)
        return value, reps, n


def _finish(boot: _Boot, value, reps, n: int, reason: str | None = None) -> Measure:
    if value is None:
        return Measure(None, None, None, int(n), reason or "undefined")
    value = float(value)
    if boot.P == 1:
        return Measure(value, None, None, int(n), "one prompt")
    if boot.n_boot == 0:
        return Measure(value, None, None, int(n), "bootstrap disabled (n_boot=0)")
    ok = np.isfinite(reps)
    n_ok = int(ok.sum())
    if n_ok < MIN_DEFINED_SHARE * boot.n_boot:
        return Measure(
            value, None, None, int(n),
            f"only {n_ok} of {boot.n_boot} bootstrap replicates are defined",
        )
    alpha = (1.0 - CI_LEVEL) / 2.0
    lo, hi = np.percentile(reps[ok], [100 * alpha, 100 * (1 - alpha)])
    lo, hi = float(lo), float(hi)
    # Absorb floating-point round-off so a degenerate interval still contains the point value.
    tol = 1e-12 * max(1.0, abs(value))
    if value - tol <= lo < value:
        lo = value
    if value < hi <= value + tol:
        hi = value
    return Measure(value, lo, hi, int(n), None)


# --------------------------------------------------------------------------- validation


def _bool2d(name: str, x, P_N: tuple[int, int]) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object:
        raise ValueError(f"{name} must be a boolean (P, N) array (no None)")
    if a.ndim != 2 or a.shape != P_N:
        raise ValueError(f"shape mismatch: {name} has shape {a.shape}, expected {P_N} like nll")
    if a.dtype != bool:
        af = a.astype(float)
        if not np.isin(af, (0.0, 1.0)).all():
            raise ValueError(f"{name} must hold booleans (or 0/1)")
        a = af.astype(bool)
    return a


def _is_missing(a) -> bool:
    return a is None or (isinstance(a, float) and a != a)


def _answers2d(answers, P: int, N: int) -> list[list]:
    if isinstance(answers, np.ndarray):
        if answers.shape != (P, N):
            raise ValueError(f"shape mismatch: answers has shape {answers.shape}, expected {(P, N)}")
        return answers.tolist()
    rows = list(answers)
    if len(rows) != P:
        raise ValueError(f"shape mismatch: answers has {len(rows)} prompts, expected {P}")
    out = []
    for p, row in enumerate(rows):
        if isinstance(row, (str, bytes)):
            raise ValueError(f"answers[{p}] must be a sequence of N answers, got a string")
        row = list(row)
        if len(row) != N:
            raise ValueError(f"shape mismatch: answers[{p}] has {len(row)} samples, expected {N}")
        out.append(row)
    return out


# --------------------------------------------------------------------------- statistics


def _auroc_pair_matrix(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """A[p, q] = sum over correct i in prompt p, incorrect j in prompt q of [s_i > s_j] + [s_i == s_j] / 2.

    With prompt weights c (a bootstrap resample's counts) the weighted Mann-Whitney AUROC is
    c @ A @ c / ((c @ n_pos) * (c @ n_neg)), so every replicate costs one row of a matrix product."""
    P = scores.shape[0]
    pos_pid, pos_col = np.nonzero(correct)
    pos_s = scores[pos_pid, pos_col]
    A = np.zeros((P, P))
    for q in range(P):
        neg = np.sort(scores[q][~correct[q]])
        if neg.size == 0:
            continue
        below = np.searchsorted(neg, pos_s, side="left")
        upto = np.searchsorted(neg, pos_s, side="right")
        A[:, q] = np.bincount(pos_pid, weights=0.5 * (below + upto), minlength=P)
    return A


def _auroc_weighted(C: np.ndarray, A: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray) -> np.ndarray:
    """Weighted AUROC for each row of prompt weights C (B, P); NaN where a class has no weight."""
    num = ((C @ A) * C).sum(axis=1)
    den = (C @ n_pos) * (C @ n_neg)
    out = np.full(C.shape[0], np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _majority(answers: list[list], correct: np.ndarray) -> np.ndarray:
    P = len(answers)
    out = np.zeros(P)
    for p, row in enumerate(answers):
        counts: dict = {}
        first: dict = {}
        for i, a in enumerate(row):
            if _is_missing(a):
                continue
            if a not in counts:
                counts[a] = 0
                first[a] = i
            counts[a] += 1
        if not counts:
            continue  # no extracted answer: wrong
        best, best_n = None, 0
        for a, c in counts.items():  # insertion order = first occurrence, so ties go to the first
            if c > best_n:
                best, best_n = a, c
        out[p] = float(correct[p, first[best]])
    return out


# --------------------------------------------------------------------------- public API


def _check_selection(selection, P: int, N: int) -> Selection:
    if not isinstance(selection, Selection):
        raise ValueError(f"selection must be a Selection, got {type(selection).__name__}")
    index = np.asarray(selection.index)
    if index.shape != (P,):
        raise ValueError(f"shape mismatch: selection.index has shape {index.shape}, expected ({P},)")
    if not np.issubdtype(index.dtype, np.integer) or (index < 0).any() or (index >= N).any():
        raise ValueError(f"selection.index must hold integers in [0, {N})")
    if np.asarray(selection.fallback).shape != (P,):
        raise ValueError(f"shape mismatch: selection.fallback must have shape ({P},)")
    return selection


def _check_ks(ks, N: int) -> list[int]:
    if ks is None:
        return _default_ks(N)
    ks = sorted({_check_int("k", k) for k in ks})
    bad = [k for k in ks if not 1 <= k <= N]
    if bad:
        raise ValueError(f"pass@k needs 1 <= k <= N={N}, got k={bad}")
    return ks


class _Collector:
    """Measures of one generation, all over one shared prompt bootstrap (so differences are paired)."""

    def __init__(self, boot: _Boot):
        self.boot = boot
        self.out: dict[str, Measure] = {}

    def per_prompt(self, name: str, x: np.ndarray, reason: str | None = None):
        value, reps, n = self.boot.mean(x)
        self.out[name] = _finish(self.boot, value, reps, n, reason)
        return value, reps, n

    def difference(self, name: str, a, b) -> None:
        (av, ar, an), (bv, br, bn) = a, b
        if av is None or bv is None:
            self.out[name] = Measure(None, None, None, int(min(an, bn)),
                                     "solver or verifier per-token NLL is undefined")
        else:
            self.out[name] = _finish(self.boot, av - bv, ar - br, min(an, bn))


def _per_token(nll: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """NLL per token, NaN where a candidate has no tokens."""
    ptn = np.full(nll.shape, np.nan)
    np.divide(nll, n_tokens, out=ptn, where=n_tokens > 0)
    return ptn


def _solver_measures(c: _Collector, nll, n_tokens, correct) -> tuple:
    c.per_prompt("solver_accuracy", correct.astype(float).mean(axis=1))
    total = c.per_prompt("solver_uncertainty", nll.mean(axis=1))
    token = c.per_prompt("solver_uncertainty_per_token", _row_nanmean(_per_token(nll, n_tokens)),
                         "no candidate has any tokens")
    c.per_prompt("solver_length", n_tokens.mean(axis=1))
    return total, token


def _row_nanmean(x: np.ndarray) -> np.ndarray:
    """Mean of each row over its non-NaN entries; NaN for an all-NaN row (without a warning)."""
    ok = ~np.isnan(x)
    count = ok.sum(axis=1)
    out = np.full(x.shape[0], np.nan)
    np.divide(np.where(ok, x, 0.0).sum(axis=1), count, out=out, where=count > 0)
    return out


def _verifier_measures(c: _Collector, nll, n_tokens, correct, selection: Selection, solver: tuple) -> None:
    rows, pick = np.arange(nll.shape[0]), np.asarray(selection.index)
    picked = correct[rows, pick].astype(float)
    c.per_prompt("verifier_accuracy", picked)
    # A random pick of the same candidates is right with the prompt's share of right candidates.
    c.per_prompt("pick_lift", picked - correct.astype(float).mean(axis=1))
    # What the NLL tie-break alone would pick (every candidate passing): the picks it did not decide, the score did.
    by_nll = hybrid_best_of_n(np.ones(nll.shape), nll, n_tokens, 0.0).index == pick
    passed = ~np.asarray(selection.fallback, dtype=bool)
    c.per_prompt("picks_by_score", (passed & ~by_nll).astype(float))
    c.per_prompt("picks_by_nll", (passed & by_nll).astype(float))
    total = c.per_prompt("verifier_uncertainty", nll[rows, pick])
    token = c.per_prompt("verifier_uncertainty_per_token", _per_token(nll, n_tokens)[rows, pick],
                         "no pick has any tokens")
    c.per_prompt("verifier_length", n_tokens[rows, pick])
    c.per_prompt("fallback_rate", np.asarray(selection.fallback, dtype=float))
    c.difference("gap", solver[0], total)
    c.difference("gap_per_token", solver[1], token)


def _pass_and_majority(c: _Collector, correct, answers, ks: list[int]) -> None:
    N = correct.shape[1]
    n_correct = correct.sum(axis=1)
    for k in ks:
        table = np.array([pass_at_k(N, ci, k) for ci in range(N + 1)])
        c.per_prompt(f"pass@{k}", table[n_correct])
    if answers is not None:
        c.per_prompt(f"maj@{N}", _majority(answers, correct))


def _auroc_measures(c: _Collector, scores, correct) -> None:
    """Pooled AUROC (every correct candidate against every incorrect one) and within prompts (only pairs of the
    same prompt: whether the score ranks a prompt's own candidates, which is what a best-of-N pick needs)."""
    P, N = correct.shape
    boot, out = c.boot, c.out
    n_pos = int(correct.sum())
    if n_pos in (0, P * N):
        reason = "no correct candidate" if n_pos == 0 else "no incorrect candidate"
        out["auroc"] = out["auroc_within"] = Measure(None, None, None, P, reason)
        return
    A = _auroc_pair_matrix(scores, correct)
    pos_p = correct.sum(axis=1).astype(float)
    value = float(_auroc_weighted(np.ones((1, P)), A, pos_p, N - pos_p)[0])
    out["auroc"] = _finish(boot, value, _auroc_weighted(boot.C, A, pos_p, N - pos_p), P)
    wins, pairs = np.diag(A), pos_p * (N - pos_p)
    mixed = int((pairs > 0).sum())
    if mixed == 0:
        out["auroc_within"] = Measure(None, None, None, 0, "no prompt has both a correct and an incorrect candidate")
        return
    reps = np.full(boot.n_boot, np.nan)
    np.divide(boot.C @ wins, boot.C @ pairs, out=reps, where=boot.C @ pairs > 0)
    out["auroc_within"] = _finish(boot, float(wins.sum() / pairs.sum()), reps, mixed)


def _score_measures(c: _Collector, scores, correct, sigma: float) -> None:
    P, N = correct.shape
    boot, out, corr_f = c.boot, c.out, correct.astype(float)
    _auroc_measures(c, scores, correct)
    c.per_prompt("brier", ((scores - corr_f) ** 2).mean(axis=1))
    bins = np.clip(np.floor(scores * ECE_BINS).astype(int), 0, ECE_BINS - 1)
    key = (np.arange(P)[:, None] * ECE_BINS + bins).ravel()
    cnt = np.bincount(key, minlength=P * ECE_BINS).reshape(P, ECE_BINS).astype(float)
    ssum = np.bincount(key, weights=scores.ravel(), minlength=P * ECE_BINS).reshape(P, ECE_BINS)
    csum = np.bincount(key, weights=corr_f.ravel(), minlength=P * ECE_BINS).reshape(P, ECE_BINS)
    diff = ssum - csum  # per prompt and bin: sum(score) - sum(correct)
    value = float(np.abs(diff.sum(axis=0)).sum() / cnt.sum())
    reps = np.abs(boot.C @ diff).sum(axis=1) / (boot.C @ cnt).sum(axis=1) if boot.n_boot else np.empty(0)
    out["ece"] = _finish(boot, value, reps, P)
    generation = corr_f.mean(axis=1)
    passing = scores >= sigma
    n_pass = passing.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        verified = np.where(n_pass > 0, (corr_f * passing).sum(axis=1) / n_pass, generation)
        best = correct.any(axis=1).astype(float)
        contrib = best > generation
        rel = np.where(contrib, (verified - generation) / np.where(contrib, best - generation, 1.0), np.nan)
    c.per_prompt("relative_gap", rel, "every prompt is all-correct or all-wrong")


def compute_measures(
    nll,
    n_tokens,
    correct,
    scores=None,
    selection: Selection | None = None,
    answers=None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    sigma: float = 0.5,
    ks: Sequence[int] | None = None,
) -> dict[str, Measure]:
    """All solver / verifier measures of one generation, each with a 95% bootstrap CI.

    Arrays are (P, N). ``scores`` (self-verification, in [0, 1]) enables the score measures
    (auroc, brier, ece, relative_gap); without ``selection`` the picks come from
    ``hybrid_best_of_n(scores, nll, n_tokens, sigma)``. With neither, the verifier measures
    (verifier_*, fallback_rate, gap*) are absent. ``answers`` (None = not extracted) enables maj@N.
    """
    nll, n_tokens, scores = check_candidates(nll, n_tokens, scores)
    P, N = nll.shape
    correct = _bool2d("correct", correct, (P, N))
    sigma = check_sigma(sigma)
    n_boot = _check_int("n_boot", n_boot)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if selection is not None:
        selection = _check_selection(selection, P, N)
    elif scores is not None:
        selection = hybrid_best_of_n(scores, nll, n_tokens, sigma)
    ks = _check_ks(ks, N)
    answers = _answers2d(answers, P, N) if answers is not None else None

    c = _Collector(_Boot(P, n_boot, _check_int("seed", seed)))
    solver = _solver_measures(c, nll, n_tokens, correct)
    if selection is not None:
        _verifier_measures(c, nll, n_tokens, correct, selection, solver)
    _pass_and_majority(c, correct, answers, ks)
    if scores is not None:
        _score_measures(c, scores, correct, sigma)
    return c.out


# --------------------------------------------------------------------------- the verifier's signal, in words

# What says whether the verifier score decided anything, stored per evaluation (metrics) and shown by evaluate;
# `verifier_signal` is the verdict read from them (no interval of its own).
SIGNAL_MEASURES = ("auroc", "auroc_within", "picks_by_score", "picks_by_nll", "fallback_rate", "pick_lift")
NO_SIGNAL = "the verifier score carries no signal here; picks follow the lowest NLL"
SIGNAL_WORDS = {
    1.0: "the verifier score ranks a prompt's right candidates above its wrong ones",
    0.0: NO_SIGNAL,
    -1.0: "the verifier score ranks a prompt's wrong candidates above its right ones",
}


def verifier_signal(metrics: dict[str, Measure]) -> Measure:
    """The within-prompt AUROC's 95% interval read as a verdict: value 1 (above 0.5), 0 (contains 0.5: no signal)
    or -1 (below 0.5), and the verdict in words as `reason`; None when the interval is undefined."""
    within = metrics.get("auroc_within")
    if within is None or within.ci_low is None or within.ci_high is None:
        why = within.reason if within is not None else "no verifier scores"
        return Measure(None, None, None, within.n if within else 0, f"verifier signal undetermined: {why}")
    flag = 1.0 if within.ci_low > 0.5 else -1.0 if within.ci_high < 0.5 else 0.0
    words = SIGNAL_WORDS[flag]
    by_nll = metrics.get("picks_by_nll")
    if flag == 0.0 and (by_nll is None or by_nll.value is None or by_nll.value < 0.5):
        words = "the verifier score carries no signal here; its picks are no better than a random one"
    return Measure(flag, None, None, within.n,
                   f"{words} (within-prompt AUROC {within.value:.2f} [{within.ci_low:.2f}, {within.ci_high:.2f}])")


def paired_difference(before, after, *, n_boot: int = 2000, seed: int = 0) -> Measure:
    """mean(after - before) over prompts, with a paired bootstrap CI (resampling prompts)."""
    b = np.asarray(before, dtype=float)
    a = np.asarray(after, dtype=float)
    if b.ndim != 1 or a.ndim != 1:
        raise ValueError(f"before and after must be 1-d per-prompt arrays, got shapes {b.shape}, {a.shape}")
    if b.shape != a.shape:
        raise ValueError(f"shape mismatch: before {b.shape} vs after {a.shape}; pair them by prompt")
    if b.shape[0] < 1:
        raise ValueError("paired_difference needs P >= 1 prompts")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("before and after must be finite (no NaN or inf)")
    n_boot = _check_int("n_boot", n_boot)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    boot = _Boot(b.shape[0], n_boot, _check_int("seed", seed))
    value, reps, n = boot.mean(a - b)
    return _finish(boot, value, reps, n)

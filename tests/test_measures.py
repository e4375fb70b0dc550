"""Measures and bootstrap CIs (si_bench.measures) on hand-made cases with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from si_bench.measures import (
    Measure,
    _auroc_pair_matrix,
    _auroc_weighted,
    _Boot,
    _finish,
    compute_measures,
    paired_difference,
    pass_at_k,
)
from si_bench.select import Selection, hybrid_best_of_n


def _random_case(P=40, N=8, seed=3):
    rng = np.random.default_rng(seed)
    nll = rng.gamma(4.0, 10.0, (P, N))
    n_tok = rng.integers(20, 200, (P, N))
    correct = rng.random((P, N)) < 0.45
    scores = np.round(np.clip(0.35 * correct + 0.65 * rng.random((P, N)), 0, 1), 1)  # ties on purpose
    return nll, n_tok, correct, scores


def _brute_auroc(s, y):
    s, y = np.ravel(s), np.ravel(y).astype(bool)
    pos, neg = s[y], s[~y]
    tot = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return tot / (len(pos) * len(neg))


# --------------------------------------------------------------------------- pass@k


def test_pass_at_k_matches_subset_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                hit = sum(any(i < c for i in sub) for sub in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(hit, abs=1e-12), (n, c, k)
                assert isinstance(pass_at_k(n, c, k), float)


def test_pass_at_k_large_n_is_stable():
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert pass_at_k(1000, 10, 100) == pytest.approx(1 - math.comb(990, 100) / math.comb(1000, 100))
    assert pass_at_k(1000, 0, 500) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 2, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 2, 0)


def test_pass_at_k_measures_and_default_ks():
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    z = np.ones((3, 4))
    m = compute_measures(z, z, correct, n_boot=50)
    assert [k for k in m if k.startswith("pass@")] == ["pass@1", "pass@2", "pass@4"]
    assert m["pass@1"].value == pytest.approx((0.25 + 0.5 + 0) / 3)
    assert m["pass@2"].value == pytest.approx((0.5 + 5 / 6 + 0) / 3)
    assert m["pass@4"].value == pytest.approx(2 / 3)
    assert m["pass@1"].value == pytest.approx(m["solver_accuracy"].value)
    z6 = np.ones((1, 6))
    m6 = compute_measures(z6, z6, np.zeros((1, 6), bool), n_boot=10)
    assert [k for k in m6 if k.startswith("pass@")] == ["pass@1", "pass@2", "pass@4", "pass@6"]
    m3 = compute_measures(z, z, correct, ks=[3, 1], n_boot=10)
    assert [k for k in m3 if k.startswith("pass@")] == ["pass@1", "pass@3"]
    with pytest.raises(ValueError, match="1 <= k <= N"):
        compute_measures(z, z, correct, ks=[5])


# --------------------------------------------------------------------------- maj@N


def test_majority_vote():
    answers = [
        ["a", "b", "a", None],  # 'a' wins -> correct
        ["x", "y", None, None],  # tie -> first occurrence 'x' -> wrong
        [None, None, None, None],  # nothing extracted -> wrong
        ["5", "5", "7", "7"],  # tie -> '5' (first) -> wrong
        ["7", "5", "5", None],  # '5' wins -> correct
    ]
    correct = np.array(
        [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0]], dtype=bool
    )
    z = np.ones((5, 4))
    m = compute_measures(z, z, correct, answers=answers, n_boot=100)
    assert m["maj@4"].value == pytest.approx(0.4)
    assert m["maj@4"].n == 5
    # numpy object arrays work too; a missing row length is a clear error
    m2 = compute_measures(z, z, correct, answers=np.array(answers, dtype=object), n_boot=100)
    assert m2["maj@4"].value == pytest.approx(0.4)
    with pytest.raises(ValueError, match="answers"):
        compute_measures(z, z, correct, answers=answers[:4])
    assert "maj@4" not in compute_measures(z, z, correct, n_boot=10)


# --------------------------------------------------------------------------- AUROC / calibration


def test_auroc_small_known_case():
    scores = np.array([[0.9, 0.4], [0.4, 0.1], [0.8, 0.3]])
    correct = np.array([[1, 0], [1, 0], [0, 1]], dtype=bool)
    # positives 0.9, 0.4, 0.3; negatives 0.4, 0.1, 0.8
    # 0.9 beats 3; 0.4 ties 0.4, beats 0.1 -> 1.5; 0.3 beats 0.1 -> 1  => 5.5 / 9
    m = compute_measures(np.ones((3, 2)), np.ones((3, 2)), correct, scores, n_boot=200)
    assert m["auroc"].value == pytest.approx(5.5 / 9)
    assert m["auroc"].value == pytest.approx(_brute_auroc(scores, correct))


def test_auroc_matches_brute_force_with_ties():
    nll, n_tok, correct, scores = _random_case()
    m = compute_measures(nll, n_tok, correct, scores, n_boot=100)
    assert m["auroc"].value == pytest.approx(_brute_auroc(scores, correct), abs=1e-12)


def test_auroc_bootstrap_replicates_equal_explicit_resamples():
    nll, n_tok, correct, scores = _random_case(P=15, N=4, seed=5)
    boot = _Boot(15, 20, seed=11)
    A = _auroc_pair_matrix(scores, correct)
    pos = correct.sum(1).astype(float)
    reps = _auroc_weighted(boot.C, A, pos, 4 - pos)
    idx = np.random.default_rng(11).integers(0, 15, size=(20, 15))
    for b in range(20):
        y = correct[idx[b]]
        expect = _brute_auroc(scores[idx[b]], y) if 0 < y.sum() < y.size else np.nan
        np.testing.assert_allclose(reps[b], expect, atol=1e-12)


def test_auroc_undefined_and_constant():
    z = np.ones((3, 4))
    s = np.full((3, 4), 0.7)
    wrong = compute_measures(z, z, np.zeros((3, 4), bool), s, n_boot=50)["auroc"]
    assert wrong.value is None and wrong.ci_low is None and wrong.reason == "no correct candidate"
    right = compute_measures(z, z, np.ones((3, 4), bool), s, n_boot=50)["auroc"]
    assert right.value is None and right.reason == "no incorrect candidate"
    mixed = np.array([[1, 0, 0, 1]] * 3, dtype=bool)
    const = compute_measures(z, z, mixed, s, n_boot=50)["auroc"]
    assert const.value == 0.5 and const.reason is None


def test_brier_and_ece():
    scores = np.array([[0.05, 0.05], [0.95, 0.95]])
    correct = np.array([[0, 1], [1, 1]], dtype=bool)
    m = compute_measures(np.ones((2, 2)), np.ones((2, 2)), correct, scores, n_boot=100)
    assert m["brier"].value == pytest.approx((0.05**2 + 0.95**2 + 0.05**2 + 0.05**2) / 4)
    # bin 0: conf 0.05, acc 0.5 (weight 1/2); bin 9: conf 0.95, acc 1 (weight 1/2)
    assert m["ece"].value == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    perfect = compute_measures(np.ones((2, 2)), np.ones((2, 2)), correct, correct.astype(float), n_boot=50)
    assert perfect["ece"].value == pytest.approx(0.0) and perfect["brier"].value == 0.0


# --------------------------------------------------------------------------- relative gap


def test_relative_gap_hand_case():
    correct = np.array(
        [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=bool
    )
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.6],  # g=.25, v=.5, m=1 -> 1/3
            [0.9, 0.9, 0.9, 0.9],  # all correct: skipped
            [0.9, 0.9, 0.9, 0.9],  # all wrong: skipped
            [0.1, 0.1, 0.1, 0.1],  # none passes: v = g -> 0
            [0.2, 0.3, 0.8, 0.9],  # g=.5, v=0 -> -1
        ]
    )
    z = np.ones((5, 4))
    m = compute_measures(z, z, correct, scores, n_boot=200)
    rg = m["relative_gap"]
    assert rg.value == pytest.approx((1 / 3 + 0 - 1) / 3)
    assert rg.n == 3


def test_relative_gap_undefined():
    correct = np.array([[1, 1], [0, 0]], dtype=bool)
    m = compute_measures(np.ones((2, 2)), np.ones((2, 2)), correct, np.full((2, 2), 0.8), n_boot=50)
    rg = m["relative_gap"]
    assert rg.value is None and rg.ci_low is None and rg.ci_high is None
    assert rg.reason == "every prompt is all-correct or all-wrong"
    assert rg.n == 0


# --------------------------------------------------------------------------- solver / verifier / gap


def test_gap_is_solver_minus_verifier():
    nll = np.array([[10.0, 20.0], [30.0, 50.0]])
    n_tok = np.array([[10, 10], [10, 25]])
    correct = np.array([[0, 1], [1, 0]], dtype=bool)
    sel = Selection(index=np.array([1, 0]), fallback=np.array([False, True]), score=np.array([0.9, 0.3]))
    m = compute_measures(nll, n_tok, correct, selection=sel, n_boot=300)
    assert m["solver_uncertainty"].value == pytest.approx(27.5)
    assert m["verifier_uncertainty"].value == pytest.approx(25.0)
    assert m["gap"].value == pytest.approx(2.5)
    assert m["solver_uncertainty_per_token"].value == pytest.approx(2.0)
    assert m["verifier_uncertainty_per_token"].value == pytest.approx(2.5)
    assert m["gap_per_token"].value == pytest.approx(-0.5)
    assert m["solver_length"].value == pytest.approx(13.75)
    assert m["verifier_length"].value == pytest.approx(10.0)
    assert m["verifier_accuracy"].value == 1.0 and m["solver_accuracy"].value == 0.5
    assert m["fallback_rate"].value == 0.5
    for name in ("auroc", "brier", "ece", "relative_gap"):
        assert name not in m  # no scores given


def test_verifier_from_scores_with_fallback():
    nll = np.array([[10.0, 20.0], [30.0, 50.0]])
    n_tok = np.array([[10, 10], [10, 25]])
    correct = np.array([[1, 0], [0, 1]], dtype=bool)
    scores = np.array([[0.9, 0.9], [0.1, 0.2]])  # prompt 0: both pass -> 0; prompt 1: fallback -> 1
    m = compute_measures(nll, n_tok, correct, scores, n_boot=300)
    assert m["verifier_uncertainty"].value == pytest.approx((10 + 50) / 2)
    assert m["gap"].value == pytest.approx(m["solver_uncertainty"].value - m["verifier_uncertainty"].value)
    assert m["verifier_accuracy"].value == 1.0
    assert m["fallback_rate"].value == 0.5
    same = compute_measures(nll, n_tok, correct, scores, hybrid_best_of_n(scores, nll, n_tok), n_boot=300)
    assert same == m


def test_no_verifier_measures_without_scores():
    nll, n_tok, correct, _ = _random_case(P=5, N=3)
    m = compute_measures(nll, n_tok, correct, n_boot=50)
    assert not any(k.startswith("verifier") or k.startswith("gap") or k == "fallback_rate" for k in m)
    assert {"solver_accuracy", "solver_uncertainty", "solver_uncertainty_per_token", "solver_length"} <= set(m)


def test_zero_token_candidates_skip_per_token_nll():
    nll = np.array([[0.0, 10.0], [0.0, 0.0]])
    n_tok = np.array([[0, 5], [0, 0]])
    m = compute_measures(nll, n_tok, np.zeros((2, 2), bool), np.full((2, 2), 0.9), n_boot=50)
    assert m["solver_uncertainty_per_token"].value == pytest.approx(2.0)
    assert m["solver_uncertainty_per_token"].n == 1
    m = compute_measures(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2), bool), np.full((1, 2), 0.9))
    assert m["solver_uncertainty_per_token"].value is None
    assert m["gap_per_token"].value is None and m["gap_per_token"].reason


# --------------------------------------------------------------------------- bootstrap


def test_cis_contain_point_are_floats_and_deterministic():
    nll, n_tok, correct, scores = _random_case()
    answers = [[str(int(c)) if i % 3 else None for i, c in enumerate(row)] for row in correct]
    a = compute_measures(nll, n_tok, correct, scores, answers=answers, n_boot=400, seed=7)
    b = compute_measures(nll, n_tok, correct, scores, answers=answers, n_boot=400, seed=7)
    c = compute_measures(nll, n_tok, correct, scores, answers=answers, n_boot=400, seed=8)
    assert a == b
    assert a["solver_uncertainty"].ci_low != c["solver_uncertainty"].ci_low
    for name, m in a.items():
        assert isinstance(m, Measure)
        assert type(m.value) is float and type(m.ci_low) is float and type(m.ci_high) is float, name
        assert type(m.n) is int
        assert m.reason is None
        assert m.ci_low <= m.value <= m.ci_high, name
        assert all(math.isfinite(x) for x in (m.value, m.ci_low, m.ci_high))


def test_ci_is_percentile_of_prompt_resamples():
    nll, n_tok, correct, scores = _random_case(P=30, N=4)
    m = compute_measures(nll, n_tok, correct, n_boot=500, seed=4)
    idx = np.random.default_rng(4).integers(0, 30, size=(500, 30))
    reps = correct.mean(axis=1)[idx].mean(axis=1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    assert m["solver_accuracy"].ci_low == pytest.approx(lo)
    assert m["solver_accuracy"].ci_high == pytest.approx(hi)


def test_gap_ci_is_paired():
    # verifier NLL = solver NLL - 5 on every prompt: paired gap CI collapses to [5, 5].
    rng = np.random.default_rng(0)
    P = 50
    nll = np.stack([rng.uniform(10, 100, P), np.zeros(P)], axis=1)
    nll[:, 1] = nll[:, 0] - 10.0  # solver mean = x - 5; pick (index 1) = x - 10
    sel = Selection(index=np.ones(P, int), fallback=np.zeros(P, bool), score=np.ones(P))
    m = compute_measures(nll, np.ones((P, 2)), np.zeros((P, 2), bool), selection=sel, n_boot=300)
    assert m["gap"].value == pytest.approx(5.0)
    assert m["gap"].ci_low == pytest.approx(5.0) and m["gap"].ci_high == pytest.approx(5.0)
    assert m["solver_uncertainty"].ci_high - m["solver_uncertainty"].ci_low > 1.0


def test_one_prompt_has_no_ci():
    m = compute_measures([[1.0, 2.0]], [[1, 1]], [[True, False]], [[0.9, 0.2]])
    for name, meas in m.items():
        assert meas.value is not None, name
        assert meas.ci_low is None and meas.ci_high is None
        assert meas.reason == "one prompt"
    assert m["auroc"].value == 1.0


def test_too_few_defined_replicates_gives_no_ci():
    boot = _Boot(10, 100, seed=0)
    reps = np.full(100, np.nan)
    reps[:40] = 0.5
    m = _finish(boot, 0.5, reps, 10)
    assert m.value == 0.5 and m.ci_low is None and m.ci_high is None
    assert "40 of 100" in m.reason
    reps[:60] = np.linspace(0.4, 0.6, 60)
    m = _finish(boot, 0.5, reps, 10)  # enough defined: CI over the defined ones only
    assert m.reason is None and 0.4 <= m.ci_low < m.ci_high <= 0.6


def test_auroc_ci_skips_one_class_resamples():
    # Only prompt 0 has correct candidates: resamples without it are undefined (~35%).
    correct = np.zeros((10, 3), bool)
    correct[0, 0] = True
    scores = np.full((10, 3), 0.1)
    scores[0, 0] = 0.9
    m = compute_measures(np.ones((10, 3)), np.ones((10, 3)), correct, scores, n_boot=500)["auroc"]
    assert m.value == 1.0 and m.ci_low == 1.0 and m.ci_high == 1.0 and m.reason is None


def test_paired_difference():
    rng = np.random.default_rng(1)
    before = rng.uniform(0, 1, 200)
    shifted = paired_difference(before, before + 0.1 + rng.normal(0, 0.05, 200))
    assert shifted.value == pytest.approx(0.1, abs=0.02)
    assert shifted.ci_low > 0 and shifted.ci_low <= shifted.value <= shifted.ci_high
    assert shifted.n == 200
    noise = rng.normal(0, 0.05, 200)
    flat = paired_difference(before, before + noise - noise.mean())
    assert flat.ci_low < 0 < flat.ci_high
    assert paired_difference(before, before + 0.1, seed=3) == paired_difference(before, before + 0.1, seed=3)
    one = paired_difference([0.2], [0.5])
    assert one.value == pytest.approx(0.3) and one.ci_low is None and one.reason == "one prompt"
    with pytest.raises(ValueError, match="shape mismatch"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_difference([], [])


# --------------------------------------------------------------------------- validation / speed


def test_input_validation():
    z = np.ones((3, 4))
    c = np.zeros((3, 4), bool)
    with pytest.raises(ValueError, match="shape mismatch"):
        compute_measures(z, np.ones((3, 5)), c)
    with pytest.raises(ValueError, match="shape mismatch"):
        compute_measures(z, z, np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="shape mismatch"):
        compute_measures(z, z, c, scores=np.ones((4, 3)))
    with pytest.raises(ValueError, match="P = 0"):
        compute_measures(np.ones((0, 4)), np.ones((0, 4)), np.zeros((0, 4), bool))
    with pytest.raises(ValueError, match="N = 0"):
        compute_measures(np.ones((3, 0)), np.ones((3, 0)), np.zeros((3, 0), bool))
    with pytest.raises(ValueError, match="2-d"):
        compute_measures(np.ones(3), np.ones(3), np.zeros(3, bool))
    with pytest.raises(ValueError, match="sigma"):
        compute_measures(z, z, c, scores=z * 0.5, sigma=2.0)
    with pytest.raises(ValueError, match="scores"):
        compute_measures(z, z, c, scores=z * 2)
    with pytest.raises(ValueError, match="correct"):
        compute_measures(z, z, z * 0.5)
    with pytest.raises(ValueError, match="selection.index"):
        bad = Selection(index=np.array([0, 1]), fallback=np.zeros(2, bool), score=np.zeros(2))
        compute_measures(z, z, c, selection=bad)
    with pytest.raises(ValueError, match="nll"):
        compute_measures(z * np.nan, z, c)

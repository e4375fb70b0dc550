"""Hybrid best-of-N selection (si_bench.select) on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from si_bench.select import Selection, hybrid_best_of_n, per_token_nll


def test_picks_lowest_per_token_nll_among_passing():
    scores = [[0.9, 0.2, 0.7, 0.6]]
    nll = [[40.0, 1.0, 30.0, 50.0]]  # candidate 1 has the lowest NLL but fails sigma
    n_tok = [[10, 10, 20, 100]]  # per token: 4.0, 0.1, 1.5, 0.5
    sel = hybrid_best_of_n(scores, nll, n_tok)
    assert isinstance(sel, Selection)
    assert sel.index.tolist() == [3]  # lowest per-token (0.5), not lowest total (30)
    assert sel.fallback.tolist() == [False]
    assert sel.score.tolist() == [0.6]


def test_score_equal_to_sigma_passes():
    sel = hybrid_best_of_n([[0.5, 0.49]], [[10.0, 1.0]], [[1, 1]], sigma=0.5)
    assert sel.index.tolist() == [0]
    assert not sel.fallback[0]


def test_tie_in_per_token_nll_takes_lowest_index():
    # Candidates 1 and 2 tie at 0.5 per token (different totals); candidate 0 fails sigma.
    sel = hybrid_best_of_n([[0.1, 0.8, 0.9]], [[0.0, 5.0, 10.0]], [[1, 10, 20]])
    assert sel.index.tolist() == [1]


def test_fallback_highest_score_then_nll_then_index():
    scores = np.array(
        [
            [0.1, 0.4, 0.3, 0.2],  # clear highest score: 1
            [0.4, 0.1, 0.4, 0.4],  # tie on score 0.4 -> lowest per-token NLL among 0, 2, 3 -> 3
            [0.3, 0.3, 0.1, 0.3],  # tie on score and per-token NLL (0, 1, 3) -> lowest index 0
        ]
    )
    nll = np.array([[1.0, 9.0, 1.0, 1.0], [6.0, 0.0, 4.0, 2.0], [2.0, 2.0, 0.0, 2.0]])
    n_tok = np.ones((3, 4))
    sel = hybrid_best_of_n(scores, nll, n_tok)
    assert sel.index.tolist() == [1, 3, 0]
    assert sel.fallback.tolist() == [True, True, True]
    assert sel.score.tolist() == [0.4, 0.4, 0.3]


def test_mixed_rows_fallback_flags():
    scores = [[0.9, 0.1], [0.2, 0.3], [0.6, 0.7]]
    nll = [[5.0, 1.0], [1.0, 5.0], [8.0, 2.0]]
    n_tok = [[1, 1], [1, 1], [1, 1]]
    sel = hybrid_best_of_n(scores, nll, n_tok)
    assert sel.index.tolist() == [0, 1, 1]
    assert sel.fallback.tolist() == [False, True, False]
    assert sel.index.dtype.kind == "i" and sel.fallback.dtype == bool


def test_zero_tokens_is_infinite_unless_all_zero():
    # n_tokens 0 loses every NLL comparison...
    sel = hybrid_best_of_n([[0.9, 0.9]], [[0.0, 50.0]], [[0, 10]])
    assert sel.index.tolist() == [1]
    # ...unless every candidate of the prompt has 0 tokens: then total NLL ranks them.
    sel = hybrid_best_of_n([[0.9, 0.9, 0.9]], [[3.0, 1.0, 2.0]], [[0, 0, 0]])
    assert sel.index.tolist() == [1]
    # Only zero-token candidates pass: the first passing one wins, never a failing one.
    sel = hybrid_best_of_n([[0.1, 0.9, 0.9]], [[0.0, 5.0, 1.0]], [[5, 0, 0]])
    assert sel.index.tolist() == [1]
    ptn = per_token_nll(np.array([[2.0, 3.0], [4.0, 6.0]]), np.array([[0, 3], [0, 0]]))
    assert ptn.tolist() == [[np.inf, 1.0], [4.0, 6.0]]


def test_validation():
    ok = np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match="shape mismatch"):
        hybrid_best_of_n(ok, np.ones((2, 4)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="sigma"):
        hybrid_best_of_n(ok, ok, ok, sigma=1.5)
    with pytest.raises(ValueError, match="sigma"):
        hybrid_best_of_n(ok, ok, ok, sigma=-0.1)
    with pytest.raises(ValueError, match="2-d"):
        hybrid_best_of_n([0.5, 0.5], [1.0, 1.0], [1, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hybrid_best_of_n(ok + 1.0, ok, ok)
    with pytest.raises(ValueError, match="N = 0"):
        hybrid_best_of_n(np.zeros((2, 0)), np.zeros((2, 0)), np.zeros((2, 0)))
    with pytest.raises(ValueError, match="n_tokens"):
        hybrid_best_of_n(ok, ok, -ok)

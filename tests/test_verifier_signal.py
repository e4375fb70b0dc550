"""Whether the verifier score decides anything, said per result: within-prompt AUROC, who decided the picks, the
lift over a random pick, and the verdict in words in the evaluation, the fits built on it and the leaderboard row;
the `majority` verifier (no forward pass) and `corrupt()`'s wrong few-shot examples."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from conftest import table_rows
from scripted import SAMPLES, SCRIPT
from synth_store import make_run

from si_bench import store
from si_bench.datasets import get_dataset
from si_bench.evaluation import evaluate, fewshot_pool
from si_bench.measures import NO_SIGNAL, compute_measures
from si_bench.mock_backend import write_scripted_model
from si_bench.verify import agreement, corrupt, get_verifier


def _within_by_hand(scores, correct) -> float:
    wins = pairs = 0.0
    for s, c in zip(scores, correct, strict=True):
        for i in np.flatnonzero(c):
            for j in np.flatnonzero(~c):
                wins += (s[i] > s[j]) + 0.5 * (s[i] == s[j])
                pairs += 1
    return wins / pairs


def test_within_prompt_auroc_ignores_what_separates_prompts():
    # The score is high on the prompts the model solves and says nothing within a prompt (the audit's demo case):
    # pooled it looks useful, within prompts it is chance, and the verdict says so.
    rng = np.random.default_rng(3)
    P, N = 40, 4
    easy = rng.random(P) < 0.5
    correct = rng.random((P, N)) < np.where(easy, 0.8, 0.1)[:, None]
    scores = np.clip(np.where(easy, 0.8, 0.3)[:, None] + rng.normal(0, 0.01, (P, N)), 0, 1)
    nll = rng.uniform(1, 3, (P, N))
    m = compute_measures(nll, np.ones((P, N)), correct, scores, n_boot=300)
    assert m["auroc_within"].value == pytest.approx(_within_by_hand(scores, correct))
    assert m["auroc"].ci_low > 0.5 and m["auroc_within"].ci_low < 0.5 < m["auroc_within"].ci_high
    from si_bench.measures import verifier_signal

    verdict = verifier_signal(m)
    assert verdict.value == 0.0 and verdict.reason.startswith(NO_SIGNAL)


def test_pick_shares_add_up_and_lift_is_against_a_random_pick():
    rng = np.random.default_rng(5)
    P, N = 30, 4
    correct = rng.random((P, N)) < 0.4
    scores = rng.random((P, N))
    nll = rng.uniform(1, 3, (P, N))
    m = compute_measures(nll, np.ones((P, N)), correct, scores, n_boot=100)
    shares = m["picks_by_score"].value + m["picks_by_nll"].value + m["fallback_rate"].value
    assert shares == pytest.approx(1.0)
    assert m["pick_lift"].value == pytest.approx(m["verifier_accuracy"].value - m["solver_accuracy"].value)
    # Every candidate passing: the lowest NLL decides every pick.
    flat = compute_measures(nll, np.ones((P, N)), correct, np.ones((P, N)), n_boot=100)
    assert (flat["picks_by_nll"].value, flat["picks_by_score"].value) == (1.0, 0.0)


@pytest.fixture(scope="module")
def flat_model(tmp_path_factory) -> str:
    """The scripted model with a verifier that says the same of every candidate: no signal by construction."""
    return str(write_scripted_model(tmp_path_factory.mktemp("flat-model"),
                                    [dataclasses.replace(r, score=0.75) for r in SCRIPT]))


def test_a_verifier_without_signal_is_said_so_in_the_evaluation(db, scripted_cfg, flat_model):
    from si_bench.reports.terminal import evaluation_table

    result = evaluate(dataclasses.replace(scripted_cfg, model=flat_model), db=db)
    m = result.metrics
    assert m["auroc_within"].value == 0.5 and m["picks_by_nll"].value == 1.0
    assert m["pick_lift"].value == pytest.approx(0.0 - 2 / SAMPLES)  # the lowest NLL is the wrong answer
    assert m["verifier_signal"].value == 0.0 and m["verifier_signal"].reason.startswith(NO_SIGNAL)
    assert NO_SIGNAL in str(evaluation_table(result).caption)
    found = store.user_query(db, "SELECT name, value, reason FROM metrics WHERE name = 'verifier_signal'")
    assert found.value.tolist() == [0.0] and found.reason[0].startswith(NO_SIGNAL)


def test_an_evaluation_finished_before_the_signal_gets_it_when_read_back(db, scripted_cfg):
    first = evaluate(scripted_cfg, db=db)
    names = ("auroc_within", "picks_by_score", "picks_by_nll", "pick_lift", "verifier_signal")
    with store.write(db) as con:  # as a store written before these figures existed
        con.execute("DELETE FROM metrics WHERE name IN (SELECT unnest(?::VARCHAR[]))", [list(names)])
    again = evaluate(scripted_cfg, db=db)
    assert again.generated == 0 and again.scored == 0
    assert {n: again.metrics[n] for n in names} == {n: first.metrics[n] for n in names}
    stored = {r[1] for r in table_rows(db, "metrics", "eval_id, name")}
    assert set(names) <= stored


def test_fits_and_leaderboard_rows_carry_the_verdict(tmp_path):
    from si_bench.fit import FitOptions
    from si_bench.reports import leaderboard
    from si_bench.trajectories import fit_store, load_summary

    db = str(tmp_path / "synth.duckdb")
    # Too few points to fit (fitting is not what is tested here): the verdict rides on the entry all the same.
    silent = make_run(db, "silent-run", P=12, n_boot=20, ts=(0, 1, 2))
    mixed = make_run(db, "mixed-run", P=12, n_boot=20, ts=(0, 1, 2))
    flags = [(e, 0.0) for e in silent] + [(e, 0.0 if k < 2 else 1.0) for k, e in enumerate(mixed)]
    with store.write(db) as con:
        store.upsert(con, "metrics", [{"eval_id": e, "name": "verifier_signal", "value": v, "n": 12} for e, v in flags])
    entries = fit_store(db, FitOptions(n_boot=20))
    out = {e.trajectory.run_id: e.to_json() for e in entries}
    assert out["silent-run"]["verifier_signal"] == NO_SIGNAL
    assert out["mixed-run"]["verifier_signal"].startswith("the verifier score carries no signal in 2 of 3")
    table = leaderboard.build_table(leaderboard.frames(entries, [], load_summary(db)))
    notes = dict(zip(table.run_id, table.note, strict=True))
    assert NO_SIGNAL in notes["silent-run"] and "2 of 3" in notes["mixed-run"]


def test_majority_scores_are_the_share_of_samples_that_agree():
    assert agreement("4", ("4", "5", "4", None)) == 0.5
    assert agreement("5", ("4", "5", "4", None)) == 0.25
    assert agreement(None, ("4", None)) == 0.0
    majority = get_verifier("majority")
    assert majority.key(0, False) == majority.key(2, True)  # neither shots nor a template change agreement
    assert majority.key(0, False) != get_verifier("tf").key(0, False)


def test_majority_verifies_stored_samples_without_the_model(db, scripted_cfg, monkeypatch):
    evaluate(scripted_cfg, db=db)  # samples stored (with TF verdicts)

    def no_model(*_a, **_k):
        raise AssertionError("majority loaded the model")

    monkeypatch.setattr("si_bench.backends.load_lm", no_model)
    result = evaluate(dataclasses.replace(scripted_cfg, verifier="majority"), db=db)
    assert result.generated == 0 and result.scored == 6 * SAMPLES
    rows = store.query(db, "SELECT sample_idx, score, raw->>'method' AS method FROM verdicts v JOIN evaluations e "
                           "USING (verifier_key) WHERE e.eval_id = ? ORDER BY prompt_id, sample_idx", [result.eval_id])
    # Sample 0 is "#### -1" (alone); samples 1 and 2 give the reference answer (two of three agree).
    assert rows.score.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3] * 6)
    assert set(rows.method) == {"majority"}
    assert result.metrics["verifier_accuracy"].value == 1.0  # the hybrid rule: both right ones pass, lowest NLL


@pytest.mark.parametrize("dataset", ["arith", "gsm8k"])
def test_a_corrupted_example_is_wrong_throughout(dataset):
    ds = get_dataset(dataset)
    for p in fewshot_pool(ds)[:4]:
        wrong = corrupt(p)
        extracted, correct = ds.check(wrong, p.answer)
        assert not correct and extracted is not None
        assert not re.search(rf"(?<![\w.]){re.escape(p.answer)}(?![\w]|\.\d)", wrong), wrong  # nowhere right
    example = next(p for p in fewshot_pool(get_dataset("arith")) if p.answer == "32")
    assert corrupt(example).endswith("= 33\n#### 33")


def test_few_shot_verdicts_changed_key_with_the_examples_zero_shot_did_not():
    tf = get_verifier("tf")
    assert tf.key(0, False) == "beaa90ccfc1a5af7"  # as stored by earlier versions (tests/fixtures/store-v2)
    assert tf.key(2, False) != "f961d49d94608592"  # the 2-shot key of the old, half-wrong examples

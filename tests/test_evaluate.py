"""`evaluate`: end to end on tiny-test (rows written, a killed process resumes); its bookkeeping on the scripted
model (exact measures and picks, idempotence, new sigma or N, resume after a crash)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from conftest import run_cli, run_process, table_rows
from scripted import PICKS, SAMPLES, SCRIPT, expected_measures

from si_bench import faults
from si_bench.evaluation import evaluate

KEYS = {
    "samples": "gen_id, prompt_id, sample_idx",
    "verdicts": "gen_id, prompt_id, sample_idx",
    "picks": "eval_id, prompt_id",
    "metrics": "eval_id, name",
}


def counts(db: str) -> dict[str, int]:
    return {t: len(table_rows(db, t, KEYS[t])) for t in KEYS}


def test_evaluate_writes_expected_rows(db, tiny_cfg):
    result = evaluate(tiny_cfg, db=db)
    P, N = 6, 2
    assert counts(db)["samples"] == P * N
    assert counts(db)["verdicts"] == P * N
    assert counts(db)["picks"] == P
    assert result.generated == P * N and result.scored == P * N
    names = {r[1] for r in table_rows(db, "metrics", "name")}
    assert {"solver_accuracy", "verifier_accuracy", "solver_uncertainty", "verifier_uncertainty", "gap",
            "gap_per_token", "pass@1", "pass@2", "maj@2", "auroc", "brier", "ece", "relative_gap",
            "fallback_rate"} <= names
    summary = table_rows(db, "summary", "eval_id")
    assert len(summary) == 1
    m = result.metrics
    assert math.isclose(m["gap"].value, m["solver_uncertainty"].value - m["verifier_uncertainty"].value)
    for row in table_rows(db, "samples", KEYS["samples"]):
        nll, n_tokens = row[6], row[7]
        assert nll > 0 and 1 <= n_tokens <= 8


@pytest.mark.parametrize("sigma", sorted(PICKS))
def test_scripted_evaluation_measures_and_picks_exactly(db, scripted_cfg, sigma):
    result = evaluate(dataclasses.replace(scripted_cfg, sigma=sigma), db=db)
    P = 6
    assert result.generated == P * SAMPLES and result.scored == P * SAMPLES
    for name, value in expected_measures(sigma).items():
        assert result.metrics[name].value == pytest.approx(value, abs=1e-9), name
    samples = table_rows(db, "samples", KEYS["samples"])
    assert [(row[6], row[7]) for row in samples[:SAMPLES]] == [(-r.logprob, r.n_tokens) for r in SCRIPT]
    scores = [row[4] for row in table_rows(db, "verdicts", KEYS["verdicts"])]
    assert scores == pytest.approx([r.score for r in SCRIPT] * P, abs=1e-9)
    picked, fallback = PICKS[sigma]
    picks = table_rows(db, "picks", KEYS["picks"])
    assert {(row[2], row[4]) for row in picks} == {(picked, "fallback" if fallback else "passed")}


@pytest.mark.parametrize("score", [0.0, 0.25, 0.9, 1.0])
def test_scripted_choices_give_the_scripted_score_under_either_verifier(score):
    from si_bench.mock_backend import choice_logliks
    from si_bench.verify import VERIFIERS

    for method, n_choices in (("tf", 2), ("qe", 5)):
        assert VERIFIERS[method].score(choice_logliks(score, n_choices)) == pytest.approx(score, abs=1e-8), method


def test_second_identical_run_adds_nothing(db, scripted_cfg):
    evaluate(scripted_cfg, db=db)
    before = {t: table_rows(db, t, KEYS[t]) for t in KEYS}
    again = evaluate(dataclasses.replace(scripted_cfg), db=db)
    assert again.generated == 0 and again.scored == 0
    assert {t: table_rows(db, t, KEYS[t]) for t in KEYS} == before


def test_other_sigma_is_a_new_evaluation_over_the_same_samples(db, scripted_cfg):
    first = evaluate(scripted_cfg, db=db)
    second = evaluate(dataclasses.replace(scripted_cfg, sigma=0.2), db=db)
    assert second.eval_id != first.eval_id and second.gen_id == first.gen_id
    assert second.generated == 0 and second.scored == 0
    assert len(table_rows(db, "summary", "eval_id")) == 2
    assert (first.metrics["verifier_accuracy"].value, second.metrics["verifier_accuracy"].value) == (1.0, 0.0)


def test_other_sample_count_never_overwrites(db, scripted_cfg):
    first = evaluate(scripted_cfg, db=db)
    second = evaluate(dataclasses.replace(scripted_cfg, samples=2), db=db)
    assert second.gen_id != first.gen_id
    assert counts(db)["samples"] == 6 * 3 + 6 * 2


@pytest.mark.parametrize("fault", ["sample_chunk:2", "verify_chunk:1"])
def test_interrupted_evaluation_resumes_to_the_same_result(db, scripted_cfg, tmp_path, monkeypatch, fault):
    reference = evaluate(scripted_cfg, db=str(tmp_path / "ref.duckdb"))
    monkeypatch.setenv("SI_BENCH_FAIL_AT", fault)
    faults.reset()
    with pytest.raises(faults.InjectedFault):
        evaluate(scripted_cfg, db=db)
    partial = counts(db)
    assert 0 < partial["samples"] <= 18 and partial["picks"] == 0
    monkeypatch.delenv("SI_BENCH_FAIL_AT")
    resumed = evaluate(scripted_cfg, db=db)
    assert resumed.eval_id == reference.eval_id
    assert resumed.generated == 18 - partial["samples"]
    for table in KEYS:
        assert table_rows(db, table, KEYS[table]) == table_rows(str(tmp_path / "ref.duckdb"), table, KEYS[table])
    assert resumed.metrics == reference.metrics


def comparable(db: str, table: str) -> list[tuple]:
    """Rows with floats rounded: batch composition changes float sums in the last bits only."""
    rows = table_rows(db, table, KEYS[table])
    return [tuple(round(v, 4) if isinstance(v, float) else v for v in row) for row in rows]


def test_killed_process_resumes_to_the_same_result(db, tiny_cfg, tmp_path):
    args = ["evaluate", "--model", "tiny-test", "--limit", "6", "--samples", "2", "--max-new-tokens", "8",
            "--n-boot", "50", "--batch-size", "8", "--chunk-prompts", "2"]
    ref_db = str(tmp_path / "ref.duckdb")
    run_cli(*args, "--db", ref_db, check=True)
    killed = run_process(*args, "--db", db, env={"SI_BENCH_FAIL_AT": "sample_chunk:1:kill"})
    assert killed.returncode == -9
    assert 0 < counts(db)["samples"] < 12
    run_cli(*args, "--db", db, check=True)
    for table in KEYS:
        assert comparable(db, table) == comparable(ref_db, table)

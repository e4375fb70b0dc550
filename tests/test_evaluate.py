"""`evaluate` end to end on tiny-test: rows written, idempotence, resume after a crash."""

from __future__ import annotations

import dataclasses
import math

import pytest
from conftest import run_cli, table_rows

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
            "gap_per_token", "pass@1", "pass@2",
            "maj@2", "auroc", "brier", "ece", "relative_gap", "fallback_rate"} <= names
    summary = table_rows(db, "summary", "eval_id")
    assert len(summary) == 1
    m = result.metrics
    assert math.isclose(m["gap"].value, m["solver_uncertainty"].value - m["verifier_uncertainty"].value)
    for row in table_rows(db, "samples", KEYS["samples"]):
        nll, n_tokens = row[6], row[7]
        assert nll > 0 and 1 <= n_tokens <= 8


def test_second_identical_run_adds_nothing(db, tiny_cfg):
    evaluate(tiny_cfg, db=db)
    before = {t: table_rows(db, t, KEYS[t]) for t in KEYS}
    again = evaluate(dataclasses.replace(tiny_cfg), db=db)
    assert again.generated == 0 and again.scored == 0
    assert {t: table_rows(db, t, KEYS[t]) for t in KEYS} == before


def test_other_sigma_is_a_new_evaluation_over_the_same_samples(db, tiny_cfg):
    first = evaluate(tiny_cfg, db=db)
    second = evaluate(dataclasses.replace(tiny_cfg, sigma=0.9), db=db)
    assert second.eval_id != first.eval_id and second.gen_id == first.gen_id
    assert second.generated == 0 and second.scored == 0
    assert len(table_rows(db, "summary", "eval_id")) == 2


def test_other_sample_count_never_overwrites(db, tiny_cfg):
    first = evaluate(tiny_cfg, db=db)
    second = evaluate(dataclasses.replace(tiny_cfg, samples=3), db=db)
    assert second.gen_id != first.gen_id
    assert counts(db)["samples"] == 6 * 2 + 6 * 3


def comparable(db: str, table: str) -> list[tuple]:
    """Rows with floats rounded: batch composition changes float sums in the last bits only."""
    return [tuple(round(v, 4) if isinstance(v, float) else v for v in row)
            for row in table_rows(db, table, KEYS[table])]


@pytest.mark.parametrize("fault", ["sample_chunk:2", "verify_chunk:1"])
def test_interrupted_evaluation_resumes_to_the_same_result(db, tiny_cfg, tmp_path, monkeypatch, fault):
    reference = evaluate(tiny_cfg, db=str(tmp_path / "ref.duckdb"))
    monkeypatch.setenv("SI_BENCH_FAIL_AT", fault)
    faults.reset()
    with pytest.raises(faults.InjectedFault):
        evaluate(tiny_cfg, db=db)
    partial = counts(db)
    assert 0 < partial["samples"] <= 12 and partial["picks"] == 0
    monkeypatch.delenv("SI_BENCH_FAIL_AT")
    resumed = evaluate(tiny_cfg, db=db)
    assert resumed.eval_id == reference.eval_id
    assert resumed.generated == 12 - partial["samples"]
    for table in KEYS:
        if table != "metrics":
            assert comparable(db, table) == comparable(str(tmp_path / "ref.duckdb"), table)
    assert {k: round(v.value, 4) for k, v in resumed.metrics.items() if v.value is not None} == {
        k: round(v.value, 4) for k, v in reference.metrics.items() if v.value is not None
    }


def test_killed_process_resumes_to_the_same_result(db, tiny_cfg, tmp_path):
    args = ["evaluate", "--model", "tiny-test", "--limit", "6", "--samples", "2", "--max-new-tokens", "8",
            "--n-boot", "50", "--batch-size", "8", "--chunk-prompts", "2"]
    ref_db = str(tmp_path / "ref.duckdb")
    run_cli(*args, "--db", ref_db, check=True)
    killed = run_cli(*args, "--db", db, env={"SI_BENCH_FAIL_AT": "sample_chunk:1:kill"})
    assert killed.returncode == -9
    assert 0 < counts(db)["samples"] < 12
    run_cli(*args, "--db", db, check=True)
    for table in KEYS:
        assert comparable(db, table) == comparable(ref_db, table)

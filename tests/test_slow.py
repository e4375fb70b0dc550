"""Real-model checks on the embedded smollm2-135m (minutes on a CPU): `pytest -m slow`."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_smollm2_has_a_learning_signal_on_arith(db):
    from si_bench.evaluation import EvalConfig, evaluate

    result = evaluate(EvalConfig(model="smollm2-135m", dataset="arith", limit=16, samples=4, max_new_tokens=32,
                                 n_boot=200), db=db)
    m = result.metrics
    assert 0.05 < m["solver_accuracy"].value < 0.95  # neither hopeless nor saturated: room to improve
    assert m["pass@4"].value >= m["solver_accuracy"].value
    assert 1 < m["solver_uncertainty"].value < 200
    assert m["auroc"].value is not None


def test_smollm2_self_improvement_round_trains_and_measures(tmp_path):
    from si_bench import store
    from si_bench.api import run
    from si_bench.trainers.config import SelfImproveConfig

    db = str(tmp_path / "si.duckdb")
    [run_id] = run(SelfImproveConfig(mode="regenerate", rounds=1, train_prompts=16, test_limit=16, max_new_tokens=32,
                                     n_boot=200),
                   db=db, workdir=str(tmp_path / "runs"), log=lambda _: None)
    losses = store.query(db, "SELECT json_extract(hyperparameters, '$.train_loss')::DOUBLE AS loss FROM checkpoints "
                             "WHERE run_id = ?", [run_id])
    assert len(losses) == 1 and 0 < losses.loss[0] < 10

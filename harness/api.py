"""The Python API behind every `si-bench` command; scripts and notebooks call these directly."""

from __future__ import annotations

from typing import Any, Callable

from harness import store
from harness.evaluation import EvalConfig, EvalResult, evaluate  # noqa: F401 - re-exported

__all__ = ["EvalConfig", "EvalResult", "evaluate", "run", "train_round", "list_runs", "trajectory"]


def run(cfg, *, seeds: list[int] | None = None, db: str = store.DEFAULT_DB, workdir: str | None = None,
        progress: Any = None, log: Callable[[str], None] = print) -> list[str]:
    """Start or continue self-improvement runs (one per seed); return their run ids."""
    from dataclasses import replace

    from trainers.rounds import SelfImproveRun

    run_ids = []
    for seed in seeds or [cfg.seed]:
        job = SelfImproveRun(replace(cfg, seed=seed), db, workdir=workdir, progress=progress, log=log)
        job.run()
        run_ids.append(job.run_id)
    return run_ids


def train_round(run_id: str, *, db: str = store.DEFAULT_DB, workdir: str | None = None, progress: Any = None,
                log: Callable[[str], None] = print) -> int:
    """One more round (or half epoch) of an existing run, with its test measurement; returns the step number."""
    from trainers.rounds import SelfImproveRun

    job = SelfImproveRun.load(run_id, db, workdir=workdir, progress=progress, log=log)
    if job.steps_done() >= job.steps_total():
        job.extend()
    job.register()
    if job.steps_done() == 0:
        job.measure_test(0)
    return job.train_step()


def list_runs(db: str = store.DEFAULT_DB):
    """Runs with model, dataset, mode, rounds done and status (a DataFrame)."""
    return store.query(db, """
        SELECT run_id, model, dataset, mode, verifier, seed, rounds_done,
               CAST(json_extract(config, '$.rounds') AS INTEGER) AS rounds, external_used, status, updated_at
        FROM runs ORDER BY created_at""")


def trajectory(run_id: str, db: str = store.DEFAULT_DB, role: str = "test"):
    """A run's measured trajectory: t, U_s, U_v, G and accuracies with their CIs (a DataFrame)."""
    return store.query(db, """
        SELECT t, t_unit, split, U_s, U_s_lo, U_s_hi, U_v, U_v_lo, U_v_hi, gap, gap_lo, gap_hi,
               solver_acc, solver_acc_lo, solver_acc_hi, verifier_acc, verifier_acc_lo, verifier_acc_hi
        FROM summary WHERE run_id = ? AND role = ? AND status = 'done' ORDER BY t""", [run_id, role])

"""The Python API behind every `si-bench` command; scripts and notebooks call these directly.

A facade: each function hands its work to the module that owns it (evaluation, trainers, fit, reports,
store), so a command line and a script get the same defaults, checks and results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from si_bench import evaluation, lm_eval_import, locks, store, trajectories
from si_bench.errors import SIBenchError
from si_bench.evaluation import EvalConfig, EvalResult
from si_bench.fit import FitOptions, SimulateConfig, fit_frame, fit_groups, read_table, simulation, time_column
from si_bench.lm_eval_import import Imported, LmEvalImportOptions
from si_bench.merge import Merged, merge
from si_bench.reports import leaderboard as board
from si_bench.sweep import JobOutcome, SweepConfig
from si_bench.sweep import sweep as run_sweep
from si_bench.trainers.config import SelfImproveConfig
from si_bench.trainers.rounds import SelfImproveRun
from si_bench.trajectories import fit_store

__all__ = ["EvalConfig", "EvalResult", "FitOptions", "SelfImproveConfig", "SimulateConfig", "SweepConfig", "evaluate",
           "run", "sweep", "train_round", "list_runs", "lm_eval", "run_points", "run_change", "fit", "fit_file",
           "leaderboard", "import_store", "import_lm_eval", "simulate"]

Log = Callable[[str], None]


def evaluate(cfg: EvalConfig | None = None, *, db: str = store.DEFAULT_DB, progress: Any = None) -> EvalResult:
    """Run (or resume, or look up) one evaluation: sample, self-verify, pick, measure, store."""
    store.check_writable(db)
    store.check_store(db)
    return evaluation.evaluate(cfg, db=db, progress=progress)


def run(cfg: SelfImproveConfig, *, seeds: list[int] | None = None, db: str = store.DEFAULT_DB,
        workdir: str | None = None, progress: Any = None, log: Log = print) -> list[str]:
    """Start or continue self-improvement runs (one per seed); return their run ids."""
    from contextlib import ExitStack
    from dataclasses import replace

    store.check_writable(db)
    store.check_store(db)
    jobs = [SelfImproveRun(replace(cfg, seed=seed), db, workdir=workdir, progress=progress, log=log)
            for seed in seeds or [cfg.seed]]  # every seed's input checked before any work
    with ExitStack() as held:  # and every seed's run free of another writer
        for job in jobs:
            held.enter_context(locks.run_lock(db, job.run_id))
        for job in jobs:
            job.run()
    return [job.run_id for job in jobs]


def lm_eval(args: list[str]) -> None:
    """lm-eval's own command line with si-bench's model classes registered: `lm_eval(ARGS)` is `lm-eval ARGS`,
    and `--model si-hf` adds the solver uncertainty and each sample's NLL to the solver tasks' results."""
    from si_bench.lmeval import lm_eval_cli

    lm_eval_cli(args)


def sweep(cfg: SweepConfig, *, db: str = store.DEFAULT_DB, progress: Any = None,
          log: Log = print) -> list[JobOutcome]:
    """Run a sweep's jobs not yet done (locally or on Ray), merging each finished shard into db; one outcome per
    job of the grid: done, skipped (done before) or failed with its error."""
    store.check_store(db)
    return run_sweep(cfg, db, progress=progress, log=log)


def train_round(run_id: str, *, db: str = store.DEFAULT_DB, workdir: str | None = None, progress: Any = None,
                log: Log = print) -> int:
    """One more round (or half epoch) of an existing run, with its test measurement; returns the step number."""
    store.check_store(db)
    return SelfImproveRun.load(run_id, db, workdir=workdir, progress=progress, log=log).next_step()


def list_runs(db: str = store.DEFAULT_DB):
    """Runs with model, dataset, mode, progress and status (a DataFrame)."""
    store.check_store(db)
    return store.runs_frame(db)


def run_points(run_id: str, db: str = store.DEFAULT_DB, role: str = "test"):
    """A run's measured trajectory: t, uncertainties, gap and accuracies with their CIs (a DataFrame)."""
    return trajectories.run_points(db, run_id, role)


def run_change(run_id: str, db: str = store.DEFAULT_DB) -> dict:
    """Last test measurement minus the first, with paired bootstrap CIs over the test prompts."""
    return trajectories.run_change(db, run_id)


def fit(db: str = store.DEFAULT_DB, options: FitOptions | None = None, *, group_by: str = "run",
        save: bool = True, progress: Any = None) -> dict:
    """Fit every stored trajectory (saved into `fits`); {"db", "unit", "n_fitted", "trajectories": [...]}."""
    options = options or FitOptions()
    store.check_store(db)
    entries = fit_store(db, options, group_by=group_by, save=save, progress=progress)
    return {"db": str(db), "unit": options.unit, "n_fitted": sum(e.result is not None for e in entries),
            "trajectories": [e.to_json() for e in entries]}


def fit_file(path: str | Path, options: FitOptions | None = None, *, group_by: str | None = None) -> dict:
    """Fit a trajectory file (wide or long format, see `si-bench fit --help`); one fit per group with group_by."""
    from dataclasses import replace

    options = options or FitOptions()
    frame = read_table(path)
    time_unit = {"t": "round", "step": "step", "epoch": "epoch"}[time_column(frame)]
    options = replace(options, rate_unit=options.rate_unit or time_unit)
    if group_by:
        return fit_groups(frame, group_by, options=options).to_json()
    return fit_frame(frame, options=options).to_json()


def leaderboard(db: str | None = store.DEFAULT_DB, out_dir: str | Path = "leaderboard", *,
                options: FitOptions | None = None, from_parquet: str | Path | None = None,
                save_fits: bool = True, reference: bool = True, progress: Any = None) -> dict:
    """Write the leaderboard into out_dir: leaderboard.md/.csv/.json, index.html, plots/*.png, data.parquet.

    From a store, every trajectory is fitted with `options`, runs that differ only in their seed pooled (the
    fits saved unless save_fits=False); `reference` adds the paper's digitised curves as reference rows (never
    written into the store). from_parquet=PATH rebuilds the same files from an earlier data.parquet."""
    out = board.output_dir(out_dir)
    if from_parquet is not None:
        return board.publish_from(Path(from_parquet), out)
    if db is None:
        raise SIBenchError("a leaderboard needs a store (db) or from_parquet")
    store.check_store(db)
    options = options or FitOptions()
    entries = fit_store(db, options, group_by="seed", save=False, progress=progress)
    rows = trajectories.fit_rows(entries)
    if save_fits:
        trajectories.save_fits(db, entries, rows)
    summary = trajectories.load_summary(db)
    if reference:
        references = trajectories.reference_trajectories()
        reference_entries = [trajectories.fit_entry(tr, options) for tr in references]
        entries += reference_entries
        rows += trajectories.fit_rows(reference_entries)
        summary = pd.concat([summary, trajectories.points_frame(references)], ignore_index=True)
    return board.publish(board.frames(entries, rows, summary), out)


def import_store(source_db: str | Path, target_db: str | Path = store.DEFAULT_DB, *,
                 on_conflict: str = "refuse") -> Merged:
    """Merge another si-bench store into target_db in one transaction; {table: {"added", "updated"}}, with the
    generations sampled twice with different texts (`diverged`, kept whole from side `kept`). Any other row that
    differs in both stores refuses the import unless on_conflict is "theirs" or "ours"."""
    from contextlib import ExitStack

    store.check_store(source_db)
    store.check_store(target_db)
    with ExitStack() as held:  # the runs it brings steps of are not being advanced here meanwhile
        for run_id in store.run_ids(source_db):
            held.enter_context(locks.run_lock(target_db, run_id))
        return merge(source_db, target_db, on_conflict)


def import_lm_eval(opts: LmEvalImportOptions, *, db: str = store.DEFAULT_DB) -> Imported:
    """The solver, NLL and verifier outputs of si-bench's tasks run under lm-eval's own CLI (`opts.output_path`)
    stored as one evaluation, as `evaluate` stores its own; nothing is written when they are missing, partial or do
    not belong together."""
    store.check_writable(db)
    store.check_store(db)
    return lm_eval_import.import_lm_eval(opts, db)


def simulate(cfg: SimulateConfig) -> dict:
    """The theory as a simulator: the trajectory, its predicted limits and, with shares, the allocations."""
    return simulation(cfg)

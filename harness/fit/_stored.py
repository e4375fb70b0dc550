"""The one fit pipeline over a store: every run trajectory fitted with one FitOptions, the rows saved into
`fits`. `si-bench fit --db`, `si-bench leaderboard` and the API all call `fit_store`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from si_bench import store
from si_bench.errors import SIBenchError
from si_bench.fit._fitting import fit_trajectory
from si_bench.fit._frames import MIN_POINTS
from si_bench.fit._result import FitOptions, FitResult, clean
from si_bench.options import Options, option
from si_bench.trajectories import Trajectory, combine_replicates, load_trajectories

GROUPINGS = ("run", "seed")


@dataclass
class FitInput(Options):
    """What `si-bench fit` fits: the store's runs (default) or a trajectory file."""

    trajectory: str | None = option(None, "A trajectory file (CSV, JSON Lines or parquet) instead of the store.")
    group_by: str | None = option(None, "One fit per value of this column (a file), or 'seed' to pool runs that "
                                        "differ only in their seed (the store; default: one fit per run).")


@dataclass
class FitEntry:
    """One stored trajectory and its fit, or the note saying why it was not fitted."""

    trajectory: Trajectory
    result: FitResult | None = None
    note: str | None = None

    def to_json(self) -> dict:
        tr = self.trajectory
        out = {"fit_key": tr.key, "run_id": tr.run_id, "model": tr.model, "dataset": tr.dataset, "split": tr.split,
               "verifier": tr.verifier, "mode": tr.mode, "unit": tr.unit, "t_unit": tr.t_unit,
               "n_points": tr.n_points, "runs": tr.runs}
        if self.result is not None:
            out["fit"] = self.result.to_json()
        if self.note:
            out["note"] = self.note
        return clean(out)


def _fit_one(tr: Trajectory, options: FitOptions) -> FitEntry:
    if tr.n_points < MIN_POINTS:
        return FitEntry(tr, note=f"too few points to fit: {tr.n_points} distinct t, at least {MIN_POINTS} needed")
    reps = tr.replicates(options.n_boot, options.seed)
    opts = replace(options, unit=tr.unit, rate_unit=tr.t_unit)
    try:
        res = fit_trajectory(tr.t, tr.solver_uncertainty, tr.verifier_uncertainty, gap=tr.gap,
                             solver_acc=tr.solver_accuracy, verifier_acc=tr.verifier_accuracy, replicates=reps, options=opts)
    except SIBenchError as exc:
        return FitEntry(tr, note=f"not fitted: {exc}")
    if reps is None:
        res.notes.append("CIs from a residual bootstrap (no per-prompt data shared by every t)")
    elif len(tr.runs) > 1:
        res.notes.append(f"mean of {len(tr.runs)} seed runs; CIs from resampling runs")
    else:
        res.notes.append(f"CIs from resampling the {tr.n_prompts_shared} prompts measured at every t")
    return FitEntry(tr, result=res)


def fit_rows(entries: list[FitEntry]) -> list[dict]:
    """Rows for the `fits` table (fit_key = run_id|dataset|split|verifier|unit)."""
    now = datetime.now().replace(microsecond=0)
    rows = []
    for e in entries:
        tr = e.trajectory
        if e.result is None:
            continue
        info = {"model": tr.model, "mode": tr.mode, "t_unit": tr.t_unit, "n_points": tr.n_points, "runs": tr.runs}
        for row in e.result.rows():
            rows.append({"fit_key": tr.key, "run_id": tr.run_id, "dataset": tr.dataset, "split": tr.split,
                         "verifier": tr.verifier, "unit": tr.unit,
                         **{k: row[k] for k in ("law", "quantity", "estimate", "ci_low", "ci_high", "reason", "r2")},
                         "details": {**(row.get("details") or {}), **info}, "fitted_at": now})
    return rows


def _save(db, entries: list[FitEntry], rows: list[dict]) -> None:
    """Replace the fits of every trajectory looked at, in one short write transaction."""
    keys = sorted({e.trajectory.key for e in entries})
    with store.write(db) as con:
        if keys:
            con.execute("DELETE FROM fits WHERE fit_key IN (SELECT unnest(?::VARCHAR[]))", [keys])
        store.upsert(con, "fits", rows)


def stored_trajectories(db, unit: str = "total", group_by: str = "run") -> list[Trajectory]:
    if group_by not in GROUPINGS:
        raise SIBenchError(f"--group-by for a store must be run (one fit per run) or seed (runs that differ only "
                           f"in their seed pooled), got {group_by!r}")
    if not Path(db).exists():
        raise SIBenchError(f"store not found: {db}")
    trajs = load_trajectories(db, unit=unit)
    if not trajs:
        raise SIBenchError(f"no self-improvement runs in {db}: no finished evaluation belongs to a run "
                           "(start one with `si-bench run`)")
    return combine_replicates(trajs) if group_by == "seed" else trajs


def fit_store(db, options: FitOptions | None = None, *, group_by: str = "run", save: bool = True) -> list[FitEntry]:
    """Fit the coupled law to every stored trajectory with enough points and save the rows into `fits`.

    One trajectory per (run_id, dataset, split, verifier); group_by="seed" fits the mean of runs that differ
    only in their seed. Trajectories with fewer points come back with a note."""
    options = options or FitOptions()
    entries = [_fit_one(tr, options) for tr in stored_trajectories(db, options.unit, group_by)]
    if save:
        _save(db, entries, fit_rows(entries))
    return entries

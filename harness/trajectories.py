"""Run trajectories from the store, and the one fit pipeline over them (`fit_store`).

A trajectory is one (run_id, dataset, split, verifier) with its finished evaluations ordered by t: a
`si_bench.fit.Trajectory` whose resampling units are the PROMPTS measured at every t (the same resample
at every t, so the series stay paired over time): per prompt, U_s is the mean NLL of its samples and U_v
the NLL of its self pick (external picks have no sample and are skipped).

`pool_seeds` pools runs that differ only in their seed (same model, dataset, split, verifier and mode) on the t
they all measured: the mean trajectory's intervals resample runs, then prompts within runs. Runs that share too few
t to fit are left unpooled, and `seed_groups` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from si_bench import store
from si_bench.errors import SIBenchError
from si_bench.fit import MIN_POINTS, UNITS, FitOptions, FitResult, Trajectory, clean, fit_series
from si_bench.measures import NO_SIGNAL, paired_difference
from si_bench.options import Options, option

GROUPINGS = ("run", "seed")


# --------------------------------------------------------------------------- loading

POINT_COLUMNS = [f"{m}{suffix}" for m in ("solver_uncertainty", "verifier_uncertainty", "gap", "solver_accuracy",
                                          "verifier_accuracy") for _, suffix in store.CI_SUFFIXES]
_SUMMARY_COLUMNS = [f"{m}{suffix}" for m in store.SUMMARY_MEASURES for _, suffix in store.CI_SUFFIXES]
_SUMMARY_SQL = """
SELECT s.eval_id, s.gen_id, s.run_id, s.step, s.t, s.t_unit, s.role, s.model, s.backend, s.dataset, s.split,
       s.verifier, s.sigma, s.n_prompts, s.n_samples, {measures},
       s.status, s.finished_at, r.model AS run_model, r.mode, r.seed, r.config_hash, r.steps_done
FROM summary s LEFT JOIN runs r USING (run_id)
WHERE s.run_id IS NOT NULL AND s.status = 'done' AND s.t IS NOT NULL
ORDER BY s.run_id, s.dataset, s.split, s.verifier, s.t, s.finished_at
""".format(measures=", ".join("s." + c for c in _SUMMARY_COLUMNS))

_PROMPT_SQL = """
WITH ev AS (SELECT eval_id, gen_id FROM evaluations WHERE eval_id IN (SELECT unnest(?::VARCHAR[]))),
solver AS (
    SELECT ev.eval_id, s.prompt_id, avg(s.nll) AS s_total,
           avg(CASE WHEN s.n_tokens > 0 THEN s.nll / s.n_tokens END) AS s_tok
    FROM ev JOIN samples s ON s.gen_id = ev.gen_id GROUP BY ev.eval_id, s.prompt_id),
verifier AS (
    SELECT ev.eval_id, p.prompt_id, s.nll AS v_total,
           CASE WHEN s.n_tokens > 0 THEN s.nll / s.n_tokens END AS v_tok
    FROM ev JOIN picks p ON p.eval_id = ev.eval_id
         JOIN samples s ON s.gen_id = ev.gen_id AND s.prompt_id = p.prompt_id AND s.sample_idx = p.sample_idx
    WHERE p.sample_idx IS NOT NULL AND coalesce(p.source, 'self') = 'self')
SELECT solver.eval_id, solver.prompt_id, s_total, s_tok, v_total, v_tok
FROM solver LEFT JOIN verifier USING (eval_id, prompt_id)
"""


def load_summary(db: str | Path) -> pd.DataFrame:
    """Finished run evaluations (the `summary` view joined with `runs`), one row per evaluation."""
    if not Path(db).exists():
        raise SIBenchError(f"store not found: {db}")
    with store.read(db) as con:
        return con.execute(_SUMMARY_SQL).df()


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise SIBenchError(f"unit must be total or per_token (got {unit!r})")


def _array_or_none(x: pd.Series) -> np.ndarray | None:
    a = pd.to_numeric(x, errors="coerce").to_numpy(dtype=float)
    return None if np.isnan(a).any() else a


def trajectories_from_summary(frame: pd.DataFrame, unit: str = "total",
                              prompts: pd.DataFrame | None = None) -> list[Trajectory]:
    """Group summary rows into trajectories (no per-prompt data unless `prompts` is given)."""
    _check_unit(unit)
    suffix = "" if unit == "total" else "_per_token"
    out: list[Trajectory] = []
    if frame.empty:
        return out
    frame = frame.copy()
    for col in ("verifier", "split", "dataset"):
        frame[col] = frame[col].fillna("")
    by_eval = None
    if prompts is not None and not prompts.empty:
        by_eval = {k: g for k, g in prompts.groupby("eval_id", sort=False)}
    for (run_id, dataset, split, verifier), g in frame.groupby(["run_id", "dataset", "split", "verifier"], sort=True):
        g = g.dropna(subset=[f"solver_uncertainty{suffix}", f"verifier_uncertainty{suffix}"])
        if g.empty:
            continue
        # one evaluation per t: the latest finished one
        g = g.sort_values(["t", "finished_at"]).drop_duplicates("t", keep="last").sort_values("t")
        first = g.iloc[0]
        model = first.get("run_model")
        model = model if isinstance(model, str) and model else str(first["model"])
        mode = first.get("mode")
        traj = Trajectory(
            run_id=str(run_id), model=model, dataset=str(dataset), split=str(split), verifier=str(verifier),
            mode=None if mode is None or pd.isna(mode) else str(mode),
            t_unit=str(first["t_unit"] or "round"), t=g["t"].to_numpy(dtype=float),
            solver_uncertainty=g[f"solver_uncertainty{suffix}"].to_numpy(dtype=float),
            verifier_uncertainty=g[f"verifier_uncertainty{suffix}"].to_numpy(dtype=float),
            solver_accuracy=_array_or_none(g["solver_accuracy"]),
            verifier_accuracy=_array_or_none(g["verifier_accuracy"]),
            gap=_array_or_none(g[f"gap{suffix}"]), unit=unit, eval_ids=[str(e) for e in g["eval_id"]],
            run_ids=[str(run_id)],
        )
        traj.runs = [_prompt_values(traj, by_eval or {}, unit)]
        out.append(traj)
    return out


def _prompt_values(traj: Trajectory, by_eval: dict, unit: str) -> np.ndarray:
    """(T, P, 2) per-prompt (U_s, U_v) on the prompts measured at every t (U_v NaN where the pick was
    external); the run's series alone, (T, 1, 2), when fewer than 2 such prompts have a self pick."""
    series = np.column_stack([traj.solver_uncertainty, traj.verifier_uncertainty])[:, None, :]
    cols = ("s_total", "v_total") if unit == "total" else ("s_tok", "v_tok")
    found = [by_eval.get(eid) for eid in traj.eval_ids]
    if any(g is None for g in found):
        return series
    per_t = [g.dropna(subset=[cols[0]]).set_index("prompt_id") for g in found if g is not None]
    shared = sorted(set.intersection(*(set(g.index) for g in per_t)))
    if len(shared) < 2:
        return series
    S = np.vstack([g.loc[shared, cols[0]].to_numpy(dtype=float) for g in per_t])
    V = np.vstack([pd.to_numeric(g.loc[shared, cols[1]], errors="coerce").to_numpy(dtype=float) for g in per_t])
    if (~np.isnan(V)).sum(axis=1).min() == 0:
        return series
    return np.stack([S, V], axis=-1)


def load_trajectories(db: str | Path, *, unit: str = "total", per_prompt: bool = True) -> list[Trajectory]:
    """One trajectory per (run_id, dataset, split, verifier) with >= 1 finished evaluation, ordered by t.

    per_prompt=False skips loading the per-prompt NLLs (no replicates)."""
    _check_unit(unit)
    if not Path(db).exists():
        raise SIBenchError(f"store not found: {db}")
    with store.read(db) as con:
        frame = con.execute(_SUMMARY_SQL).df()
        prompts = None
        if per_prompt and not frame.empty:
            prompts = con.execute(_PROMPT_SQL, [list(frame["eval_id"].astype(str))]).df()
    return trajectories_from_summary(frame, unit, prompts)


def pool_seeds(trajectories: list[Trajectory]) -> list[Trajectory]:
    """Pool runs that differ only in their seed into one mean trajectory ("mean(run_a,run_b,...)") on the t they
    all measured, whose intervals resample runs, then prompts within runs; runs without a partner, or sharing
    fewer than MIN_POINTS t with it, are returned unchanged."""
    return [tr for tr, _ in seed_groups(trajectories)]


def seed_groups(trajectories: list[Trajectory]) -> list[tuple[Trajectory, str | None]]:
    """pool_seeds, with a note for each trajectory whose runs were pooled on fewer t than some measured, or could
    not be pooled (which runs, and why)."""
    groups: dict[tuple, list[Trajectory]] = {}
    for tr in trajectories:
        groups.setdefault((tr.model, tr.dataset, tr.split, tr.verifier, tr.mode, tr.unit, tr.t_unit), []).append(tr)
    out: list[tuple[Trajectory, str | None]] = []
    for members in groups.values():
        members = sorted(members, key=lambda m: m.run_id)
        if len(members) == 1:
            out.append((members[0], None))
            continue
        grids = [set(np.round(m.t, 9)) for m in members]
        common, every = set.intersection(*grids), set.union(*grids)
        if len(common) < MIN_POINTS:
            why = (f"not pooled with {', '.join(m.run_id for m in members)}: they share {len(common)} t "
                   f"({_ts(common)}), at least {MIN_POINTS} needed")
            out.extend((m, why) for m in members)
            continue
        note = None if common == every else (f"pooled on the {len(common)} t every run measured; t "
                                             f"{_ts(every - common)} measured by only some runs left out")
        out.append((_pooled([_on_grid(m, common) for m in members]), note))
    return out


def _ts(values: set) -> str:
    return ", ".join(f"{t:g}" for t in sorted(values)) or "none"


def _on_grid(tr: Trajectory, grid: set) -> Trajectory:
    """The trajectory at the t in `grid` only (its series, evaluations and per-prompt values)."""
    keep = np.array([t in grid for t in np.round(tr.t, 9)])
    if keep.all():
        return tr
    series = {attr: getattr(tr, attr)[keep] for attr in ("t", "solver_uncertainty", "verifier_uncertainty", "gap",
                                                           "solver_accuracy", "verifier_accuracy")
              if getattr(tr, attr) is not None}
    return replace(tr, **series, eval_ids=[e for e, k in zip(tr.eval_ids, keep, strict=True) if k],
                   runs=[r[keep] for r in tr.runs])


def _mean_of(members: list[Trajectory], attr: str) -> np.ndarray | None:
    arrays = [getattr(m, attr) for m in members]
    return None if any(a is None for a in arrays) else np.mean(np.stack(arrays), axis=0)


def _pooled(members: list[Trajectory]) -> Trajectory:
    run_ids = [m.run_id for m in members]
    means: dict[str, Any] = {attr: _mean_of(members, attr) for attr in (
        "solver_uncertainty", "verifier_uncertainty", "gap", "solver_accuracy", "verifier_accuracy")}
    return replace(members[0], **means, run_id=f"mean({','.join(run_ids)})", run_ids=run_ids,
                   eval_ids=[e for m in members for e in m.eval_ids], runs=[r for m in members for r in m.runs])


def trajectories_frame(db: str | Path, *, unit: str = "total") -> pd.DataFrame:
    """Long table: one row per (trajectory, t, series) with series in solver, verifier, gap, solver_accuracy,
    verifier_accuracy and the value (the long format `si-bench fit --trajectory --group-by run_id` reads)."""
    rows = []
    for tr in load_trajectories(db, unit=unit, per_prompt=False):
        series = {"solver": tr.solver_uncertainty, "verifier": tr.verifier_uncertainty, "gap": tr.gap,
                  "solver_accuracy": tr.solver_accuracy, "verifier_accuracy": tr.verifier_accuracy}
        for name, values in series.items():
            if values is None:
                continue
            for t, v in zip(tr.t, values, strict=True):
                rows.append({"run_id": tr.run_id, "model": tr.model, "dataset": tr.dataset, "split": tr.split,
                             "verifier": tr.verifier, "mode": tr.mode, "unit": tr.unit, "t_unit": tr.t_unit,
                             "t": float(t), "series": name, "value": float(v)})
    cols = ["run_id", "model", "dataset", "split", "verifier", "mode", "unit", "t_unit", "t", "series", "value"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- one run's test points


def run_points(db, run_id: str, role: str = "test"):
    """A run's measured trajectory: t, uncertainties, gap and accuracies with their CIs (a DataFrame)."""
    return store.query(db, f"""
        SELECT t, t_unit, split, {", ".join(POINT_COLUMNS)}
        FROM summary WHERE run_id = ? AND role = ? AND status = 'done' ORDER BY t""", [run_id, role])


def run_change(db, run_id: str, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Last test measurement minus the first, per quantity, with a paired bootstrap CI over test prompts."""
    frame = store.query(db, """
        WITH ends AS (
            SELECT min(t) AS t0, max(t) AS t1 FROM summary WHERE run_id = ? AND role = 'test' AND status = 'done'),
        evals AS (
            SELECT s.eval_id, s.gen_id, s.t FROM summary s, ends
            WHERE s.run_id = ? AND s.role = 'test' AND s.status = 'done' AND s.t IN (ends.t0, ends.t1)),
        solver AS (
            SELECT e.t, x.prompt_id, avg(x.correct::DOUBLE) AS solver_accuracy, avg(x.nll) AS solver_uncertainty
            FROM evals e JOIN samples x USING (gen_id) GROUP BY e.t, x.prompt_id),
        verifier AS (
            SELECT e.t, p.prompt_id, x.correct::DOUBLE AS verifier_accuracy, x.nll AS verifier_uncertainty
            FROM evals e JOIN picks p USING (eval_id)
            JOIN samples x ON x.gen_id = e.gen_id AND x.prompt_id = p.prompt_id AND x.sample_idx = p.sample_idx)
        SELECT * FROM solver JOIN verifier USING (t, prompt_id) ORDER BY prompt_id, t""", [run_id, run_id])
    if frame.empty or frame.t.nunique() < 2:
        return {}
    t0, t1 = frame.t.min(), frame.t.max()
    before = frame[frame.t == t0].set_index("prompt_id")
    after = frame[frame.t == t1].set_index("prompt_id")
    shared = before.index.intersection(after.index)
    return {
        name: paired_difference(before.loc[shared, name].to_numpy(), after.loc[shared, name].to_numpy(),
                                n_boot=n_boot, seed=seed)
        for name in ("solver_accuracy", "solver_uncertainty", "verifier_accuracy", "verifier_uncertainty")
    } | {"t0": t0, "t1": t1}


# --------------------------------------------------------------------------- the fit pipeline over a store


@dataclass
class FitInput(Options):
    """What `si-bench fit` fits: the store's runs (default) or a trajectory file."""

    trajectory: str | None = option(None, "A trajectory file (CSV, JSON Lines or parquet) instead of the store.")
    group_by: str | None = option(None, "One fit per value of this column (a file), or 'seed' to pool runs that "
                                        "differ only in their seed (the store; default: one fit per run).")


@dataclass
class FitEntry:
    """One stored trajectory and its fit, or the note saying why it was not fitted; `verifier_signal` carries the
    verdict of its evaluations' verifier signal into the fit, when some of them have none."""

    trajectory: Trajectory
    result: FitResult | None = None
    note: str | None = None
    verifier_signal: str | None = None
    pooling: str | None = None  # --group-by seed: how its runs were pooled, or why they were not

    def to_json(self) -> dict:
        tr = self.trajectory
        out: dict[str, Any] = {
            "fit_key": tr.key, "run_id": tr.run_id, "model": tr.model, "dataset": tr.dataset, "split": tr.split,
            "verifier": tr.verifier, "mode": tr.mode, "unit": tr.unit, "t_unit": tr.t_unit,
            "n_points": tr.n_points, "runs": tr.run_ids}
        if self.result is not None:
            out["fit"] = self.result.to_json()
        if self.note:
            out["note"] = self.note
        if self.verifier_signal:
            out["verifier_signal"] = self.verifier_signal
        if self.pooling:
            out["pooling"] = self.pooling
        return clean(out)


def fit_entry(tr: Trajectory, options: FitOptions) -> FitEntry:
    """One trajectory fitted, or the note saying why not."""
    if tr.n_points < MIN_POINTS:
        return FitEntry(tr, note=f"too few points to fit: {tr.n_points} distinct t, at least {MIN_POINTS} needed")
    try:
        return FitEntry(tr, result=fit_series(tr, replace(options, unit=tr.unit, rate_unit=tr.t_unit)))
    except SIBenchError as exc:
        return FitEntry(tr, note=f"not fitted: {exc}")


def fit_rows(entries: list[FitEntry]) -> list[dict]:
    """Rows for the `fits` table (fit_key = run_id|dataset|split|verifier|unit)."""
    now = datetime.now().replace(microsecond=0)
    rows = []
    for e in entries:
        tr = e.trajectory
        if e.result is None:
            continue
        info = {"model": tr.model, "mode": tr.mode, "t_unit": tr.t_unit, "n_points": tr.n_points, "runs": tr.run_ids,
                "verifier_signal": e.verifier_signal}
        for row in e.result.rows():
            rows.append({"fit_key": tr.key, "run_id": tr.run_id, "dataset": tr.dataset, "split": tr.split,
                         "verifier": tr.verifier, "unit": tr.unit,
                         **{k: row[k] for k in ("law", "quantity", "estimate", "ci_low", "ci_high", "reason", "r2")},
                         "details": {**(row.get("details") or {}), **info}, "fitted_at": now})
    return rows


def save_fits(db, entries: list[FitEntry], rows: list[dict]) -> None:
    """Replace the fits of every trajectory looked at, in one short write transaction."""
    keys = sorted({e.trajectory.key for e in entries})
    with store.write(db) as con:
        if keys:
            con.execute("DELETE FROM fits WHERE fit_key IN (SELECT unnest(?::VARCHAR[]))", [keys])
        store.upsert(con, "fits", rows)


def stored_trajectories(db, unit: str = "total", group_by: str = "run") -> list[tuple[Trajectory, str | None]]:
    """The store's trajectories, each with how its seeds were pooled (group_by="seed") or None."""
    if group_by not in GROUPINGS:
        raise SIBenchError(f"--group-by for a store must be run (one fit per run) or seed (runs that differ only "
                           f"in their seed pooled), got {group_by!r}")
    if not Path(db).exists():
        raise SIBenchError(f"store not found: {db}")
    trajs = load_trajectories(db, unit=unit)
    if not trajs:
        raise SIBenchError(f"no self-improvement runs in {db}: no finished evaluation belongs to a run "
                           "(start one with `si-bench run`)")
    return seed_groups(trajs) if group_by == "seed" else [(tr, None) for tr in trajs]


def fit_store(db, options: FitOptions | None = None, *, group_by: str = "run", save: bool = True,
              progress: Any = None) -> list[FitEntry]:
    """Fit the coupled law to every stored trajectory with enough points and save the rows into `fits`.

    One trajectory per (run_id, dataset, split, verifier); group_by="seed" fits the mean of runs that differ
    only in their seed, on the t they all measured. Trajectories with fewer points come back with a note. Each fit
    advances a "fitting" phase of `progress`."""
    options = options or FitOptions()
    trajectories = stored_trajectories(db, options.unit, group_by)
    signals = stored_signals(db, [e for tr, _ in trajectories for e in tr.eval_ids])
    task = progress.add_task("fitting", total=len(trajectories)) if progress is not None and trajectories else None
    entries = []
    for tr, pooling in trajectories:
        entries.append(replace(fit_entry(tr, options), verifier_signal=signal_statement(tr.eval_ids, signals),
                               pooling=pooling))
        if task is not None:
            progress.advance(task, 1)
    if save:
        save_fits(db, entries, fit_rows(entries))
    return entries


# --------------------------------------------------------------------------- the verifier's signal under a fit


def stored_signals(db, eval_ids: list[str]) -> dict[str, float | None]:
    """Each evaluation's `verifier_signal` (1, 0: none, -1; None undetermined); evaluations stored before it was
    measured are absent."""
    with store.read(db) as con:
        rows = con.execute("SELECT eval_id, value FROM metrics WHERE name = 'verifier_signal' AND eval_id IN "
                           "(SELECT unnest(?::VARCHAR[]))", [sorted(set(eval_ids))]).fetchall()
    return {eval_id: None if value is None or value != value else float(value) for eval_id, value in rows}


def signal_statement(eval_ids: list[str], signals: dict[str, float | None]) -> str | None:
    """In words, when the verifier score carries no signal in some of a trajectory's evaluations; None when it has
    signal in every measured one, or none was measured."""
    measured = [signals[e] for e in eval_ids if signals.get(e) is not None]
    silent = sum(flag == 0.0 for flag in measured)
    if not silent:
        return None
    if silent == len(measured):
        return NO_SIGNAL
    return (f"the verifier score carries no signal in {silent} of {len(measured)} evaluations here; there picks "
            "follow the lowest NLL")


# --------------------------------------------------------------------------- the paper's curves, for reference

REFERENCE_CSV = Path(__file__).parent / "data" / "reference" / "phi4_mini_figure4_digitized.csv"
REFERENCE_SOURCE = "reference: digitised from the paper's figure (plot units), not measured here"


def reference_trajectories() -> list[Trajectory]:
    """The paper's Phi-4-mini training-split curves (Sun et al., Fig. 4), one trajectory per panel."""
    from si_bench.fit import frame_to_trajectory, read_table

    frame = read_table(REFERENCE_CSV)
    out = []
    for panel, rows in frame.groupby("panel", sort=True):
        tr = frame_to_trajectory(rows.drop(columns=["panel"]), label=str(panel))
        dataset, verifier = str(panel).split("_")
        out.append(replace(tr, run_id=f"reference-{panel}", model="Phi-4-mini (Sun et al., ICLR 2026)",
                           dataset=dataset, split="train", verifier=verifier, mode="fixed", t_unit="epoch",
                           source=REFERENCE_SOURCE,
                           eval_ids=[f"reference-{panel}@{t:g}" for t in tr.t]))
    return out


def points_frame(trajectories: list[Trajectory]) -> pd.DataFrame:
    """Summary-like rows (eval_id, t and the series) for trajectories that have no evaluations in a store."""
    rows = [{"eval_id": eid, "t": float(t), "solver_uncertainty": s, "verifier_uncertainty": v, "gap": s - v}
            for tr in trajectories
            for eid, t, s, v in zip(tr.eval_ids, tr.t, tr.solver_uncertainty, tr.verifier_uncertainty, strict=True)]
    return pd.DataFrame(rows)

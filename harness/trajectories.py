"""Self-improvement trajectories read from the store: U_s(t), U_v(t) and accuracies per run, with
prompt-bootstrap replicates for the fits.

A trajectory is one (run_id, dataset, split, verifier) with its finished evaluations ordered by t.
Its ``replicates(n_boot, seed)`` resample the PROMPTS measured at every t (the same resample at every
t, so the series stay paired over time): per prompt, U_s is the mean NLL of its samples and U_v the
NLL of its self pick (external picks have no sample and are skipped). The replicates are shifted so
that they are centred on the stored series (which may rest on more prompts than the shared ones).

``combine_replicates`` averages runs that differ only in their seed (same model, dataset, split,
verifier, mode and t grid); the mean trajectory's replicates resample runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from si_bench import store
from si_bench.errors import SIBenchError
from si_bench.measures import paired_difference

__all__ = ["Trajectory", "load_trajectories", "combine_replicates", "trajectories_frame", "load_summary", "run_points",
           "run_change"]

UNITS = ("total", "per_token")


@dataclass
class Trajectory:
    run_id: str
    model: str
    dataset: str
    split: str
    verifier: str
    mode: str | None
    t_unit: str
    t: np.ndarray
    solver_uncertainty: np.ndarray  # U_s (or U_s per token)
    verifier_uncertainty: np.ndarray  # U_v (or U_v per token)
    solver_accuracy: np.ndarray | None = None
    verifier_accuracy: np.ndarray | None = None
    gap: np.ndarray | None = None  # the measured gap series (paired per prompt)
    unit: str = "total"
    eval_ids: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # the run ids behind it (several for a seed mean)
    n_prompts_shared: int = 0
    _prompt_s: np.ndarray | None = field(default=None, repr=False)  # (T, P) per-prompt U_s on shared prompts
    _prompt_v: np.ndarray | None = field(default=None, repr=False)  # (T, P) per-prompt U_v (NaN: no self pick)
    _per_run: np.ndarray | None = field(default=None, repr=False)  # (R, T, 2) for a mean over runs

    @property
    def key(self) -> str:
        """fit_key in the store's `fits` table: run_id|dataset|split|verifier|unit."""
        return "|".join([self.run_id, self.dataset, self.split, self.verifier, self.unit])

    @property
    def n_points(self) -> int:
        return int(len(np.unique(self.t)))

    def replicates(self, n_boot: int = 500, seed: int = 0) -> np.ndarray | None:
        """(B, T, 2) bootstrap-resampled (solver, verifier) series, or None when there is nothing to resample.

        Single runs resample prompts shared by every t; means over runs resample runs."""
        if n_boot <= 0:
            return None
        rng = np.random.default_rng(seed)
        if self._per_run is not None:
            R = self._per_run.shape[0]
            idx = rng.integers(0, R, size=(n_boot, R))
            return self._per_run[idx].mean(axis=1)
        if self._prompt_s is None or self._prompt_s.shape[1] < 2:
            return None
        S, V = self._prompt_s, self._prompt_v
        T, P = S.shape
        idx = rng.integers(0, P, size=(n_boot, P))
        flat = (idx + (np.arange(n_boot) * P)[:, None]).ravel()
        C = np.bincount(flat, minlength=n_boot * P).reshape(n_boot, P).astype(float)  # prompt counts
        s_rep = (C @ S.T) / P  # (B, T)
        defined = ~np.isnan(V)
        with np.errstate(invalid="ignore", divide="ignore"):
            v_rep = (C @ np.where(defined, V, 0.0).T) / (C @ defined.T.astype(float))
        # centre on the stored series (the shared prompts may be a subset of those measured)
        with np.errstate(invalid="ignore"):
            s_mean = S.mean(axis=1)
            v_mean = np.nansum(np.where(defined, V, 0.0), axis=1) / np.maximum(defined.sum(axis=1), 1)
        s_rep += (self.solver_uncertainty - s_mean)[None]
        v_rep += (self.verifier_uncertainty - v_mean)[None]
        return np.stack([s_rep, v_rep], axis=-1)


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
            runs=[str(run_id)],
        )
        if by_eval is not None:
            _attach_prompts(traj, by_eval, unit)
        out.append(traj)
    return out


def _attach_prompts(traj: Trajectory, by_eval: dict, unit: str) -> None:
    cols = ("s_total", "v_total") if unit == "total" else ("s_tok", "v_tok")
    per_t = []
    for eid in traj.eval_ids:
        g = by_eval.get(eid)
        if g is None:
            return
        per_t.append(g.dropna(subset=[cols[0]]).set_index("prompt_id"))
    shared = set(per_t[0].index)
    for g in per_t[1:]:
        shared &= set(g.index)
    shared = sorted(shared)
    if len(shared) < 2:
        return
    S = np.vstack([g.loc[shared, cols[0]].to_numpy(dtype=float) for g in per_t])
    V = np.vstack([pd.to_numeric(g.loc[shared, cols[1]], errors="coerce").to_numpy(dtype=float) for g in per_t])
    if (~np.isnan(V)).sum(axis=1).min() == 0:
        return
    traj._prompt_s, traj._prompt_v, traj.n_prompts_shared = S, V, len(shared)


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


def combine_replicates(trajectories: list[Trajectory]) -> list[Trajectory]:
    """Average runs that differ only in their seed.

    Groups by (model, dataset, split, verifier, mode, unit) and identical t grid; a group of >= 2 runs
    becomes one mean trajectory (run_id "mean(run_a,run_b,...)") whose replicates resample runs. Runs
    without a partner are returned unchanged."""
    groups: dict[tuple, list[Trajectory]] = {}
    for tr in trajectories:
        key = (tr.model, tr.dataset, tr.split, tr.verifier, tr.mode, tr.unit, tr.t_unit,
               tuple(np.round(tr.t, 9)))
        groups.setdefault(key, []).append(tr)
    out: list[Trajectory] = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        members = sorted(members, key=lambda m: m.run_id)
        per_run = np.stack([np.column_stack([m.solver_uncertainty, m.verifier_uncertainty]) for m in members])  # (R, T, 2)

        def mean_of(attr):
            arrs = [getattr(m, attr) for m in members]
            return None if any(a is None for a in arrs) else np.mean(np.stack(arrs), axis=0)

        run_ids = [m.run_id for m in members]
        first = members[0]
        out.append(replace(
            first, run_id=f"mean({','.join(run_ids)})", solver_uncertainty=per_run[:, :, 0].mean(axis=0),
            verifier_uncertainty=per_run[:, :, 1].mean(axis=0), solver_accuracy=mean_of("solver_accuracy"),
            verifier_accuracy=mean_of("verifier_accuracy"), gap=mean_of("gap"),
            eval_ids=[e for m in members for e in m.eval_ids], runs=run_ids, n_prompts_shared=0,
            _prompt_s=None, _prompt_v=None, _per_run=per_run,
        ))
    return out


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
            for t, v in zip(tr.t, values):
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

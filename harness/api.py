"""The Python API behind every `si-bench` command; scripts and notebooks call these directly."""

from __future__ import annotations

from typing import Any, Callable

from si_bench import store
from si_bench.evaluation import EvalConfig, EvalResult, evaluate  # noqa: F401 - re-exported

__all__ = ["EvalConfig", "EvalResult", "evaluate", "run", "train_round", "list_runs", "trajectory"]


def run(cfg, *, seeds: list[int] | None = None, db: str = store.DEFAULT_DB, workdir: str | None = None,
        progress: Any = None, log: Callable[[str], None] = print) -> list[str]:
    """Start or continue self-improvement runs (one per seed); return their run ids."""
    from dataclasses import replace

    from si_bench.trainers.rounds import SelfImproveRun

    run_ids = []
    for seed in seeds or [cfg.seed]:
        job = SelfImproveRun(replace(cfg, seed=seed), db, workdir=workdir, progress=progress, log=log)
        job.run()
        run_ids.append(job.run_id)
    return run_ids


def train_round(run_id: str, *, db: str = store.DEFAULT_DB, workdir: str | None = None, progress: Any = None,
                log: Callable[[str], None] = print) -> int:
    """One more round (or half epoch) of an existing run, with its test measurement; returns the step number."""
    from si_bench.trainers.rounds import SelfImproveRun

    job = SelfImproveRun.load(run_id, db, workdir=workdir, progress=progress, log=log)
    job.checkpoint(job.steps_done())  # fails before writing anything if its directory vanished
    if job.steps_done() >= job.steps_total():
        job.extend()
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


def improvement(run_id: str, db: str = store.DEFAULT_DB, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Last test measurement minus the first, per quantity, with a paired bootstrap CI over test prompts."""
    from si_bench.measures import paired_difference

    frame = store.query(db, """
        WITH ends AS (
            SELECT min(t) AS t0, max(t) AS t1 FROM summary WHERE run_id = ? AND role = 'test' AND status = 'done'),
        evals AS (
            SELECT s.eval_id, s.gen_id, s.t FROM summary s, ends
            WHERE s.run_id = ? AND s.role = 'test' AND s.status = 'done' AND s.t IN (ends.t0, ends.t1)),
        solver AS (
            SELECT e.t, x.prompt_id, avg(x.correct::DOUBLE) AS solver_acc, avg(x.nll) AS solver_nll
            FROM evals e JOIN samples x USING (gen_id) GROUP BY e.t, x.prompt_id),
        verifier AS (
            SELECT e.t, p.prompt_id, x.correct::DOUBLE AS verifier_acc, x.nll AS verifier_nll
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
        for name in ("solver_acc", "solver_nll", "verifier_acc", "verifier_nll")
    } | {"t0": t0, "t1": t1}


# ---------------------------------------------------------------------------------------------------------
# Fitting stored trajectories, the leaderboard, and merging stores (si_bench.trajectories, reports.leaderboard)

__all__ += ["fit_store", "leaderboard", "import_store"]

_FIT_GROUPINGS = (None, "", "run", "run_id", "seed", "replicates")


def _fit_trajectories(trajs, *, boot: int = 500, seed: int = 0, eps: float | None = None,
                      holdout: float = 0.4) -> list[dict]:
    """Fit each trajectory with >= 4 distinct t (prompt-bootstrap CIs); [{"trajectory", "result", "note"}]."""
    from si_bench.errors import SIBenchError
    from si_bench.fit import FitOptions, fit_trajectory
    from si_bench.fit._frames import MIN_POINTS

    out = []
    for tr in trajs:
        entry = {"trajectory": tr, "result": None, "note": None}
        out.append(entry)
        if tr.n_points < MIN_POINTS:
            entry["note"] = (f"too few points to fit: {tr.n_points} distinct t, at least {MIN_POINTS} needed")
            continue
        reps = tr.replicates(boot, seed)
        opts = FitOptions(n_boot=boot, seed=seed, eps=eps, holdout=holdout, unit=tr.unit, rate_unit=tr.t_unit)
        try:
            res = fit_trajectory(tr.t, tr.solver, tr.verifier_u, gap=tr.gap, solver_acc=tr.solver_acc,
                                 verifier_acc=tr.verifier_acc, replicates=reps, options=opts)
        except SIBenchError as exc:
            entry["note"] = f"not fitted: {exc}"
            continue
        if reps is None:
            res.notes.append("CIs from a residual bootstrap (no per-prompt data shared by every t)")
        elif len(tr.runs) > 1:
            res.notes.append(f"mean of {len(tr.runs)} seed runs; CIs from resampling runs")
        else:
            res.notes.append(f"CIs from resampling the {tr.n_prompts_shared} prompts measured at every t")
        entry["result"] = res
    return out


def _fit_rows(entries: list[dict]) -> list[dict]:
    """Rows for the `fits` table (fit_key = run_id|dataset|split|verifier|unit)."""
    from datetime import datetime

    now = datetime.now().replace(microsecond=0)
    rows = []
    for e in entries:
        tr, res = e["trajectory"], e["result"]
        if res is None:
            continue
        info = {"model": tr.model, "mode": tr.mode, "t_unit": tr.t_unit, "n_points": tr.n_points, "runs": tr.runs}
        for row in res.rows():
            rows.append({"fit_key": tr.key, "run_id": tr.run_id, "dataset": tr.dataset, "split": tr.split,
                         "verifier": tr.verifier, "unit": tr.unit, **{k: row[k] for k in
                         ("law", "quantity", "estimate", "ci_low", "ci_high", "reason", "r2")},
                         "details": {**(row.get("details") or {}), **info}, "fitted_at": now})
    return rows


def _save_fits(db, entries: list[dict], rows: list[dict]) -> None:
    """Replace the fits of every trajectory looked at, in one short write transaction."""
    keys = sorted({e["trajectory"].key for e in entries})
    with store.write(db) as con:
        if keys:
            con.execute("DELETE FROM fits WHERE fit_key IN (SELECT unnest(?::VARCHAR[]))", [keys])
        store.upsert(con, "fits", rows)


def _store_trajectories(db, unit: str, group_by: str | None):
    from pathlib import Path

    from si_bench.errors import SIBenchError
    from si_bench.trajectories import combine_replicates, load_trajectories

    if group_by not in _FIT_GROUPINGS:
        raise SIBenchError(f"--group-by for a store must be run (default) or seed (average seed replicates), "
                           f"got {group_by!r}")
    if not Path(db).exists():
        raise SIBenchError(f"store not found: {db}")
    trajs = load_trajectories(db, unit=unit)
    if not trajs:
        raise SIBenchError(f"no self-improvement runs in {db}: no finished evaluation belongs to a run "
                           "(start one with `si-bench run`)")
    if group_by in ("seed", "replicates"):
        trajs = combine_replicates(trajs)
    return trajs


def _entry_json(e: dict) -> dict:
    tr, res = e["trajectory"], e["result"]
    out = {"fit_key": tr.key, "run_id": tr.run_id, "model": tr.model, "dataset": tr.dataset, "split": tr.split,
           "verifier": tr.verifier, "mode": tr.mode, "unit": tr.unit, "t_unit": tr.t_unit,
           "n_points": tr.n_points, "runs": tr.runs}
    if res is not None:
        out["fit"] = res.to_json()
    if e["note"]:
        out["note"] = e["note"]
    return out


def fit_store(db=store.DEFAULT_DB, *, group_by: str | None = None, unit: str = "total", boot: int = 500,
              seed: int = 0, eps: float | None = None, holdout: float = 0.4, save: bool = True) -> dict:
    """Fit the coupled law to every stored trajectory with >= 4 distinct t and save the rows into `fits`.

    One trajectory per (run_id, dataset, split, verifier); group_by="seed" fits the mean of runs that differ
    only in their seed. CIs resample the prompts measured at every t. Trajectories with fewer points are
    listed with a note. Returns {"db", "unit", "n_fitted", "trajectories": [{fit_key, ..., "fit" | "note"}]}."""
    from si_bench.fit._result import clean

    trajs = _store_trajectories(db, unit, group_by)
    entries = _fit_trajectories(trajs, boot=boot, seed=seed, eps=eps, holdout=holdout)
    if save:
        _save_fits(db, entries, _fit_rows(entries))
    return clean({"db": str(db), "unit": unit, "n_fitted": sum(e["result"] is not None for e in entries),
                  "trajectories": [_entry_json(e) for e in entries]})


def _leaderboard_frames(db, *, unit: str, boot: int, seed: int, holdout: float, save: bool) -> dict:
    """Everything the leaderboard shows, as data frames (summary rows, fits rows, fitted curves, meta)."""
    import json

    import numpy as np
    import pandas as pd

    from si_bench.fit._result import clean
    from si_bench.trajectories import load_summary

    trajs = _store_trajectories(db, unit, None)
    entries = _fit_trajectories(trajs, boot=boot, seed=seed, holdout=holdout)
    rows = _fit_rows(entries)
    if save:
        _save_fits(db, entries, rows)
    fits = pd.DataFrame(rows, columns=["fit_key", "run_id", "dataset", "split", "verifier", "unit", "law",
                                       "quantity", "estimate", "ci_low", "ci_high", "reason", "r2", "details",
                                       "fitted_at"])
    fits["details"] = [json.dumps(clean(d), sort_keys=True) for d in fits["details"]]
    fits["estimate"] = fits["estimate"].astype(float)
    summary = load_summary(db)
    curves, meta = [], []
    for e in entries:
        tr, res = e["trajectory"], e["result"]
        meta.append({"fit_key": tr.key, "run_id": tr.run_id, "model": tr.model, "dataset": tr.dataset,
                     "split": tr.split, "verifier": tr.verifier, "mode": tr.mode, "unit": tr.unit,
                     "t_unit": tr.t_unit, "n_points": tr.n_points, "rounds": tr.rounds, "note": e["note"],
                     "eval_ids": json.dumps(tr.eval_ids), "fit_json": json.dumps(res.to_json(), allow_nan=False)
                     if res is not None else None})
        if res is not None:
            t0, t1 = float(tr.t.min()), float(tr.t.max())
            grid = np.linspace(t0, t1 + 0.25 * (t1 - t0), 121)
            c = res.curve(grid)
            frame = pd.DataFrame({"curve_" + k: np.asarray(v, dtype=float) for k, v in c.items()})
            frame.insert(0, "fit_key", tr.key)
            curves.append(frame)
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame({"fit_key": [], "curve_t": []})
    return {"summary": summary, "fits": fits, "curves": curves, "meta": pd.DataFrame(meta)}


def leaderboard(db=store.DEFAULT_DB, out_dir="leaderboard", *, from_parquet=None, unit: str = "total",
                boot: int = 200, seed: int = 0, holdout: float = 0.4, save_fits: bool = True) -> dict:
    """Write the leaderboard into out_dir: leaderboard.md/.csv/.json, index.html, plots/*.png, data.parquet.

    From a store, every trajectory is fitted (and the fits saved into the store unless save_fits=False);
    from_parquet=PATH rebuilds the same files from an earlier data.parquet, without the store.
    Returns {"out_dir", "files", "rows"}."""
    from pathlib import Path

    from si_bench.errors import SIBenchError
    from si_bench.reports import leaderboard as lb

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SIBenchError(f"cannot create output directory {out}: {exc.strerror}") from None
    parquet = out / "data.parquet"
    if from_parquet is not None:
        src = Path(from_parquet)
        if not src.is_file():
            raise SIBenchError(f"parquet export not found: {src}")
        frames = lb.read_data(src)
        if src.resolve() != parquet.resolve():
            lb.write_data(frames, parquet)
    else:
        frames = _leaderboard_frames(db, unit=unit, boot=boot, seed=seed, holdout=holdout, save=save_fits)
        lb.write_data(frames, parquet)
        frames = lb.read_data(parquet)  # render from exactly what was exported
    return lb.render(frames, out)


_IMPORT_NEWER = {"runs": "updated_at", "evaluations": "finished_at", "fits": "fitted_at"}


def import_store(source_db, target_db=store.DEFAULT_DB) -> dict:
    """Merge another si-bench store (e.g. brought back from a GPU machine) into target_db, in one transaction.

    Rows whose primary key is new are added; a row already present is replaced only when the other store's
    copy is newer (runs.updated_at, evaluations.finished_at, fits.fitted_at). Importing twice changes nothing.
    Returns {table: {"added": n, "updated": n}}."""
    from pathlib import Path

    import duckdb

    from si_bench.errors import SIBenchError

    src, dst = Path(source_db), Path(target_db)
    if not src.is_file():
        raise SIBenchError(f"no store to import at {src}")
    if dst.exists() and src.resolve() == dst.resolve():
        raise SIBenchError(f"cannot import {src} into itself")
    counts: dict[str, dict[str, int]] = {}
    with store.write(dst) as con:
        try:
            con.execute(f"ATTACH '{_sql_str(src)}' AS import_src (READ_ONLY)")
        except duckdb.Error as exc:
            raise SIBenchError(f"{src} is not a DuckDB file, or cannot be opened: {str(exc).splitlines()[0]}") from None

        def tables(database: str) -> set[str]:
            return {r[0] for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'",
                [database]).fetchall()}

        src_tables = tables("import_src")
        if "schema_version" not in src_tables:
            raise SIBenchError(f"{src} is not an si-bench store (no schema_version table)")
        version = con.execute("SELECT coalesce(max(version), 0) FROM import_src.schema_version").fetchone()[0]
        if version > store.SCHEMA_VERSION:
            raise SIBenchError(f"{src} has schema v{version}, newer than this si-bench (v{store.SCHEMA_VERSION}); "
                               "upgrade si-bench first")
        target_db_name = con.execute("SELECT current_database()").fetchone()[0]
        for table in sorted(tables(target_db_name) - {"schema_version"}):
            if table not in src_tables:
                continue
            pk = con.execute(
                "SELECT constraint_column_names FROM duckdb_constraints() WHERE database_name = ? AND "
                "schema_name = 'main' AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
                [target_db_name, table]).fetchone()
            if not pk:
                continue
            pk = list(pk[0])

            def columns(database: str) -> list[str]:
                return [r[0] for r in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main' "
                    "AND table_name = ? ORDER BY column_index", [database, table]).fetchall()]

            src_cols = set(columns("import_src"))
            cols = [c for c in columns(target_db_name) if c in src_cols]
            if not set(pk) <= set(cols):
                continue
            col_list = ", ".join(f'"{c}"' for c in cols)
            match = " AND ".join(f't."{c}" = s."{c}"' for c in pk)
            newer_col = _IMPORT_NEWER.get(table)
            updated = 0
            if newer_col in cols:
                newer = (f'FROM import_src.main."{table}" s JOIN main."{table}" t ON {match} '
                         f'WHERE s."{newer_col}" IS NOT NULL AND (t."{newer_col}" IS NULL OR s."{newer_col}" > t."{newer_col}")')
                updated = con.execute(f"SELECT count(*) {newer}").fetchone()[0]
                if updated:
                    con.execute(f'INSERT OR REPLACE INTO main."{table}" ({col_list}) SELECT {", ".join("s." + chr(34) + c + chr(34) for c in cols)} {newer}')
            new = (f'FROM import_src.main."{table}" s WHERE NOT EXISTS '
                   f'(SELECT 1 FROM main."{table}" t WHERE {match})')
            added = con.execute(f"SELECT count(*) {new}").fetchone()[0]
            if added:
                con.execute(f'INSERT INTO main."{table}" ({col_list}) SELECT {", ".join("s." + chr(34) + c + chr(34) for c in cols)} {new}')
            counts[table] = {"added": int(added), "updated": int(updated)}
    return counts


def _sql_str(path) -> str:
    return str(path).replace("'", "''")

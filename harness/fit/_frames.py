"""Turn a trajectory table (wide or long) into arrays for fitting, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from si_bench.errors import SIBenchError
from si_bench.fit._trajectory import Trajectory

TIME_COLUMNS = ("t", "step", "epoch")
VALUE_COLUMNS = ("affine_uncertainty", "value", "uncertainty")
MIN_POINTS = 4
# Below this spread the squared differences the fit sums (of differences, for the linearisation) underflow.
MIN_SPREAD = 1e-50


def read_table(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise SIBenchError(f"trajectory file not found: {p}")
    if p.is_dir():
        raise SIBenchError(f"trajectory path is a directory, not a file: {p}")
    try:
        if p.suffix.lower() == ".parquet":
            return pd.read_parquet(p)
        if p.suffix.lower() in (".json", ".jsonl"):
            return pd.read_json(p, lines=p.suffix.lower() == ".jsonl")
        return pd.read_csv(p)
    except Exception as exc:  # noqa: BLE001 - any parse problem is a user error
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise SIBenchError(f"cannot read {p}: {type(exc).__name__}: {first_line}") from None


def time_column(df: pd.DataFrame) -> str:
    for c in TIME_COLUMNS:
        if c in df.columns:
            return c
    raise SIBenchError(f"missing time column: need one of {', '.join(TIME_COLUMNS)} "
                       f"(found: {', '.join(map(str, df.columns))})")


def is_long(df: pd.DataFrame) -> bool:
    return "series" in df.columns and "solver_uncertainty" not in df.columns


def _numeric(df: pd.DataFrame, col: str, row_offset: int = 2) -> np.ndarray:
    vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(vals))
    if bad.size:
        i = bad[0]
        raw = df[col].iloc[i]
        # row numbers as in the file: header is line 1
        line = df.index[i] + row_offset if isinstance(df.index[i], (int, np.integer)) else df.index[i]
        raise SIBenchError(f"non-finite or non-numeric value {raw!r} in column '{col}' at row {line} "
                           "(file line, header = 1)")
    return vals


def _check_series(t: np.ndarray, s: np.ndarray, v: np.ndarray, label: str = "") -> None:
    where = f" in group {label}" if label else ""
    n = len(np.unique(t))
    if n < MIN_POINTS:
        raise SIBenchError(f"too few points{where}: {n} distinct t, at least {MIN_POINTS} needed")
    for name, y in (("solver", s), ("verifier", v)):
        if np.ptp(y) == 0:
            raise SIBenchError(f"the {name} series{where} is constant: the exponential fit is undefined")
        if np.ptp(y) < MIN_SPREAD:
            raise SIBenchError(f"the {name} series{where} varies by only {np.ptp(y):.3g}, below {MIN_SPREAD:g}: "
                               "rescale it")


def wide_to_trajectory(df: pd.DataFrame, unit: str = "total", label: str = "") -> Trajectory:
    tcol = time_column(df)
    suffix = "" if unit == "total" else "_per_token"
    scol, vcol = f"solver_uncertainty{suffix}", f"verifier_uncertainty{suffix}"
    missing = [c for c in (scol, vcol) if c not in df.columns]
    if missing:
        raise SIBenchError(f"missing column(s): {', '.join(missing)} (found: {', '.join(map(str, df.columns))})")
    t = _numeric(df, tcol)
    s = _numeric(df, scol)
    v = _numeric(df, vcol)
    accs = {}
    for c in ("solver_accuracy", "verifier_accuracy"):
        if c in df.columns:
            accs[c] = _numeric(df, c)
    ses = {f"{k}_se": _numeric(df, f"{c}_se") for k, c in (("s", scol), ("v", vcol)) if f"{c}_se" in df.columns}
    if len(ses) == 1:
        raise SIBenchError(f"standard errors need both {scol}_se and {vcol}_se (found only {next(iter(ses))})")
    work = pd.DataFrame({"t": t, "s": s, "v": v, **accs, **ses})
    if "run" in df.columns and ses:
        raise SIBenchError("*_se columns with a 'run' column: give either runs or standard errors, not both")
    if "run" in df.columns:
        work["run"] = df["run"].to_numpy()
        runs = sorted(work["run"].unique(), key=str)
        if work.duplicated(["run", "t"]).any():
            raise SIBenchError("duplicate (run, t) rows: each run must have one row per t")
        piv = work.pivot(index="t", columns="run", values=["s", "v"]).sort_index()
        if piv.isna().any().any():
            raise SIBenchError("runs do not share the same t values: every run needs a row for every t")
        R = len(runs)
        per_run = np.stack([piv["s"][runs].to_numpy().T, piv["v"][runs].to_numpy().T], axis=-1)  # (R, T, 2)
        mean = work.groupby("t").mean(numeric_only=True).sort_index()
        tt = mean.index.to_numpy(dtype=float)
        _check_series(tt, mean["s"].to_numpy(), mean["v"].to_numpy(), label)
        return Trajectory(t=tt, solver_uncertainty=mean["s"].to_numpy(), verifier_uncertainty=mean["v"].to_numpy(),
                          solver_accuracy=mean["solver_accuracy"].to_numpy() if "solver_accuracy" in mean else None,
                          verifier_accuracy=mean["verifier_accuracy"].to_numpy() if "verifier_accuracy" in mean
                          else None, runs=[run[:, None, :] for run in per_run] if R > 1 else [])
    if work["t"].duplicated().any():
        dup = work["t"][work["t"].duplicated()].iloc[0]
        raise SIBenchError(f"duplicate t = {dup:g}: one row per t (or add a 'run' column for replicate runs)")
    work = work.sort_values("t")
    tt = work["t"].to_numpy()
    _check_series(tt, work["s"].to_numpy(), work["v"].to_numpy(), label)
    return Trajectory(t=tt, solver_uncertainty=work["s"].to_numpy(), verifier_uncertainty=work["v"].to_numpy(),
                      solver_accuracy=work["solver_accuracy"].to_numpy() if "solver_accuracy" in work else None,
                      verifier_accuracy=work["verifier_accuracy"].to_numpy() if "verifier_accuracy" in work else None,
                      se=work[["s_se", "v_se"]].to_numpy() if ses else None)


def long_to_trajectory(df: pd.DataFrame, label: str = "") -> Trajectory:
    tcol = time_column(df)
    vcol = next((c for c in VALUE_COLUMNS if c in df.columns), None)
    if vcol is None:
        raise SIBenchError(f"long format needs a value column: one of {', '.join(VALUE_COLUMNS)}")
    t = _numeric(df, tcol)
    y = _numeric(df, vcol)
    series = df["series"].astype(str).str.strip().str.lower().to_numpy()
    work = pd.DataFrame({"t": t, "series": series, "y": y})
    unknown = sorted(set(series) - {"solver", "verifier", "gap"})
    if unknown:
        raise SIBenchError(f"unknown series value(s) {', '.join(unknown)}: expected solver, verifier (gap optional)")
    for need in ("solver", "verifier"):
        if need not in set(series):
            raise SIBenchError(f"long format{' group ' + label if label else ''}: no rows with series = {need}")
    if work.duplicated(["series", "t"]).any():
        raise SIBenchError("duplicate (series, t) rows in long format" + (f" (group {label})" if label else ""))
    piv = work.pivot(index="t", columns="series", values="y").sort_index()
    both = piv[["solver", "verifier"]].dropna()
    if len(both) < len(piv[["solver", "verifier"]].dropna(how="all")):
        raise SIBenchError("solver and verifier rows must share the same t values"
                           + (f" (group {label})" if label else ""))
    tt = both.index.to_numpy(dtype=float)
    s, v = both["solver"].to_numpy(), both["verifier"].to_numpy()
    _check_series(tt, s, v, label)
    gap = None
    if "gap" in piv.columns:
        g = piv.loc[both.index, "gap"]
        if g.notna().all():
            gap = g.to_numpy()
    return Trajectory(t=tt, solver_uncertainty=s, verifier_uncertainty=v, gap=gap, se=_long_se(df, work, both.index))


def _long_se(df: pd.DataFrame, work: pd.DataFrame, index: pd.Index) -> np.ndarray | None:
    """(T, 2) standard errors from a long table's optional `se` column (solver and verifier rows)."""
    if "se" not in df.columns:
        return None
    rows = work["series"].isin(["solver", "verifier"]).to_numpy()
    work = work[rows].assign(se=_numeric(df[rows], "se"))  # gap rows need none
    se = work.pivot(index="t", columns="series", values="se").loc[index, ["solver", "verifier"]]
    return se.to_numpy(dtype=float)


def frame_to_trajectory(df: pd.DataFrame, unit: str = "total", label: str = "") -> Trajectory:
    if df.empty:
        raise SIBenchError("the trajectory table has no rows" + (f" (group {label})" if label else ""))
    return long_to_trajectory(df, label) if is_long(df) else wide_to_trajectory(df, unit, label)


def split_groups(df: pd.DataFrame, group_by: str) -> list[tuple[str, pd.DataFrame]]:
    if group_by not in df.columns:
        raise SIBenchError(f"unknown group column '{group_by}' (columns: {', '.join(map(str, df.columns))})")
    return [(str(k), g) for k, g in df.groupby(group_by, sort=False)]

"""Fitting one trajectory: the coupled law plus its checks (linearisation, alternative laws, backtest,
accuracy saturation)."""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
import pandas as pd

from si_bench.errors import SIBenchError
from si_bench.fit._accuracy import fit_accuracy
from si_bench.fit._alternatives import alternatives as _alternative_laws
from si_bench.fit._backtest import backtest as _run_backtest
from si_bench.fit._coupled import fit_coupled
from si_bench.fit._frames import MIN_POINTS, frame_to_trajectory, split_groups
from si_bench.fit._linearise import linearise
from si_bench.fit._result import FitOptions, FitResult, GroupFitResult
from si_bench.fit._trajectory import Trajectory

MAX_MAGNITUDE = 1e100  # squares of larger values overflow the least-squares sums
MAX_SPACING_RATIO = 1e6

def _as_array(name: str, x, n: int | None = None) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise SIBenchError(f"{name}: values must be numbers") from None
    if n is not None and len(a) != n:
        raise SIBenchError(f"{name}: length {len(a)} differs from t (length {n})")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise SIBenchError(f"{name}: non-finite value at index {bad[0]}")
    return a


@overload
def _standard_errors(se: Any, n: int, quiet: Literal[False] = False) -> np.ndarray: ...
@overload
def _standard_errors(se: Any, n: int, quiet: bool) -> np.ndarray | None: ...


def _standard_errors(se, n: int, quiet: bool = False) -> np.ndarray | None:
    """(T, 2) standard errors, each > 0; from replicates (quiet) a zero or non-finite spread leaves the fit
    unweighted instead of failing."""
    a = np.asarray(se, dtype=float)
    ok = a.shape == (n, 2) and bool(np.all(np.isfinite(a) & (a > 0)))
    if quiet:
        return a if ok else None
    if a.shape != (n, 2):
        raise SIBenchError(f"standard errors must have shape ({n}, 2), got {a.shape}")
    if not ok:
        raise SIBenchError("standard errors must be finite and > 0")
    return a


def _check_ranges(t: np.ndarray, series: dict[str, np.ndarray | None]) -> None:
    """Inputs the least-squares sums cannot represent are errors, not silent nonsense."""
    ts = np.sort(t)
    if np.max(np.abs(t)) > MAX_MAGNITUDE:
        raise SIBenchError(f"t values up to {np.max(np.abs(t)):.3g}: beyond {MAX_MAGNITUDE:g}; rescale t")
    ratio = (ts[-1] - ts[0]) / np.min(np.diff(ts))
    if not ratio <= MAX_SPACING_RATIO:
        raise SIBenchError(f"t spacing too uneven: the span is {ratio:.3g} times the smallest step "
                           f"(at most {MAX_SPACING_RATIO:g}); no rate can be fitted across both scales")
    for name, y in series.items():
        if y is None:
            continue
        if np.max(np.abs(y)) > MAX_MAGNITUDE:
            raise SIBenchError(f"{name}: values up to {np.max(np.abs(y)):.3g}, beyond {MAX_MAGNITUDE:g}; rescale them")
        if name in ("solver", "verifier") and np.ptp(y) <= 1e-12 * np.max(np.abs(y)):
            raise SIBenchError(f"the {name} series is constant: the exponential fit is undefined")
        if name in ("solver", "verifier") and np.ptp(y) < 1.0 / MAX_MAGNITUDE:
            raise SIBenchError(f"{name}: values vary by only {np.ptp(y):.3g}, below {1.0 / MAX_MAGNITUDE:g}; "
                               "rescale them")


def fit_trajectory(t, solver, verifier, *, gap=None, solver_accuracy=None, verifier_accuracy=None,
                   replicates: np.ndarray | None = None, se=None, options: FitOptions | None = None) -> FitResult:
    """Fit the coupled model (plus linearisation check, alternative laws, backtest, accuracy saturation).

    t: float times (rounds or epochs); solver, verifier: uncertainties at t; gap: optional observed gap series
    (compared with the fitted gap as r2_gap_input; r2["gap"] is always against solver - verifier);
    replicates: optional (B, T, 2) resampled (solver, verifier) series aligned with t, e.g. a prompt bootstrap
    or pooled_replicates of seed runs: the rate and limit intervals then combine their spread with the misfit
    they leave unexplained (else profile-likelihood intervals from the residuals); se: optional (T, 2)
    standard errors of (solver, verifier) per point, which weight the fit by 1 / se^2 (by default the
    replicates' spread per point when there are replicates)."""
    opts = options or FitOptions()
    t = _as_array("t", t)
    n = len(t)
    s = _as_array("solver", solver, n)
    v = _as_array("verifier", verifier, n)
    g = _as_array("gap", gap, n) if gap is not None else None
    sa = _as_array("solver_accuracy", solver_accuracy, n) if solver_accuracy is not None else None
    va = _as_array("verifier_accuracy", verifier_accuracy, n) if verifier_accuracy is not None else None
    if len(np.unique(t)) != n:
        raise SIBenchError("t values must be distinct (average replicate runs first, or pass replicates)")
    if n < MIN_POINTS:
        raise SIBenchError(f"too few points: {n} distinct t, at least {MIN_POINTS} needed")
    _check_ranges(t, {"solver": s, "verifier": v, "gap": g, "solver_accuracy": sa, "verifier_accuracy": va})
    order = np.argsort(t)
    t, s, v = t[order], s[order], v[order]
    g = g[order] if g is not None else None
    sa = sa[order] if sa is not None else None
    va = va[order] if va is not None else None
    reps = None
    if replicates is not None:
        reps = np.asarray(replicates, dtype=float)
        if reps.ndim != 3 or reps.shape[1:] != (n, 2):
            raise SIBenchError(f"replicates must have shape (B, {n}, 2), got {reps.shape}")
        reps = reps[:, order, :]
        reps = reps[np.all(np.isfinite(reps), axis=(1, 2))]
    if se is not None:
        se = _standard_errors(se, n)[order]
    elif reps is not None and len(reps) > 1:
        se = _standard_errors(np.std(reps, axis=0, ddof=1), n, quiet=True)

    coupled = fit_coupled(t, s, v, gap_obs=g, replicates=reps, n_boot=opts.n_boot, seed=opts.seed, se=se)
    y = np.column_stack([s, v])
    gap_series = g if g is not None else s - v
    notes = []
    if coupled.at_bound:
        notes.append("the fitted rate lies at the edge of its search range: rate and limits are weakly identified")
    if opts.eps is not None:
        eps = float(opts.eps)
    else:
        g0 = coupled.point["gap_limit"] + coupled.point["delta"]
        eps = 0.01 * abs(g0) if g0 != 0 else 0.01 * abs(coupled.point["delta"])
    accuracy = {}
    for name, acc in (("solver", sa), ("verifier", va)):
        if acc is not None:
            accuracy[name] = fit_accuracy(t, acc)
    return FitResult(coupled=coupled, options=opts, eps=eps, linearisation=linearise(t, gap_series),
                     alternatives=_alternative_laws(t, y), backtest=_run_backtest(t, y, opts.holdout),
                     accuracy=accuracy or None, notes=notes)


def fit_series(traj: Trajectory, options: FitOptions | None = None) -> FitResult:
    """Fit a Trajectory: intervals from what it can resample (runs, then prompts), else from its residuals."""
    opts = options or FitOptions()
    res = fit_trajectory(traj.t, traj.solver_uncertainty, traj.verifier_uncertainty, gap=traj.gap,
                         solver_accuracy=traj.solver_accuracy, verifier_accuracy=traj.verifier_accuracy,
                         replicates=traj.replicates(opts.n_boot, opts.seed), se=traj.se, options=opts)
    res.notes.append(traj.resampling_note())
    return res


def fit_frame(frame: pd.DataFrame, *, options: FitOptions | None = None, label: str = "") -> FitResult:
    """Fit one trajectory table: wide (t|step|epoch, solver_uncertainty, verifier_uncertainty[, *_accuracy][, run])
    or long (series in {solver, verifier, gap}, t|step|epoch, affine_uncertainty|value|uncertainty)."""
    opts = options or FitOptions()
    return fit_series(frame_to_trajectory(frame, unit=opts.unit, label=label), opts)


def fit_groups(frame: pd.DataFrame, group_by: str, *, options: FitOptions | None = None) -> GroupFitResult:
    """One fit per value of `group_by` (wide or long format, see fit_frame)."""
    fits = {}
    for key, sub in split_groups(frame, group_by):
        fits[key] = fit_frame(sub.drop(columns=[group_by]), options=options, label=key)
    return GroupFitResult(group_by=group_by, fits=fits)

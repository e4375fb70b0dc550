"""Fitting the solver-verifier gap dynamics (Sun et al., ICLR 2026) to self-improvement trajectories.

Public API:
    fit_trajectory(t, solver, verifier, *, gap=None, solver_accuracy=None, verifier_accuracy=None,
                   replicates=None, se=None, options=FitOptions()) -> FitResult
    fit_series(trajectory: Trajectory, options=FitOptions()) -> FitResult (intervals from what it resamples)
    fit_groups(frame, group_by, *, options=FitOptions()) -> GroupFitResult
    fit_frame(frame, *, options=FitOptions()) -> FitResult
    simulate(alpha, beta, k, b, us0, uv0, rounds, shares=None, gamma=0.0, dt=1.0) -> pandas.DataFrame
    compare_allocations(alpha, beta, k, b, us0, uv0, rounds, gamma, dt=1.0) -> dict
    pooled_replicates(runs, n_boot=500, seed=0) -> (B, T, 2) replicates of seed runs (runs, then prompts)

Intervals: see si_bench.fit._intervals (method) and si_bench.fit._calibration (measured coverage).
"""

from __future__ import annotations

from si_bench.fit._coupled import CoupledFit
from si_bench.fit._fitting import fit_frame, fit_groups, fit_series, fit_trajectory
from si_bench.fit._frames import MIN_POINTS, frame_to_trajectory, read_table, time_column
from si_bench.fit._replicates import pooled_replicates
from si_bench.fit._result import UNITS, FitOptions, FitResult, GroupFitResult, clean
from si_bench.fit._simulate import (
    SimulateConfig,
    allocation_shares,
    compare_allocations,
    converged_limit,
    late_round,
    predicted_limits,
    simulate,
    simulation,
)
from si_bench.fit._trajectory import Trajectory

__all__ = ["fit_trajectory", "fit_groups", "fit_frame", "simulate", "simulation", "compare_allocations",
           "predicted_limits", "FitOptions", "FitResult", "GroupFitResult", "CoupledFit", "SimulateConfig",
           "Trajectory", "fit_series", "frame_to_trajectory", "clean", "read_table", "time_column", "MIN_POINTS",
           "pooled_replicates", "allocation_shares", "late_round", "converged_limit", "UNITS"]


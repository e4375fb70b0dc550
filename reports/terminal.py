"""Terminal tables (rich). Rendering only: every number comes from the API."""

from __future__ import annotations

from typing import Iterable

from rich.console import Console
from rich.table import Table

HEADLINE = [
    ("solver accuracy", "solver_acc"), ("verifier accuracy", "verifier_acc"),
    ("U_s (solver NLL)", "solver_nll"), ("U_v (verifier NLL)", "verifier_nll"), ("G = U_s - U_v", "gap"),
    ("U_s per token", "solver_nll_per_token"), ("U_v per token", "verifier_nll_per_token"),
    ("G per token", "gap_per_token"), ("mean length (tokens)", "solver_len"),
]


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def measure_rows(metrics: dict) -> Iterable[tuple[str, str, str, str]]:
    names = [(label, key) for label, key in HEADLINE if key in metrics]
    extras = sorted(k for k in metrics if k not in {key for _, key in HEADLINE})
    for label, key in names + [(k, k) for k in extras]:
        m = metrics[key]
        ci = "" if m.ci_low is None else f"[{fmt(m.ci_low)}, {fmt(m.ci_high)}]"
        yield label, fmt(m.value), ci, m.reason or ""


def evaluation_table(result) -> Table:
    cfg = result.config
    table = Table(title=f"{cfg.model} · {cfg.dataset}/{cfg.split} · N={cfg.samples} · verifier {cfg.verifier} "
                        f"(sigma {cfg.sigma}) · {result.n_prompts} prompts")
    for column in ("measure", "value", "95% CI", "note"):
        table.add_column(column)
    for row in measure_rows(result.metrics):
        table.add_row(*row)
    table.caption = f"eval_id {result.eval_id} · " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
    return table


def print_table(table: Table) -> None:
    Console().print(table)


def _with_ci(value, lo, hi) -> str:
    if value is None or value != value:
        return "—"
    if lo is None or lo != lo:
        return fmt(value)
    return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"


def trajectory_table(run_id: str, frame, change: dict) -> Table:
    table = Table(title=f"run {run_id}: test-split trajectory (95% CIs)")
    for column in ("t", "U_s", "U_v", "G", "solver acc", "verifier acc"):
        table.add_column(column)
    for row in frame.itertuples():
        table.add_row(
            f"{row.t:g} {row.t_unit}", _with_ci(row.U_s, row.U_s_lo, row.U_s_hi),
            _with_ci(row.U_v, row.U_v_lo, row.U_v_hi), _with_ci(row.gap, row.gap_lo, row.gap_hi),
            _with_ci(row.solver_acc, row.solver_acc_lo, row.solver_acc_hi),
            _with_ci(row.verifier_acc, row.verifier_acc_lo, row.verifier_acc_hi),
        )
    if change:
        parts = []
        for name in ("solver_acc", "solver_nll"):
            m = change[name]
            excludes = m.ci_low is not None and (m.ci_low > 0 or m.ci_high < 0)
            parts.append(f"{name} {_with_ci(m.value, m.ci_low, m.ci_high)}{' *' if excludes else ''}")
        table.caption = (f"t={change['t1']:g} minus t={change['t0']:g}, paired over test prompts: "
                         + "; ".join(parts) + " (* marks a CI that excludes 0)")
    return table


def print_trajectory(run_id: str, db: str) -> None:
    from si_bench import api

    print_table(trajectory_table(run_id, api.trajectory(run_id, db), api.improvement(run_id, db)))

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

"""Terminal tables (rich). Rendering only: every number comes from the API."""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tabulate import tabulate

from si_bench.reports.tables import interval_text, terminal_text

HEADLINE = [
    ("solver accuracy", "solver_accuracy"), ("verifier accuracy", "verifier_accuracy"),
    ("U_s (solver uncertainty, NLL)", "solver_uncertainty"),
    ("U_v (verifier uncertainty, NLL)", "verifier_uncertainty"),
    ("G = U_s - U_v", "gap"), ("U_s per token", "solver_uncertainty_per_token"),
    ("U_v per token", "verifier_uncertainty_per_token"), ("G per token", "gap_per_token"),
    ("mean length (tokens)", "solver_length"),
    ("verifier AUROC, pooled", "auroc"), ("verifier AUROC within prompts", "auroc_within"),
    ("picks the score decided", "picks_by_score"), ("picks by the lowest-NLL tie-break", "picks_by_nll"),
    ("picks by fallback (none passed sigma)", "fallback_rate"),
    ("pick accuracy lift over a random pick", "pick_lift"), ("verifier signal", "verifier_signal"),
]
PICK_SHARES = ("picks_by_score", "picks_by_nll", "fallback_rate")


def _safe(text) -> str:
    """User-given names in a rich table: no control characters, no rich markup."""
    return escape(terminal_text(text))


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def measure_rows(metrics: dict) -> Iterable[tuple[str, str, str, str]]:
    names = [(label, key) for label, key in HEADLINE if key in metrics]
    extras = sorted(k for k in metrics if k not in {key for _, key in HEADLINE})
    for label, key in names + [(k, k) for k in extras]:
        m = metrics[key]
        ci = "" if m.ci_low is None else f"[{fmt(m.ci_low)}, {fmt(m.ci_high)}]"
        note = m.reason or ""
        if key in PICK_SHARES and m.value is not None and not note:
            note = f"{round(m.value * m.n)} of {m.n} prompts"
        yield label, fmt(m.value), ci, note


def evaluation_table(result) -> Table:
    cfg = result.config
    table = Table(title=f"{_safe(cfg.model)} · {cfg.dataset}/{cfg.split} · N={cfg.samples} · verifier {cfg.verifier} "
                        f"(sigma {cfg.sigma}) · {result.n_prompts} prompts")
    for column in ("measure", "value", "95% CI", "note"):
        table.add_column(column)
    for row in measure_rows(result.metrics):
        table.add_row(*row)
    table.caption = f"eval_id {result.eval_id} · " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
    signal = result.metrics.get("verifier_signal")
    if signal is not None and signal.value == 0.0:
        table.caption = f"{signal.reason}\n{table.caption}"
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
    table = Table(title=f"run {_safe(run_id)}: test-split trajectory (95% CIs)")
    for column in ("t", "U_s", "U_v", "G", "solver acc", "verifier acc"):
        table.add_column(column)
    for row in frame.itertuples():
        table.add_row(
            f"{row.t:g} {row.t_unit}",
            *(_with_ci(getattr(row, m), getattr(row, m + "_lo"), getattr(row, m + "_hi"))
              for m in ("solver_uncertainty", "verifier_uncertainty", "gap", "solver_accuracy", "verifier_accuracy")),
        )
    if change:
        parts = []
        for name in ("solver_accuracy", "solver_uncertainty"):
            m = change[name]
            excludes = m.ci_low is not None and (m.ci_low > 0 or m.ci_high < 0)
            parts.append(f"{name} {_with_ci(m.value, m.ci_low, m.ci_high)}{' *' if excludes else ''}")
        table.caption = (f"t={change['t1']:g} minus t={change['t0']:g}, paired over test prompts: "
                         + "; ".join(parts) + " (* marks a CI that excludes 0)")
    return table



def sweep_table(outcomes) -> Table:
    """One row per job of a sweep (si_bench.sweep.JobOutcome): its status, time, rows merged, the shared work it
    found done and its error. The job id names the model, dataset, mode and seed; the caption totals the reuse."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    table = Table(title=f"sweep: {len(outcomes)} jobs · {counts['done']} done now · {counts['skipped']} done "
                        f"before · {counts['failed']} failed")
    for column in ("job", "verifier", "status", "seconds", "rows merged", "reused"):
        table.add_column(column, overflow="fold")
    table.add_column("error", overflow="fold", ratio=1)
    for o in outcomes:
        ran = o.status != "skipped"
        table.add_row(o.job.job_id, o.job.config.verifier, o.status, f"{o.seconds:.1f}" if ran else "",
                      str(o.rows_merged) if ran else "", _reuse_text(o.reused), o.error or "")
    total = {k: sum(o.reused.get(k, 0) for o in outcomes) for k in ("sampling passes", "evaluations")}
    table.caption = f"reused from earlier jobs: {_reuse_text(total) or 'nothing'}"
    diverged = sorted({g for o in outcomes for g in o.diverged})
    if diverged:
        table.caption += (f"; {len(diverged)} generation(s) sampled twice with different texts, kept whole from "
                          f"one side: {', '.join(diverged)}")
    return table


def _reuse_text(reused: dict[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in reused.items() if n)


# --------------------------------------------------------------------------- fits


def _number(value: Any, spec: str) -> str:
    """A figure of a fit's JSON: a number in `spec`, '-' where the fit left it undefined (None, or a reason)."""
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def fit_report(j: dict, title: str = "") -> str:
    """A fit result (its JSON form) as text: the coupled law, R², linearisation, laws and backtest, notes."""
    lines: list[str] = []
    echo = lines.append
    if title:
        echo(f"\n== {terminal_text(title)} ==")
    rows = [(k, interval_text(j[k], 4), interval_text(j[k]["coupled_law"], 4) if "coupled_law" in j[k] else "",
             j[k].get("reason") or "") for k in (
        "rate", "solver_limit", "verifier_limit", "gap_limit", "alpha_over_beta", "alpha_k", "beta_k", "t_to_eps")]
    echo(tabulate(rows, headers=[f"coupled model (rate per {j['rate_unit']}, n={j['n_points']})",
                                 "estimate [95% CI]", "coupled-law interval", "open end or undefined: why"]))
    interval = j.get("interval") or {}
    echo(f"intervals: {interval.get('method', '-')}; include {interval.get('includes', '-')}"
         + (f"; weighted {interval['weighted']}" if interval.get("weighted", "no") != "no" else ""))
    adequacy = j.get("adequacy") or {}
    echo("coupled law: " + (f"conditional ({adequacy.get('why')})" if adequacy.get("conditional")
                            else "supported (the law test does not reject it)"))
    if interval.get("limits"):
        echo(f"limits: {interval['limits']}")
    r2 = j["r2"]
    echo("R^2: " + ", ".join(f"{k} {_number(v, '.4f')}" for k, v in r2.items() if k != "reason"))
    lin = j.get("linearisation", {})
    if "rate" in lin:
        echo(f"linearisation dG on G: rate {interval_text(lin['rate'], 4)}; "
             f"gap limit {interval_text(lin.get('gap_limit'), 4)}; "
             f"R^2 {_number(lin.get('r2'), '.3f')}")
    alt = j.get("alternatives", {})
    bt = j.get("backtest", {})
    laws = ["coupled", "separate_exp", "power_law", "persistence"]
    test = adequacy.get("law_test") or {}
    law_rows = []
    for law in laws:
        r2s = alt.get(law, {}).get("r2") if law != "coupled" else j["r2"]
        r2txt = ", ".join(f"{k} {_number(v, '.3f')}" for k, v in (r2s or {}).items() if k not in ("gap", "reason"))
        rmse = (bt.get("rmse") or {}).get(law)
        skill = (bt.get("skill_vs_persistence") or {}).get(law)
        f = (test.get("F") or {}).get(law)
        verdict = "" if f is None else ("kept" if law in test.get("not_rejected", []) else "rejected")
        law_rows.append((law, r2txt, f"{_number(f, '.3g')} {verdict}".strip(), _number(rmse, ".4g"),
                     _number(skill, "+.3f")))
    echo(tabulate(law_rows, headers=["law", "R^2", f"F vs best (critical {_number(test.get('critical'), '.3g')})",
                                 f"backtest RMSE (holdout {bt.get('holdout', 0)})", "skill vs persistence"]))
    if bt.get("reason"):
        echo(f"backtest: {bt['reason']}")
    for series, acc in (j.get("accuracy") or {}).items():
        limit = acc.get("limit") or {"estimate": None}
        reason = limit.get("reason") or acc.get("reason")
        echo(f"{series} accuracy limit: {interval_text(limit, pct=True)}" + (f" ({reason})" if reason else ""))
    for n in j.get("notes", []):
        echo(f"note: {n}")
    return "\n".join(lines)


def store_fits_report(out: dict) -> str:
    """One table per stored trajectory, or the note saying why it was not fitted."""
    lines = []
    for entry in out["trajectories"]:
        title = terminal_text(entry.get("fit_key", ""))
        if entry.get("pooling"):
            lines.append(f"{title}: {terminal_text(entry['pooling'])}")
        if entry.get("fit"):
            lines.append(fit_report(entry["fit"], title))
            if entry.get("verifier_signal"):
                lines.append(f"verifier signal: {entry['verifier_signal']}")
        else:
            lines.append(f"{title}: {entry.get('note', 'not fitted')}")
    lines.append(f"{out['n_fitted']} trajectories fitted; saved into the fits table of {terminal_text(out['db'])}")
    return "\n".join(lines)


def simulation_report(out: dict, gamma: float) -> str:
    """The simulated trajectory, its predicted limits and, with shares, the allocations compared."""
    lines: list[str] = []
    echo = lines.append
    df, lim, cmp = out["trajectory"], out["predicted_limits"], out.get("allocations")
    eta = "external_share" in df
    title = "cross-improvement trajectory" if eta else "trajectory (closed form)"
    echo(title)
    cols = ["t", "solver_uncertainty", "verifier_uncertainty", "gap"] + (["external_share"] if eta else [])
    echo(tabulate(df[cols].values.tolist(), headers=["t", "U_s", "U_v", "G"] + (["share"] if eta else []),
                        floatfmt=".4f"))
    echo("\npredicted limits without external data:")
    echo(tabulate([(name, f"{v:.6g}") for name, v in lim.items()], headers=["quantity", "value"]))
    if cmp:
        echo(f"\nsame external budget, gamma = {gamma:g}:")
        label = {"late": f"late (round {cmp['late_round']})", "yours": "yours (--shares)"}
        rows = [(label.get(name, name), f"{cmp['final_solver'][name]:.5f}", f"{cmp['converged_solver'][name]:.5f}",
                 f"{cmp['closed_form_limit'][name]:.5f}") for name in cmp["final_solver"]]
        if "no_external_data" in cmp:
            rows.append(("none", f"{cmp['no_external_data']['final_solver']:.5f}",
                         f"{cmp['no_external_data']['converged_solver']:.5f}", ""))
        echo(tabulate(rows, headers=["allocation", "final U_s (simulated)", "limit from final state (closed form)",
                                     "limit from injections (closed form)"]))
        for name, why in cmp.get("left_out", {}).items():
            echo(f"left out of the comparison: {label.get(name, name)}: {why}")
        if cmp["max_difference_final"] is None:
            echo("fewer than two allocations valid: no difference between allocations")
        else:
            echo(f"max difference between the valid allocations: final {cmp['max_difference_final']:.5f}, "
                 f"converged {cmp['max_difference_converged']:.5f}")
    return "\n".join(lines)

"""`si-bench fit`: fit the solver-verifier gap dynamics to a trajectory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from si_bench.errors import SIBenchError


def _fmt(q) -> str:
    if not isinstance(q, dict):
        return "-" if q is None else f"{q:.4g}"
    est = q.get("estimate")
    s = "-" if est is None else f"{est:.4g}"
    ci = q.get("ci95")
    if ci and None not in ci:
        s += f"  [{ci[0]:.4g}, {ci[1]:.4g}]"
    if q.get("reason"):
        s += f"  ({q['reason']})"
    return s


def _print_table(j: dict, title: str = "") -> None:
    from tabulate import tabulate

    if title:
        typer.echo(f"\n== {title} ==")
    rows = [(k, _fmt(j[k])) for k in ("rate", "solver_limit", "verifier_limit", "gap_limit", "alpha_over_beta",
                                       "alpha_k", "beta_k", "t_to_eps")]
    typer.echo(tabulate(rows, headers=[f"coupled model (rate per {j['rate_unit']}, n={j['n_points']})",
                                       "estimate  [95% CI]"]))
    r2 = j["r2"]
    typer.echo("R^2: " + ", ".join(f"{k} {'-' if v is None else f'{v:.4f}'}" for k, v in r2.items()))
    lin = j.get("linearisation", {})
    if "rate" in lin:
        typer.echo(f"linearisation dG on G: rate {_fmt(lin['rate'])}; gap limit {_fmt(lin.get('gap_limit'))}; "
                   f"R^2 {lin.get('r2', float('nan')):.3f}")
    alt = j.get("alternatives", {})
    bt = j.get("backtest", {})
    laws = ["coupled", "separate_exp", "power_law", "persistence"]
    rows = []
    for law in laws:
        r2s = alt.get(law, {}).get("r2") if law != "coupled" else j["r2"]
        r2txt = ", ".join(f"{k} {v:.3f}" for k, v in (r2s or {}).items() if k != "gap" and v is not None)
        rmse = (bt.get("rmse") or {}).get(law)
        skill = (bt.get("skill_vs_persistence") or {}).get(law)
        rows.append((law, r2txt, "-" if rmse is None else f"{rmse:.4g}", "-" if skill is None else f"{skill:+.3f}"))
    typer.echo(tabulate(rows, headers=["law", "R^2", f"backtest RMSE (holdout {bt.get('holdout', 0)})",
                                       "skill vs persistence"]))
    if bt.get("reason"):
        typer.echo(f"backtest: {bt['reason']}")
    for series, acc in (j.get("accuracy") or {}).items():
        if "limit" in acc:
            typer.echo(f"{series} accuracy limit: {_fmt(acc['limit'])}")
        else:
            typer.echo(f"{series} accuracy: {acc.get('reason')}")
    for n in j.get("notes", []):
        typer.echo(f"note: {n}")


def command(
    trajectory: Optional[Path] = typer.Option(None, "--trajectory", help="CSV (or parquet/json/jsonl) trajectory file."),
    db: Optional[Path] = typer.Option(None, "--db", help="Fit trajectories stored in a si-bench DuckDB store."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Column to split on: one fit per group."),
    unit: str = typer.Option("total", "--unit", help="Uncertainty to fit: total or per_token."),
    boot: int = typer.Option(500, "--boot", help="Bootstrap replicates for the 95% CIs."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the bootstrap."),
    eps: Optional[float] = typer.Option(None, "--eps", help="Tolerance for t_to_eps (default 0.01 * |G_0|)."),
    holdout: float = typer.Option(0.4, "--holdout", help="Share of the last points held out in the backtest."),
    rate_unit: str = typer.Option("", "--rate-unit", help="Unit of t for the report (default: epoch/step/round from the time column)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Fit the coupled solver-verifier model dU_s/dt = -alpha E, dU_v/dt = -beta E (Sun et al.) to a trajectory.

    Reports the shared rate, solver/verifier/gap limits, alpha/beta, alpha*k, beta*k, t_to_eps (Corollary 3.2) with bootstrap 95% CIs, the dG-on-G linearisation check, alternative laws (separate exponentials, power law, persistence) and a forecast backtest.

    Accepted --trajectory formats:

    * wide: columns t (or step or epoch), solver_uncertainty, verifier_uncertainty; optional solver_accuracy, verifier_accuracy (saturation fit), run (replicate seeds: the mean trajectory is fitted, CIs resample runs), solver_uncertainty_per_token / verifier_uncertainty_per_token (--unit per_token).

    * long: columns series (solver, verifier, optional gap), t (or step or epoch) and a value column (affine_uncertainty, value or uncertainty); a gap series is used for the gap R^2 only.

    With --group-by COLUMN (e.g. panel) one fit per group: {"groups": [{"group": ..., ...}, ...]}.
    """
    from si_bench.fit import FitOptions, fit_frame, fit_groups
    from si_bench.fit._frames import read_table, time_column

    if unit not in ("total", "per_token"):
        raise SIBenchError(f"--unit must be total or per_token (got {unit!r})")
    if boot < 0:
        raise SIBenchError("--boot must be >= 0")
    if not 0.0 <= holdout < 1.0:
        raise SIBenchError("--holdout must be in [0, 1)")
    if eps is not None and not eps > 0:
        raise SIBenchError("--eps must be > 0")
    if (trajectory is None) == (db is None):
        raise SIBenchError("give exactly one of --trajectory FILE or --db STORE")
    if db is not None:
        out = _fit_db(db, group_by=group_by, unit=unit, boot=boot, seed=seed, eps=eps, holdout=holdout)
        if as_json:
            typer.echo(json.dumps(out, allow_nan=False))
        else:
            print_store_fits(out)
        return
    df = read_table(trajectory)
    tcol = time_column(df)
    ru = rate_unit or {"t": "round", "step": "step", "epoch": "epoch"}[tcol]
    opts = FitOptions(n_boot=boot, seed=seed, eps=eps, holdout=holdout, unit=unit, rate_unit=ru)
    if group_by:
        res = fit_groups(df, group_by, options=opts)
        j = res.to_json()
        if as_json:
            typer.echo(json.dumps(j, allow_nan=False))
            return
        for g in j["groups"]:
            _print_table(g, f"{group_by} = {g['group']}")
        return
    j = fit_frame(df, options=opts).to_json()
    if as_json:
        typer.echo(json.dumps(j, allow_nan=False))
    else:
        _print_table(j, str(trajectory))


def print_store_fits(out: dict) -> None:
    """One table per stored trajectory, or the note saying why it was not fitted."""
    for entry in out["trajectories"]:
        title = entry.get("fit_key", "")
        if entry.get("fit"):
            _print_table(entry["fit"], title)
        else:
            typer.echo(f"{title}: {entry.get('note', 'not fitted')}")
    typer.echo(f"{out['n_fitted']} trajectories fitted; saved into the fits table of {out['db']}")


def _fit_db(db: Path, **kwargs) -> dict:
    """Hook for fitting trajectories from the store (wired by si_bench.api when available)."""
    try:
        from si_bench import api  # type: ignore[attr-defined]
        fn = getattr(api, "fit_store")
    except (ImportError, AttributeError):
        raise SIBenchError("fitting from --db is not available yet; export a trajectory CSV and use --trajectory") from None
    if not Path(db).exists():
        raise SIBenchError(f"store not found: {db}")
    return fn(db, **kwargs)

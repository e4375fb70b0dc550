"""`si-bench fit`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.fit import FitOptions
from si_bench.reports.tables import JsonOutput
from si_bench.store import StoreOptions
from si_bench.trajectories import FitInput


@options_command(FitInput, StoreOptions, FitOptions, JsonOutput)
def command(source: FitInput, where: StoreOptions, options: FitOptions, output: JsonOutput) -> None:
    """Fit the coupled solver-verifier model dU_s/dt = -alpha E, dU_v/dt = -beta E (Sun et al.) to trajectories.

    Reports the shared rate, solver/verifier/gap limits, alpha/beta, alpha*k, beta*k, t_to_eps (Corollary 3.2)
    with 95% CIs, the dG-on-G linearisation check, alternative laws (separate exponentials, power law,
    persistence) and a forecast backtest. Without --trajectory every run in --db is fitted and the fits are
    saved into its `fits` table.

    Accepted --trajectory formats:

    * wide: columns t (or step or epoch), solver_uncertainty, verifier_uncertainty; optional solver_accuracy,
    verifier_accuracy (saturation fit), run (replicate seeds: the mean trajectory is fitted, CIs resample runs),
    solver_uncertainty_per_token / verifier_uncertainty_per_token (--unit per_token).

    * long: columns series (solver, verifier, optional gap), t (or step or epoch) and a value column
    (affine_uncertainty, value or uncertainty).

    With --group-by COLUMN (e.g. panel) one fit per group: {"groups": [{"group": ..., ...}, ...]}.
    """
    import warnings

    # A degenerate trajectory makes numpy and statsmodels warn mid-fit; the result says what is undefined and
    # why, so the terminal gets that, not their warnings (recorded: statsmodels sets its own filters on import).
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        _fit(source, where, options, output)


def _fit(source: FitInput, where: StoreOptions, options: FitOptions, output: JsonOutput) -> None:
    import json

    import typer

    from si_bench import api
    from si_bench.reports.terminal import fit_report, store_fits_report

    if source.trajectory is None:
        out = api.fit(where.db, options, group_by=source.group_by or "run")
        typer.echo(json.dumps(out, allow_nan=False) if output.as_json else store_fits_report(out))
        return
    out = api.fit_file(source.trajectory, options, group_by=source.group_by)
    if output.as_json:
        typer.echo(json.dumps(out, allow_nan=False))
    elif source.group_by:
        typer.echo("\n".join(fit_report(g, f"{source.group_by} = {g['group']}") for g in out["groups"]))
    else:
        typer.echo(fit_report(out, source.trajectory))

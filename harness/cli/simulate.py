"""`si-bench simulate`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.fit import SimulateConfig
from si_bench.reports.tables import JsonOutput, PlotOutput


@options_command(SimulateConfig, PlotOutput, JsonOutput)
def command(cfg: SimulateConfig, plot: PlotOutput, output: JsonOutput) -> None:
    """Simulate dU_s/dt = -alpha E, dU_v/dt = -beta E, E = k (U_s - U_v) - b (exact closed form).

    Prints t, U_s, U_v, G and the predicted limits (rate k(alpha-beta), U_s,inf, U_v,inf, G_inf = b/k). With
    --shares (one external-data share per round, summing to 1) and --gamma, the verifier uncertainty entering
    round r becomes U_v / (1 + gamma * share_r) (cross-improvement), and the solver uncertainty after the last
    round and its converged value (self-improvement continued without external data) are compared for the same
    budget spent early (round 1), uniformly and late.
    """
    import json
    from pathlib import Path

    import typer

    from si_bench import api
    from si_bench.fit import clean
    from si_bench.reports.plots import simulation_figure
    from si_bench.reports.terminal import simulation_report

    out = api.simulate(cfg)
    if plot.plot is not None:
        simulation_figure(out["trajectory"], out["predicted_limits"], Path(plot.plot), cfg.shares is not None)
    if output.as_json:
        typer.echo(json.dumps(clean({**out, "trajectory": out["trajectory"].to_dict(orient="list")}),
                              allow_nan=False))
        return
    typer.echo(simulation_report(out, cfg.gamma))
    if plot.plot is not None:
        typer.echo(f"\nplot written to {plot.plot}")

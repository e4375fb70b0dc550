"""`si-bench simulate`: the solver-verifier gap dynamics with known parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from si_bench.errors import SIBenchError


def _parse_shares(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise SIBenchError(f"--shares must be a comma-separated list of numbers (got {text!r})") from None


def command(
    alpha: float = typer.Option(..., "--alpha", help="Solver learning coefficient (alpha > beta)."),
    beta: float = typer.Option(..., "--beta", help="Verifier learning coefficient (beta >= 0)."),
    k: float = typer.Option(..., "--k", help="Energy slope k > 0 (E = k G - b)."),
    b: float = typer.Option(..., "--b", help="Energy offset b (the gap limit is b/k)."),
    us0: float = typer.Option(..., "--us0", help="Initial solver uncertainty."),
    uv0: float = typer.Option(..., "--uv0", help="Initial verifier uncertainty."),
    rounds: int = typer.Option(10, "--rounds", help="Number of rounds."),
    dt: float = typer.Option(1.0, "--dt", help="Length of one round in units of t."),
    shares: Optional[str] = typer.Option(None, "--shares", help="External data share per round, comma list summing to 1."),
    gamma: float = typer.Option(0.0, "--gamma", help="Cross-improvement strength: U_v -> U_v / (1 + gamma * share)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of the trajectory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Simulate dU_s/dt = -alpha E, dU_v/dt = -beta E, E = k (U_s - U_v) - b (exact closed form).

    Prints t, U_s, U_v, G and the predicted limits (rate k(alpha-beta), U_s,inf, U_v,inf, G_inf = b/k). With --shares (one external-data share per round, summing to 1) and --gamma, the verifier uncertainty entering round r becomes U_v / (1 + gamma * share_r) (cross-improvement), and the solver uncertainty after the last round and its converged value (self-improvement continued without external data) are compared for the same budget spent early (round 1), uniformly and late (last round).
    """
    from tabulate import tabulate

    from si_bench.fit import compare_allocations, predicted_limits, simulate

    eta = _parse_shares(shares) if shares is not None else None
    df = simulate(alpha, beta, k, b, us0, uv0, rounds, shares=eta, gamma=gamma, dt=dt)
    lim = predicted_limits(alpha, beta, k, b, us0, uv0)
    cmp = compare_allocations(alpha, beta, k, b, us0, uv0, rounds, gamma, dt=dt) if eta is not None else None
    if plot is not None:
        _plot(df, lim, plot, eta is not None)
    if as_json:
        from si_bench.fit._result import clean

        out = {"trajectory": df.to_dict(orient="list"), "predicted_limits": lim}
        if cmp is not None:
            out["allocations"] = cmp
        typer.echo(json.dumps(clean(out), allow_nan=False))
        return
    title = "cross-improvement trajectory" if eta is not None else "trajectory (closed form)"
    typer.echo(title)
    cols = ["t", "solver_uncertainty", "verifier_uncertainty", "gap"] + (["external_share"] if eta is not None else [])
    typer.echo(tabulate(df[cols].values.tolist(), headers=["t", "U_s", "U_v", "G"] + (["share"] if eta is not None else []),
                        floatfmt=".4f"))
    typer.echo("\npredicted limits without external data:")
    typer.echo(tabulate([(k_, f"{v:.6g}") for k_, v in lim.items()], headers=["quantity", "value"]))
    if cmp is not None:
        typer.echo(f"\nsame external budget, gamma = {gamma:g}:")
        rows = [(name, f"{cmp['final_solver'][name]:.5f}", f"{cmp['converged_solver'][name]:.5f}")
                for name in ("early", "uniform", "late")]
        rows.append(("none", f"{cmp['no_external_data']['final_solver']:.5f}",
                     f"{cmp['no_external_data']['converged_solver']:.5f}"))
        typer.echo(tabulate(rows, headers=["allocation", "final U_s", "converged U_s"]))
        typer.echo(f"max difference between allocations: final {cmp['max_difference_final']:.5f}, "
                   f"converged {cmp['max_difference_converged']:.5f}")
    if plot is not None:
        typer.echo(f"\nplot written to {plot}")


def _plot(df, lim: dict, path: Path, cross: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(df["t"], df["solver_uncertainty"], "o-", label="solver U_s")
        ax.plot(df["t"], df["verifier_uncertainty"], "s-", label="verifier U_v")
        ax.plot(df["t"], df["gap"], "^-", label="gap G")
        if not cross:
            for key, style in (("solver_limit", "C0"), ("verifier_limit", "C1"), ("gap_limit", "C2")):
                ax.axhline(lim[key], color=style, ls=":", lw=1)
        ax.set_xlabel("t")
        ax.set_ylabel("uncertainty")
        ax.set_title("cross-improvement" if cross else "solver-verifier gap dynamics")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    except OSError as exc:
        raise SIBenchError(f"cannot write plot {path}: {exc}") from None

from __future__ import annotations

import typer

from si_bench import store


def command(
    db: str = typer.Option(store.DEFAULT_DB, help="DuckDB file (opened read-only)."),
    format: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """List self-improvement runs: model, dataset, mode, rounds done, status and id."""
    from si_bench import api
    from si_bench.reports.tables import render_frame

    typer.echo(render_frame(api.list_runs(db), format))

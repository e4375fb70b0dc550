from __future__ import annotations

import typer

from si_bench import store
from si_bench.errors import SIBenchError


def command(
    query: str = typer.Argument(..., help="One SQL statement, e.g. SELECT * FROM summary."),
    db: str = typer.Option(store.DEFAULT_DB, help="DuckDB file (opened read-only)."),
    format: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """Run SQL over the results, read-only (tables: runs, checkpoints, prompts, generations, samples,
    verdicts, evaluations, picks, metrics, fits; view: summary)."""
    from si_bench.reports.tables import render_frame

    if format not in ("table", "csv", "json"):
        raise SIBenchError(f"unknown format {format!r} (choose from table, csv, json)")
    typer.echo(render_frame(store.query(db, query), format))

"""`si-bench runs`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.reports.tables import OutputFormat
from si_bench.store import StoreOptions


@options_command(StoreOptions, OutputFormat)
def command(where: StoreOptions, output: OutputFormat) -> None:
    """List self-improvement runs: model, dataset, mode, progress, status and id."""
    import typer

    from si_bench import api
    from si_bench.reports.tables import render_frame

    typer.echo(render_frame(api.list_runs(where.db), output.format))

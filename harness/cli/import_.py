"""`si-bench import`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.merge import ImportOptions
from si_bench.reports.tables import JsonOutput
from si_bench.store import StoreOptions


@options_command(ImportOptions, StoreOptions, JsonOutput)
def command(source: ImportOptions, where: StoreOptions, output: JsonOutput) -> None:
    """Merge another si-bench store (e.g. one brought back from a GPU machine) into --db without duplicates, in
    one transaction.

    New rows are added; a copy further along replaces ours (a run with more steps, an evaluation finished since,
    a newer fit). Rows that differ only in timestamps, timings and paths are the same rows. A row whose results
    differ in the two stores refuses the import unless --on-conflict says whose to keep. Importing the same file
    twice changes nothing. Prints the rows added and updated per table.
    """
    import json

    import typer
    from tabulate import tabulate

    from si_bench import api

    counts = api.import_store(source.other, where.db, on_conflict=source.on_conflict)
    if output.as_json:
        typer.echo(json.dumps(counts))
        return
    rows = [(t, c["added"], c["updated"]) for t, c in counts.items()]
    typer.echo(tabulate(rows, headers=["table", "rows added", "rows updated"]))
    total = sum(c["added"] + c["updated"] for c in counts.values())
    typer.echo(f"imported {source.other} into {where.db}: {total} rows" if total else f"nothing new in {source.other}")

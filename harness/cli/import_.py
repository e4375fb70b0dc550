"""`si-bench import`: merge a store brought back from another machine."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def command(
    other: Path = typer.Argument(..., help="The other si-bench DuckDB store (opened read-only)."),
    db: Path = typer.Option(Path("si-bench.duckdb"), "--db", help="The store to merge into."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as one JSON object."),
) -> None:
    """Merge another si-bench store (e.g. one brought back from a GPU machine) into --db without duplicates, in one transaction.

    Rows with a new primary key are added; rows already present are kept unless the other copy is newer (a run updated later, an evaluation finished since, a newer fit). Importing the same file twice changes nothing. Prints the rows added and updated per table.
    """
    from tabulate import tabulate

    from si_bench import api

    counts = api.import_store(other, db)
    if as_json:
        typer.echo(json.dumps(counts))
        return
    rows = [(t, c["added"], c["updated"]) for t, c in counts.items()]
    typer.echo(tabulate(rows, headers=["table", "rows added", "rows updated"]))
    total = sum(c["added"] + c["updated"] for c in counts.values())
    typer.echo(f"imported {other} into {db}: {total} rows" if total else f"nothing new in {other}")

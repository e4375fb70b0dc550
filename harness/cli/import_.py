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
    a newer fit). Rows that differ only in timestamps, timings, paths and float noise are the same rows. A
    generation sampled on both sides with different texts is kept whole from one side (ours, or theirs with
    --on-conflict theirs) and reported. Any other row whose results differ refuses the import unless
    --on-conflict says whose to keep. Importing the same file twice changes nothing. Prints the rows added and
    updated per table.
    """
    import json

    import typer
    from tabulate import tabulate

    from si_bench import api

    counts = api.import_store(source.other, where.db, on_conflict=source.on_conflict)
    kept = {"kept_whole": {"from": counts.kept, "gen_ids": counts.diverged}} if counts.diverged else {}
    if output.as_json:
        typer.echo(json.dumps({**counts, **kept}))
        return
    rows = [(t, c["added"], c["updated"]) for t, c in counts.items()]
    typer.echo(tabulate(rows, headers=["table", "rows added", "rows updated"]))
    total = sum(c["added"] + c["updated"] for c in counts.values())
    typer.echo(f"imported {source.other} into {where.db}: {total} rows" if total else f"nothing new in {source.other}")
    if counts.diverged:
        typer.echo(f"{len(counts.diverged)} generation(s) sampled in both stores with different texts: kept "
                   f"{counts.kept} whole, with the evaluations over them ({', '.join(counts.diverged)})")

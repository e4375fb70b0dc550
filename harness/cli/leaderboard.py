"""`si-bench leaderboard`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.fit import FitOptions
from si_bench.reports.leaderboard import PublishOptions
from si_bench.store import StoreOptions


@options_command(StoreOptions, PublishOptions, FitOptions)
def command(where: StoreOptions, publish: PublishOptions, options: FitOptions) -> None:
    """Write the leaderboard: leaderboard.md/.csv/.json, index.html, per-run plots and data.parquet.

    Fits every run's trajectory in --db exactly as `si-bench fit` does (runs with fewer than 4 points are listed
    with their accuracies and a note) and saves the fits into the store. With --from-parquet the same files are
    rebuilt from an earlier data.parquet export, without the store.
    """
    import typer

    from si_bench import api

    res = api.leaderboard(where.db, publish.out, options=options, from_parquet=publish.from_parquet,
                          save_fits=publish.save_fits, reference=publish.reference)
    typer.echo(f"leaderboard: {res['rows']} rows -> {res['out_dir']}/ ({len(res['files'])} files; open index.html)")

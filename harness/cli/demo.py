from __future__ import annotations

from typing import Optional

import typer

from si_bench import store


def command(
    db: str = typer.Option(store.DEFAULT_DB, help="DuckDB file."),
    out: str = typer.Option("leaderboard", help="Where the leaderboard is written."),
    workdir: Optional[str] = typer.Option(None, help="Where checkpoints go (default: si-bench-runs/ beside the db)."),
) -> None:
    """The embedded demo: `run` with its defaults (smollm2-135m, arith), then `fit` and `leaderboard`."""
    from si_bench import api
    from si_bench.cli.fit import print_store_fits
    from si_bench.cli.progress import progress_bar
    from si_bench.reports.terminal import print_trajectory
    from si_bench.trainers.config import SelfImproveConfig

    with progress_bar() as progress:
        [run_id] = api.run(SelfImproveConfig(), db=db, workdir=workdir, progress=progress,
                           log=progress.console.print)
    print_trajectory(run_id, db)
    print_store_fits(api.fit_store(db))
    written = api.leaderboard(db, out)
    typer.echo(f"leaderboard written to {written['out_dir']}")

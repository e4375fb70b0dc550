from __future__ import annotations

from typing import Optional

import typer

from harness import store


def command(
    db: str = typer.Option(store.DEFAULT_DB, help="DuckDB file."),
    out: str = typer.Option("leaderboard", help="Where the leaderboard is written."),
    workdir: Optional[str] = typer.Option(None, help="Where checkpoints go (default: si-bench-runs/ beside the db)."),
) -> None:
    """The embedded demo: `run` with its defaults (smollm2-135m, arith), then `fit` and `leaderboard`."""
    from harness import api
    from harness.cli.fit import print_store_fits
    from harness.cli.progress import progress_bar
    from reports.terminal import print_trajectory
    from trainers.config import SelfImproveConfig

    with progress_bar() as progress:
        [run_id] = api.run(SelfImproveConfig(), db=db, workdir=workdir, progress=progress,
                           log=progress.console.print)
    print_trajectory(run_id, db)
    print_store_fits(api.fit_store(db))
    written = api.leaderboard(db, out)
    typer.echo(f"leaderboard written to {written['out_dir']}")

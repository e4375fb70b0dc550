from __future__ import annotations

from typing import Optional

import typer

from si_bench import store


def command(
    run: str = typer.Option(..., "--run", help="Run id (see `si-bench runs`)."),
    workdir: Optional[str] = typer.Option(None, help="Where checkpoints go (default: si-bench-runs/ beside the db)."),
    db: str = typer.Option(store.DEFAULT_DB, help="DuckDB file."),
) -> None:
    """One more self-improvement round of an existing run (its next step, or one beyond a finished run)."""
    from si_bench import api
    from si_bench.cli.progress import progress_bar
    from si_bench.reports.terminal import print_trajectory

    with progress_bar() as progress:
        api.train_round(run, db=db, workdir=workdir, progress=progress, log=progress.console.print)
    print_trajectory(run, db)

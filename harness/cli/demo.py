"""`si-bench demo`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.reports.leaderboard import PublishOptions
from si_bench.store import StoreOptions
from si_bench.trainers.config import RunPlacement


@options_command(StoreOptions, RunPlacement, PublishOptions)
def command(where: StoreOptions, placement: RunPlacement, publish: PublishOptions) -> None:
    """The embedded demo: `run` with its defaults (smollm2-135m, arith), then `fit` and `leaderboard`."""
    import typer

    from si_bench import api
    from si_bench.cli._show import log_lines, progress_bar, show_run
    from si_bench.reports import leaderboard as board
    from si_bench.reports.terminal import store_fits_report

    board.output_dir(publish.out)  # an unwritable --out fails now, not after the run
    with progress_bar() as progress:
        [run_id] = api.run(api.SelfImproveConfig(), db=where.db, workdir=placement.workdir, progress=progress,
                           log=log_lines(progress))
    show_run(run_id, where.db)
    typer.echo(store_fits_report(api.fit(where.db)))
    written = api.leaderboard(where.db, publish.out, save_fits=publish.save_fits, reference=publish.reference)
    typer.echo(f"leaderboard written to {written['out_dir']}")

"""`si-bench demo`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from si_bench.cli._options import options_command
from si_bench.options import differs
from si_bench.progress import ProgressOptions
from si_bench.reports.leaderboard import PublishOptions
from si_bench.store import StoreOptions
from si_bench.trainers.config import RunPlacement

DEMO_OUT = "si-bench-demo"


@dataclass
class DemoPublish(PublishOptions):
    out: str = differs(DEMO_OUT, "the demo's leaderboard is a local result: the published leaderboard/ is rebuilt "
                                 "by `make leaderboard` alone")


@options_command(StoreOptions, RunPlacement, DemoPublish, ProgressOptions)
def command(where: StoreOptions, placement: RunPlacement, publish: DemoPublish, shown: ProgressOptions) -> None:
    """The embedded demo: `run` with its defaults (smollm2-135m, arith), then `fit` and `leaderboard` into a local
    folder (--out)."""
    import typer

    from si_bench import api
    from si_bench.cli._show import reporter, show_run
    from si_bench.reports import leaderboard as board
    from si_bench.reports.terminal import store_fits_report

    board.output_dir(publish.out)  # an unwritable --out fails now, not after the run
    with reporter(shown) as progress:
        [run_id] = api.run(api.SelfImproveConfig(), db=where.db, workdir=placement.workdir, progress=progress,
                           log=progress.log)
        fits = api.fit(where.db, progress=progress)
        written = api.leaderboard(where.db, publish.out, save_fits=publish.save_fits, reference=publish.reference,
                                  progress=progress)
    show_run(run_id, where.db)
    typer.echo(store_fits_report(fits))
    checkpoints = placement.workdir or Path(where.db).resolve().parent / "si-bench-runs"
    typer.echo(f"demo outputs (local, ignored by git): the store {where.db}, checkpoints in {checkpoints}, the "
               f"leaderboard in {written['out_dir']} (open {Path(written['out_dir']) / 'index.html'})")

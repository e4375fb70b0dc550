"""`si-bench train-round`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.progress import ProgressOptions
from si_bench.store import StoreOptions
from si_bench.trainers.config import RunPlacement, RunRef


@options_command(RunRef, RunPlacement, StoreOptions, ProgressOptions)
def command(ref: RunRef, placement: RunPlacement, where: StoreOptions, shown: ProgressOptions) -> None:
    """One more self-improvement round of an existing run (its next step, or one beyond a finished run)."""
    from si_bench import api
    from si_bench.cli._show import reporter, show_run

    with reporter(shown) as progress:
        api.train_round(ref.run, db=where.db, workdir=placement.workdir, progress=progress, log=progress.log)
    show_run(ref.run, where.db)

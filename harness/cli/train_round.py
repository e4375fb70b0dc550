"""`si-bench train-round`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.store import StoreOptions
from si_bench.trainers.config import RunPlacement, RunRef


@options_command(RunRef, RunPlacement, StoreOptions)
def command(ref: RunRef, placement: RunPlacement, where: StoreOptions) -> None:
    """One more self-improvement round of an existing run (its next step, or one beyond a finished run)."""
    from si_bench import api
    from si_bench.cli._show import log_lines, progress_bar, show_run

    with progress_bar() as progress:
        api.train_round(ref.run, db=where.db, workdir=placement.workdir, progress=progress,
                        log=log_lines(progress))
    show_run(ref.run, where.db)

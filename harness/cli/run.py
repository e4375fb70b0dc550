"""`si-bench run`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.progress import ProgressOptions
from si_bench.store import StoreOptions
from si_bench.trainers.config import Replicates, RunPlacement, SelfImproveConfig


@options_command(SelfImproveConfig, Replicates, RunPlacement, StoreOptions, ProgressOptions)
def command(cfg: SelfImproveConfig, replicates: Replicates, placement: RunPlacement, where: StoreOptions,
            shown: ProgressOptions) -> None:
    """Self-improvement: round-0 evaluation plus K rounds of sample -> self-verify -> fine-tune -> evaluate.
    Resumable: the same command continues a killed run."""
    from si_bench import api
    from si_bench.cli._show import reporter, show_run

    with reporter(shown) as progress:
        run_ids = api.run(cfg, seeds=replicates.seed_list(), db=where.db, workdir=placement.workdir,
                          progress=progress, log=progress.log)
    for run_id in run_ids:
        show_run(run_id, where.db)

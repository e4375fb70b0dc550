"""`si-bench sweep`."""

from __future__ import annotations

from si_bench.cli._options import options_command
from si_bench.progress import ProgressOptions
from si_bench.store import StoreOptions
from si_bench.sweep import SweepConfig


@options_command(SweepConfig, StoreOptions, ProgressOptions)
def command(cfg: SweepConfig, where: StoreOptions, shown: ProgressOptions) -> None:
    """A grid of `run` jobs (models x datasets x verifiers x seeds x any run setting), one after another or as Ray
    tasks, each with its own store shard; every finished shard is merged into --db as `import` merges. Run the same
    command again to skip finished jobs, continue interrupted ones and retry failed ones. Exits 1 when a job failed.
    """
    import typer

    from si_bench import api
    from si_bench.cli._show import reporter
    from si_bench.reports.terminal import print_table, sweep_table

    with reporter(shown) as progress:
        outcomes = api.sweep(cfg, db=where.db, progress=progress, log=progress.log)
    print_table(sweep_table(outcomes))
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        typer.echo(f"{failed} job(s) failed; the same command retries them (finished jobs are skipped)", err=True)
        raise typer.Exit(1)

"""What long commands show: rich progress bars, and a run's test trajectory when it is done."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), transient=True,
    )


def show_run(run_id: str, db: str) -> None:
    from si_bench import api
    from si_bench.reports.terminal import print_table, trajectory_table

    print_table(trajectory_table(run_id, api.run_points(run_id, db), api.run_change(run_id, db)))

"""What long commands show: rich progress bars, and a run's test trajectory when it is done."""

from __future__ import annotations

from typing import Callable

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from si_bench.reports.tables import terminal_text


class Description(ProgressColumn):
    """A task's description as plain text: names in it (a model folder) carry no markup or control characters."""

    def render(self, task) -> Text:
        return Text(terminal_text(task.description))


def progress_bar() -> Progress:
    return Progress(
        Description(), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
    )


def log_lines(progress: Progress) -> Callable[[str], None]:
    """A command's log sink above its progress bars: each line plain text, without control characters."""
    return lambda line: progress.console.print(terminal_text(line), markup=False, highlight=False)


def show_run(run_id: str, db: str) -> None:
    from si_bench import api
    from si_bench.reports.terminal import print_table, trajectory_table

    print_table(trajectory_table(run_id, api.run_points(run_id, db), api.run_change(run_id, db)))

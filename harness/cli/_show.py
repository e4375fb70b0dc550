"""What long commands show: their progress (si_bench.progress, every name in it as plain text) and a run's test
trajectory when it is done."""

from __future__ import annotations

from typing import TextIO

from si_bench.progress import ProgressOptions, Reporter
from si_bench.reports.tables import terminal_text


def reporter(options: ProgressOptions, stream: TextIO | None = None) -> Reporter:
    """The command's progress: bars on a terminal, lines in a log, nothing under --quiet; every description and log
    line plain text without control characters or markup (a model folder's name is the user's)."""
    return Reporter.for_command(options, stream=stream, clean=terminal_text)


def show_run(run_id: str, db: str) -> None:
    from si_bench import api
    from si_bench.reports.terminal import print_table, trajectory_table

    print_table(trajectory_table(run_id, api.run_points(run_id, db), api.run_change(run_id, db)))

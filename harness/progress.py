"""Progress of long work, for a person at a terminal and for one reading a log later: one reporter for every long
command (evaluate, run, train-round, sweep, demo, lm-eval).

- On a terminal: rich bars, one per running phase, each named by where it runs ("step 2/10 · train · sampling"),
  moving per sample, per batch or per optimiser step; a finished phase leaves one line above the bars.
- Anywhere else (a file, a pipe, CI, a scheduler's log): plain lines on stderr, one when a phase starts, one when
  it ends, and one at least every `every` seconds in between, from a background tick, so a long batch is never
  silent. Each names where the work is (step k/K, split), the phase (sampling, verifying, fine-tuning, fitting,
  merging, ...), items done of total, the elapsed time and an estimate of what remains.
- Quiet (`--quiet`): nothing.

Library code takes any object with rich.Progress's `add_task` / `advance` / `update` (a `Reporter`, a rich
Progress, or None for no progress); `scope` names where nested work runs, `log` prints a line between the bars.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, TextIO

from si_bench.options import Options, option

if TYPE_CHECKING:
    from rich.progress import Progress

PLAIN_EVERY_S = 30.0  # a log line at least this often during long work
_ACTIVE: list["Reporter"] = []  # the reporters of the commands running in this process, innermost last


@dataclass
class ProgressOptions(Options):
    """How a long command reports its progress."""

    quiet: bool = option(False, "No progress output (bars on a terminal, periodic lines elsewhere).",
                         flag="--quiet", aliases=("-q",), in_id=False)


def duration(seconds: float | None) -> str:
    """1h02m, 3m05s, 42s; '?' when unknown."""
    if seconds is None:
        return "?"
    s = int(round(max(seconds, 0.0)))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class _Task:
    where: str
    phase: str
    total: float
    done: float
    started: float
    base: float  # items already done when the task started (resumed work): not part of the rate
    last_line: float = field(default=0.0)
    rich_id: Any = None

    def name(self, clean: Callable[[str], str] = str) -> str:
        return clean(" · ".join(part for part in (self.where, self.phase) if part))

    def eta(self, now: float) -> float | None:
        fresh = self.done - self.base
        if fresh <= 0 or now <= self.started:
            return None
        return (now - self.started) / fresh * max(self.total - self.done, 0)


class Reporter:
    """Progress for one command: mode 'terminal' (rich bars), 'plain' (log lines) or 'quiet'."""

    def __init__(self, mode: str = "plain", *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, every: float = PLAIN_EVERY_S, ticking: bool = True,
                 clean: Callable[[str], str] = str):
        self.mode, self.clock, self.every, self.ticking = mode, clock, every, ticking
        self.clean = clean  # what every description and log line passes through before it is shown
        # The tick wakes every `tick_s`; a line is due a tick early, so no gap between lines exceeds `every`.
        self.tick_s = every / 6
        self.due = every - self.tick_s
        self.stream = stream if stream is not None else sys.stderr
        self._scopes: list[str] = []
        self._tasks: dict[int, _Task] = {}
        self._lock = threading.RLock()
        self._bars: Progress | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_command(cls, options: ProgressOptions | None = None, stream: TextIO | None = None,
                    clean: Callable[[str], str] = str) -> "Reporter":
        """Bars where stderr is a terminal, plain lines where it is not, nothing under --quiet."""
        stream = stream if stream is not None else sys.stderr
        if options is not None and options.quiet:
            return cls("quiet", stream=stream, clean=clean)
        return cls("terminal" if stream.isatty() else "plain", stream=stream, clean=clean)

    # ------------------------------------------------------------ lifetime
    def __enter__(self) -> "Reporter":
        if self.mode == "terminal":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bars = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
                                  console=Console(file=self.stream))
            self._bars.__enter__()
        elif self.mode == "plain" and self.ticking:
            self._thread = threading.Thread(target=self._tick_loop, name="si-bench-progress", daemon=True)
            self._thread.start()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._bars is not None:
            self._bars.__exit__(*exc)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.tick()

    # ------------------------------------------------------------ where the work is
    @contextmanager
    def scope(self, label: str) -> Iterator[None]:
        """Name the work started inside (e.g. "step 2/10", "job 3/6"); scopes nest."""
        self._scopes.append(label)
        try:
            yield
        finally:
            self._scopes.pop()

    # ------------------------------------------------------------ rich.Progress's interface
    def add_task(self, description: str, total: float | None = None, completed: float = 0, **_: Any) -> int:
        now = self.clock()
        with self._lock:
            task = _Task(" · ".join(self._scopes), description, float(total or 0), float(completed), now,
                         float(completed), last_line=now)
            key = len(self._tasks) + 1
            while key in self._tasks:
                key += 1
            self._tasks[key] = task
            if self._bars is not None:
                task.rich_id = self._bars.add_task(task.name(self.clean), total=task.total,
                                                   # rich keeps counts as floats (Task.completed); add_task says int
                                                   completed=task.done)  # type: ignore[arg-type]
            self._line(task, now, "started")
        return key

    def advance(self, task_id: int | None, advance: float = 1) -> None:
        task = self._tasks.get(task_id) if task_id is not None else None
        if task_id is not None and task is not None:
            self._set(task_id, task, done=task.done + advance)

    def update(self, task_id: int | None, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, **_: Any) -> None:
        task = self._tasks.get(task_id) if task_id is not None else None
        if task_id is None or task is None:
            return
        if description is not None:
            task.phase = description
        if total is not None:
            task.total = float(total)
        self._set(task_id, task, done=task.done if completed is None else float(completed))

    def _set(self, task_id: int, task: _Task, done: float) -> None:
        now = self.clock()
        with self._lock:
            task.done = done
            if self._bars is not None:
                self._bars.update(task.rich_id, completed=done, total=task.total, description=task.name(self.clean))
            if task.total and task.done >= task.total:
                self._finish(task_id, task, now)
            elif now - task.last_line >= self.due:
                self._line(task, now)

    def _finish(self, task_id: int, task: _Task, now: float) -> None:
        del self._tasks[task_id]
        if self._bars is not None:
            self._bars.remove_task(task.rich_id)
        self._line(task, now, f"done in {duration(now - task.started)}")

    def tick(self) -> None:
        """A line for each phase silent for about `every` seconds (the background tick calls this every `tick_s`)."""
        now = self.clock()
        with self._lock:
            for task in list(self._tasks.values()):
                if now - task.last_line >= self.due:
                    self._line(task, now)

    # ------------------------------------------------------------ output
    def log(self, message: str) -> None:
        """A line of its own (above the bars on a terminal)."""
        with self._lock:
            if self._bars is not None:
                self._bars.console.print(self.clean(message), markup=False, highlight=False)
            elif self.mode == "plain":
                self._write(self.clean(message))

    def _line(self, task: _Task, now: float, state: str | None = None) -> None:
        """A phase's line: always in a log; on a terminal only its end (the bar shows the rest)."""
        task.last_line = now
        ending = state is not None and state.startswith("done")
        if self.mode == "quiet" or (self.mode == "terminal" and not ending):
            return
        counts = f"{task.done:g}/{task.total:g}" if task.total else f"{task.done:g}"
        if state is None:
            state = f"{duration(now - task.started)} elapsed · ETA {duration(task.eta(now))}"
        text = f"{task.name(self.clean)} {counts} · {state}"
        if self._bars is not None:
            self._bars.console.print(text, markup=False, highlight=False)
        else:
            self._write(text)

    def _write(self, text: str) -> None:
        self.stream.write(f"[si-bench {time.strftime('%H:%M:%S')}] {text}\n")
        self.stream.flush()


def current() -> Reporter | None:
    """The reporter of the command running in this process: for work that no caller hands one to (a model class
    that lm-eval's own command line builds)."""
    return _ACTIVE[-1] if _ACTIVE else None


def scope(progress: Any, label: str):
    """`progress.scope(label)` where the reporter names scopes (a rich Progress or None does not)."""
    return progress.scope(label) if hasattr(progress, "scope") else nullcontext()


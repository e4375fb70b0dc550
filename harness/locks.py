"""One holder at a time: the sweep driver of a sweep directory, the writer of a run.

An flock on a small file, so it dies with the process that holds it (nothing to clean after a kill -9), and the
file names its holder for the refusal and for `run_holder`. A lock this process already holds is entered again
without blocking (a run's steps inside a command that holds the run).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from si_bench.errors import SIBenchError

_HELD: dict[str, list] = {}  # lock files this process holds -> [times entered, its note]
PROBE_GRACE_S = 0.5  # `holder` takes a shared lock for an instant: a writer starting then tries again


def _who() -> str:
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3]))
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')} ({command})"


@contextmanager
def exclusive(path: str | Path, refusal: Callable[[str], str]) -> Iterator[None]:
    """Hold `path` while the block runs; another holder is one SIBenchError, `refusal(holder)`, before any work."""
    path = Path(path).resolve()
    key = str(path)
    if key in _HELD:
        _HELD[key][0] += 1
        try:
            yield
        finally:
            _HELD[key][0] -= 1
        return
    with hold(path, refusal) as note:
        _HELD[key] = [1, note]
        try:
            yield
        finally:
            del _HELD[key]


@contextmanager
def hold(path: str | Path, refusal: Callable[[str], str]) -> Iterator[str]:
    """`exclusive` without re-entry: a second hold of `path`, in this process too, is refused. Yields the holder's
    note written into the file (pid, host, start, command)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if not _try_lock(handle):
            handle.seek(0)
            raise SIBenchError(refusal(handle.read().strip() or "another process"))
        note = _who()
        handle.seek(0)
        handle.truncate()
        handle.write(note)
        handle.flush()
        yield note


def _try_lock(handle) -> bool:
    deadline = time.monotonic() + PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def holder(path: str | Path) -> str | None:
    """Who holds `path` now (its note: pid, host, since, command), or None; never creates the file."""
    path = Path(path).resolve()
    if str(path) in _HELD:
        return _HELD[str(path)][1]
    try:
        handle = open(path)
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        return None


def run_lock_path(db: str | Path, run_id: str) -> Path:
    """Beside the store, keyed by it: the same run in two stores is two runs."""
    db = Path(db).resolve()
    return db.parent / f"{db.name}.locks" / f"{run_id}.lock"


@contextmanager
def run_lock(db: str | Path, run_id: str) -> Iterator[None]:
    """One writer per run: advancing run `run_id` of store `db` (a `run`, a `train-round`, an import bringing its
    steps) while another process does is refused, naming that process."""
    with exclusive(run_lock_path(db, run_id), lambda who: (
            f"run {run_id} in {db} is being advanced by another process ({who}); wait for it to finish, then run "
            "the same command again")):
        yield


def run_holder(db: str | Path, run_id: str) -> str | None:
    """The process advancing run `run_id` of store `db` now (pid, host, since, command), or None: a run marked
    running with no holder was interrupted."""
    return holder(run_lock_path(db, run_id))

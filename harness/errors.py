"""The exception types users (or their machine) can cause. The CLI prints the message as one line and exits with
the error's exit code: 2 for input, 1 for an environment that failed mid-work."""

from __future__ import annotations

# What an OS failure says inside another library's message (DuckDB reports a full disk as a TransactionException).
ENVIRONMENT_MARKERS = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied",
                       "Input/output error", "File too large")
RESUMES = "what was stored before it is kept: run the same command again to resume"


class SIBenchError(Exception):
    """A problem with the user's input or environment (not a bug)."""

    exit_code = 2


class EnvironmentFailure(SIBenchError):
    """The machine failed the work (disk full, permission lost, the store locked by another program); the store
    stays consistent and the same command resumes."""

    exit_code = 1


def environment_reason(exc: BaseException) -> str | None:
    """One line for an exception that is the environment failing (an OSError, or a library error carrying one),
    ending in what was kept and how to resume; None for anything else (a bug, which keeps its traceback)."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}; {RESUMES}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if any(marker in first for marker in ENVIRONMENT_MARKERS):
        return f"{first}; {RESUMES}"
    return None

"""Deterministic fault injection for resume tests: SI_BENCH_FAIL_AT="point:n[:kill|:enospc|:dbfull|:stop]".

At the n-th time `point(name)` is reached, raise `InjectedFault`; with `:kill`, SIGKILL this process (a
real crash); with `:enospc`, raise the OSError a full disk raises (`:dbfull`: the error DuckDB raises when its
write-ahead log meets one); with `:stop`, SIGSTOP this process (alive and
holding what it holds, mid-work, until a SIGCONT: a concurrent second process meets it there).
Costs one dictionary lookup when unset.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

_reached: Counter = Counter()


class InjectedFault(RuntimeError):
    """A simulated crash."""


def point(name: str) -> None:
    spec = os.environ.get("SI_BENCH_FAIL_AT")
    if not spec:
        return
    target, _, rest = spec.partition(":")
    if target != name:
        return
    count, _, mode = rest.partition(":")
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        if mode == "dbfull":
            import duckdb

            raise duckdb.TransactionException(f'TransactionContext Error: Failed to commit: could not write to file '
                                              f'"{name}.wal": {os.strerror(errno.ENOSPC)}')
        if mode == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        raise InjectedFault(f"injected fault at {name} #{_reached[name]}")


def reset() -> None:
    _reached.clear()

"""Options written once.

Each command's settings are a dataclass whose fields are declared with `option(...)`: the default, the
help text and the checks of a setting live there and nowhere else. The CLI builds its flags from these
fields (si_bench.cli._options), a config validates itself when it is made, and scripts get exactly the
command line's defaults and checks. A subclass that needs another default says so with `differs(...)`,
which keeps the help text of the field it overrides and states why.
"""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

from si_bench.errors import SIBenchError


@dataclass(frozen=True)
class Spec:
    """What the CLI and the checks need to know of one option."""

    help: str
    flag: str | None = None  # e.g. "--num-fewshot"; default: "--" + the name with dashes
    aliases: tuple[str, ...] = ()  # further flags, e.g. a short form or a deprecated name
    argument: bool = False  # positional on the command line
    choices: Callable[[], Iterable[str]] | tuple[str, ...] | None = None
    min: float | None = None  # inclusive bounds
    max: float | None = None
    above: float | None = None  # exclusive lower bound
    check: Callable[[Any], None] | None = None  # raises SIBenchError for a bad value
    in_id: bool = True  # enters the id of what it configures
    why: str = ""  # for a `differs` override: why this command's default is another
    hidden: bool = False  # state a config records (in the store), not a flag

    def names(self, name: str) -> tuple[str, ...]:
        return (self.flag or "--" + name.replace("_", "-"), *self.aliases)


def option(default: Any = MISSING, help: str = "", **spec: Any) -> Any:
    """A dataclass field with its default, help text and checks (see `Spec`)."""
    return field(default=default, metadata={"spec": Spec(help=help, **spec)})


def differs(default: Any, why: str) -> Any:
    """Override a base class's option default for one command; the help text stays the base's."""
    return field(default=default, metadata={"why": why})


def spec_of(cls: type, name: str) -> Spec:
    """The option's Spec, taken from the class that declared it (with any override's `why`)."""
    why = ""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is None:
            continue
        why = why or f.metadata.get("why", "")
        if "spec" in f.metadata:
            spec = f.metadata["spec"]
            return Spec(**{**spec.__dict__, "why": why}) if why else spec
    raise KeyError(f"{cls.__name__}.{name} is not declared with option()")


def _check_number(flag: str, value: Any, spec: Spec) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SIBenchError(f"{flag} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SIBenchError(f"{flag} must be a finite number, got {value}")
    if spec.min is not None and spec.max is not None and not spec.min <= value <= spec.max:
        raise SIBenchError(f"{flag} must lie in [{spec.min:g}, {spec.max:g}], got {value:g}")
    if spec.min is not None and value < spec.min:
        raise SIBenchError(f"{flag} must be at least {spec.min:g}, got {value:g}")
    if spec.max is not None and value > spec.max:
        raise SIBenchError(f"{flag} must be at most {spec.max:g}, got {value:g}")
    if spec.above is not None and not value > spec.above:
        raise SIBenchError(f"{flag} must be greater than {spec.above:g}, got {value:g}")


def check_value(name: str, value: Any, spec: Spec) -> None:
    """One option's own rules; None (not set) passes."""
    if value is None:
        return
    flag = spec.names(name)[0] if not spec.argument else name.upper()
    if spec.choices is not None:
        allowed = list(spec.choices() if callable(spec.choices) else spec.choices)
        if value not in allowed:
            raise SIBenchError(f"unknown {name.replace('_', ' ')} {value!r} (choose from {', '.join(allowed)})")
    if spec.min is not None or spec.max is not None or spec.above is not None:
        _check_number(flag, value, spec)
    if spec.check is not None:
        spec.check(value)


class Options:
    """Base of every config class: checks each option, then the rules that join several (`check`)."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            check_value(f.name, getattr(self, f.name), spec_of(type(self), f.name))
        self.check()

    def check(self) -> None:
        """Rules across options; subclasses override."""

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults."""
        return {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                if getattr(self, f.name) != f.default}

    def identity(self) -> dict[str, Any]:
        """The options that enter an id (in_id=True)."""
        return {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                if spec_of(type(self), f.name).in_id}


def check_directory(path: Path, what: str) -> None:
    """`path` can be created (or exists) and be written: checked before any work, without making anything."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise SIBenchError(f"cannot create {what} {path}: {existing} is not a writable directory")

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
    output: str | None = None  # "file" or "directory": a path the command writes (see `check_output`)

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


# Bounds shared by several options, each chosen from what the work can mean.
SEED_MAX = 2**31 - 1  # the store keeps seeds as 32-bit INTEGERs; numpy, torch and transformers take them all
BOOT_MAX = 10_000  # the Monte Carlo error of a 95% bound is then far below its sampling error, and the
#                    (replicates x prompts) resampling index of the largest split stays under a gigabyte
MAGNITUDE_MAX = 1e6  # an uncertainty in nats, a rate or a coefficient of the law: past any NLL a model gives
#                      and any rate (e^-1e6 is 0), while products of two stay far inside double precision


def _shown(value: float) -> str:
    try:
        return f"{value:g}"
    except OverflowError:  # an integer too large for a float
        return f"a {len(str(abs(value)))}-digit number"


def _range(spec: Spec) -> str:
    low = None if spec.min is None and spec.above is None else (
        f"[{spec.min:g}" if spec.above is None else f"({spec.above:g}")
    if low and spec.max is not None:
        return f"lie in {low}, {spec.max:g}]"
    if spec.max is not None:
        return f"be at most {spec.max:g}"
    return f"be at least {spec.min:g}" if spec.above is None else f"be greater than {spec.above:g}"


def _check_number(flag: str, value: Any, spec: Spec) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SIBenchError(f"{flag} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SIBenchError(f"{flag} must be a finite number, got {value}")
    if ((spec.min is not None and value < spec.min) or (spec.above is not None and not value > spec.above)
            or (spec.max is not None and value > spec.max)):
        raise SIBenchError(f"{flag} must {_range(spec)}, got {_shown(value)}")


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
    if spec.output is not None:
        check_output(flag, value, spec.output)
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


def check_output(flag: str, value: str, kind: str) -> None:
    """The one rule for every path a command writes (declared `option(..., output="file" | "directory")`),
    checked before any work and making nothing: the path is not empty, is not an existing path of the other
    kind, and its parent folder exists. si-bench makes no missing parents (a mistyped path would otherwise
    become a tree of folders); the named directory itself is made, and the command says where it wrote."""
    if not str(value).strip():
        raise SIBenchError(f"{flag} is empty: name a {kind}")
    path = Path(value)
    if path.exists() and path.is_dir() != (kind == "directory"):
        raise SIBenchError(f"{flag} {path} is {'a directory' if path.is_dir() else 'not a directory'}: "
                           f"name a {kind}")
    if not path.exists() and not path.absolute().parent.is_dir():
        raise SIBenchError(f"{flag} {path}: its folder {path.absolute().parent} does not exist (si-bench makes no "
                           "missing parent folders: create it first)")


def check_directory(path: Path, what: str) -> None:
    """`path` can be created (or exists) and be written: checked before any work, without making anything."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise SIBenchError(f"cannot create {what} {path}: {existing} is not a writable directory")

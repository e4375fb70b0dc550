"""Typer commands built from config classes: every flag's default and help text come from the field that
declares it (si_bench.options), so the CLI restates nothing."""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import MISSING, fields
from typing import Any, Callable

import typer

from si_bench.options import Spec, spec_of


def _annotation(hint: Any) -> Any:
    """typer reads Optional[X], not the X | None of PEP 604."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return typing.Optional[args[0]] if len(args) == 1 else hint
    return hint


def _parameter(f, spec: Spec, hint: Any) -> inspect.Parameter:
    default = f.default
    required = default is MISSING
    help_text = spec.help + (f" This command's own default, because {spec.why}." if spec.why else "")
    if spec.argument:
        info = typer.Argument(... if required else default, help=help_text, show_default=not required)
    else:
        info = typer.Option(... if required else default, *spec.names(f.name), help=help_text)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                             annotation=_annotation(hint))


def options_command(*classes: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate `fn(cfg_a, cfg_b, ...)`: the command takes the fields of each class as its flags and calls
    fn with one validated instance per class (a bad value is a SIBenchError before any work)."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        owners: dict[str, type] = {}
        params = []
        for cls in classes:
            hints = typing.get_type_hints(cls)
            for f in fields(cls):
                spec = spec_of(cls, f.name)
                if spec.hidden:
                    continue
                if f.name in owners:
                    raise TypeError(f"option {f.name!r} is declared by both {owners[f.name].__name__} and "
                                    f"{cls.__name__}")
                owners[f.name] = cls
                params.append(_parameter(f, spec, hints[f.name]))
        params.sort(key=lambda p: not isinstance(p.default, typer.models.ArgumentInfo))

        def command(**values: Any) -> None:
            fn(*(cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values}) for cls in classes))

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.option_classes = classes  # type: ignore[attr-defined]
        command.__doc__ = fn.__doc__
        command.__name__ = fn.__name__
        return command

    return decorate

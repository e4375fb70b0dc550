"""The fake's shapes, built from the snapshot of the real vLLM (tests/fixtures/vllm_api.json): every class and
method si-bench touches has exactly the real one's fields, keywords, types and defaults, so a name the backend
uses that vLLM lacks fails here as it would there."""

from __future__ import annotations

import builtins
import copy
import dataclasses
import functools
import inspect
import json
import typing
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Literal

SNAPSHOT = json.loads((Path(__file__).resolve().parents[2] / "fixtures" / "vllm_api.json").read_text())
UNSET = type("UNSET", (), {"__repr__": lambda self: "<default computed by vLLM>"})()


class _Classes(dict):
    """Names in the snapshot's types: builtins and typing as themselves; vLLM's own classes as stand-ins."""

    def __missing__(self, name: str) -> Any:
        if hasattr(builtins, name):
            return getattr(builtins, name)
        if name.startswith("__"):  # a debugger's or pytest's lookup, not a type
            raise KeyError(name)
        self[name] = cls = type(name, (), {"__module__": "vllm", "__class_getitem__": classmethod(lambda c, _: c)})
        return cls


_CLASSES = _Classes(Literal=Literal, Any=Any, Callable=Callable, Sequence=Sequence)


def resolve(text: str) -> Any:
    return eval(text, {}, _CLASSES)  # noqa: S307 - our own snapshot's type strings


def _default(entry: dict) -> dict:
    if "value" in entry:
        value = entry["value"]
        if isinstance(value, (list, dict)):
            return {"default_factory": functools.partial(copy.deepcopy, value)}
        return {"default": value}
    if entry.get("required"):
        return {}
    return {"default": UNSET}


def struct(section: str, namespace: dict | None = None, **options: Any) -> type:
    """A dataclass with the snapshot's fields for `section`, in vLLM's order."""
    spec = [(name, resolve(e["type"]), dataclasses.field(**_default(e))) for name, e in SNAPSHOT[section].items()]
    return dataclasses.make_dataclass(section, spec, namespace=namespace, **options)


def signature(method: str) -> inspect.Signature:
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for p in SNAPSHOT["LLM"][method]:
        kind = getattr(inspect.Parameter, p["kind"].upper())
        default = p["value"] if "value" in p else (UNSET if "expr" in p or "factory" in p else inspect.Parameter.empty)
        params.append(inspect.Parameter(p["name"], kind, default=default))
    return inspect.Signature(params)


def conforms(method: Callable) -> Callable:
    """Give a fake LLM method the real one's signature: a call the real method refuses raises TypeError here."""
    real = signature(method.__name__)

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        bound = real.bind(*args, **kwargs)
        bound.apply_defaults()
        return method(**bound.arguments)

    checked.__signature__ = real
    return checked


def conforming(value: Any, kind: Any) -> bool:
    """Whether a value fits a field's type, as vLLM's pydantic configs validate it (strictly: no coercion)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any or kind is UNSET:
        return True
    if origin in (typing.Union, __import__("types").UnionType):
        return any(conforming(value, a) for a in args)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return isinstance(value, kind)
    return isinstance(value, origin or kind) if isinstance(origin or kind, type) else True

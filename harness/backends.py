"""Sampling backends by name: a lazy registry of lm-eval model classes, each imported only when chosen.

Every backend follows `si_bench.sampling.SamplingBackend` and offers `create(path, adapter, **settings)`.
Add one by adding an entry here; nothing else branches on a backend's name.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from si_bench.errors import SIBenchError
from si_bench.sampling import SamplingBackend


@dataclass(frozen=True)
class Backend:
    target: str  # "module:Class"
    requires: str | None = None  # a package that must be importable
    hint: str = ""

    def check_available(self, name: str) -> None:
        if self.requires and importlib.util.find_spec(self.requires) is None:
            raise SIBenchError(f"--backend {name} needs the package {self.requires!r}, which is not installed"
                               f"{self.hint}")


BACKENDS: dict[str, Backend] = {
    "hf": Backend("si_bench.hf_backend:LogprobHFLM"),
    "vllm": Backend("si_bench.vllm_backend:LogprobVLLM", requires="vllm",
                    hint=" (GPU machines: install requirements-vllm.txt in its own environment)"),
}


def get_backend(name: str) -> Backend:
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise SIBenchError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})") from None
    backend.check_available(name)
    return backend


def load_lm(name: str, path: str, adapter: str | None, **settings) -> SamplingBackend:
    """Instantiate backend `name` over the model at `path` (plus an optional LoRA adapter)."""
    module, _, cls = get_backend(name).target.partition(":")
    return getattr(importlib.import_module(module), cls).create(path, adapter, **settings)

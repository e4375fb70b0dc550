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

    @property
    def installed(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def check_available(self, name: str) -> None:
        if not self.installed:
            raise SIBenchError(f"--backend {name} needs the package {self.requires!r}, which is not "
                               f"installed{self.hint}")


BACKENDS: dict[str, Backend] = {
    "hf": Backend("si_bench.hf_backend:LogprobHFLM"),
    "vllm": Backend("si_bench.vllm_backend:LogprobVLLM", requires="vllm",
                    hint=" (GPU machines: install requirements-vllm.txt in its own environment)"),
    "mock": Backend("si_bench.mock_backend:ScriptedLM"),  # a scripted model directory: texts, log-probs, scores
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


def register_installed() -> list[str]:
    """Import every installed backend, so that lm-eval's model registry knows its class (si-hf, si-vllm, si-mock)."""
    names = [name for name, backend in BACKENDS.items() if backend.installed]
    for name in names:
        importlib.import_module(BACKENDS[name].target.partition(":")[0])
    return names

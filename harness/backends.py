"""Sampling backends by name: a lazy registry of lm-eval model classes, each imported only when chosen.

Every backend follows `si_bench.sampling.SamplingBackend` and offers `create(path, adapter, **settings)` and
`check_backend_args(args)` (the `--backend-args` it accepts). Add one by adding an entry here; nothing
else branches on a backend's name.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from si_bench.errors import SIBenchError
from si_bench.sampling import SamplingBackend

# Set by si-bench itself: a --backend-args key among these is refused with the flag to use instead.
RESERVED_ARGS = {
    "pretrained": "the model is --model", "model": "the model is --model", "peft": "an adapter is given as --model",
    "lora": "an adapter is given as --model", "device": "use --device", "dtype": "use --dtype",
    "batch_size": "use --batch-size", "max_new_tokens": "use --max-new-tokens",
    "seed_base": "si-bench derives every sample's seed from the evaluation",
}


@dataclass(frozen=True)
class Backend:
    target: str  # "module:Class"
    requires: str | None = None  # a package that must be importable
    hint: str = ""
    # Backend arguments that only place or schedule the work: they never enter an id. Any other enters the
    # generation and run ids, since it may change the numbers (a quantisation, a context length, ...).
    scheduling: frozenset[str] = frozenset()
    # "module:function"s of backends that can serve a run's LoRA adapters on one loaded base model
    # (function(lora_rank) -> settings for create()) and give back accelerator memory while a run fine-tunes.
    serving: str | None = None
    pause: str | None = None
    # "module:function(path)": what the backend needs of a model directory, checked before any work.
    check_model: str | None = None

    @property
    def installed(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def check_available(self, name: str) -> None:
        if not self.installed:
            raise SIBenchError(f"--backend {name} needs the package {self.requires!r}, which is not "
                               f"installed{self.hint}")

    def model_class(self) -> Any:
        return _resolve(self.target)


BACKENDS: dict[str, Backend] = {
    "hf": Backend("si_bench.hf_backend:LogprobHFLM",
                  scheduling=frozenset({"parallelize", "max_memory_per_gpu", "max_cpu_memory", "offload_folder",
                                        "max_batch_size"})),
    "vllm": Backend("si_bench.vllm_backend:LogprobVLLM", requires="vllm",
                    hint=" (GPU machines: install requirements-vllm.txt in its own environment)",
                    scheduling=frozenset({
                        "tensor_parallel_size", "pipeline_parallel_size", "gpu_memory_utilization",
                        "enable_prefix_caching", "enable_chunked_prefill", "max_num_seqs", "max_num_batched_tokens",
                        "cpu_offload_gb", "kv_cache_memory_bytes", "enforce_eager", "enable_lora",
                        "max_loras", "max_lora_rank", "max_cpu_loras", "enable_sleep_mode", "disable_log_stats",
                        "block_size", "distributed_executor_backend"}),
                    serving="si_bench.vllm_backend:adapter_serving", pause="si_bench.vllm_backend:pause_engine"),
    # a scripted model directory: texts, log-probs, scores
    "mock": Backend("si_bench.mock_backend:ScriptedLM", check_model="si_bench.mock_backend:read_script"),
}


def get_backend(name: str) -> Backend:
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise SIBenchError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})") from None
    backend.check_available(name)
    return backend


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_backend_args(text: str | None) -> dict[str, Any]:
    """`key=value,...` as lm-eval's `--model_args`: true/false become booleans, numbers numbers, the rest strings."""
    args: dict[str, Any] = {}
    for item in (text or "").split(","):
        key, sep, value = item.strip().partition("=")
        key = key.strip()
        if not sep or not key:
            raise SIBenchError(f"--backend-args takes key=value pairs separated by commas, got {item.strip()!r}")
        if key in args:
            raise SIBenchError(f"--backend-args gives {key} twice")
        args[key] = _value(value.strip())
    return args


def check_names(backend: str, args: dict[str, Any], accepted: Iterable[str], reserved: dict[str, str]) -> None:
    """Refuse a key that si-bench sets itself (naming the flag to use) or that the backend does not take."""
    accepted = sorted(set(accepted))
    for key in args:
        if key in reserved:
            raise SIBenchError(f"--backend-args {key}: {reserved[key]}")
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=3)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise SIBenchError(f"--backend-args: the {backend} backend takes no argument {key!r}{hint}")


def check_backend_args(name: str, args: dict[str, Any]) -> None:
    """Validate `--backend-args` against what backend `name` accepts, before any work."""
    if args:
        get_backend(name).model_class().check_backend_args(args)


def args_in_id(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The backend arguments that may change the numbers (all but the backend's scheduling ones)."""
    scheduling = get_backend(name).scheduling
    return {k: v for k, v in sorted(args.items()) if k not in scheduling}


def _resolve(target: str) -> Any:
    """The object a "module:name" target names (imported now: backends load lazily)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def serving_settings(name: str, lora_rank: int | None) -> dict[str, Any]:
    """Settings with which a run's evaluations load the model, so that a backend that can serves every round's
    adapter (of rank `lora_rank`; None: full fine-tuning) on the one base model it loaded first."""
    backend = get_backend(name)
    return _resolve(backend.serving)(lora_rank) if backend.serving else {}


def pause(name: str) -> None:
    """Let backend `name` give back the accelerator memory it holds (a run is about to fine-tune)."""
    target = get_backend(name).pause
    if target and target.partition(":")[0] in sys.modules:  # only a backend that was loaded holds memory
        _resolve(target)()


def check_model(name: str, path: str) -> None:
    """The model directory is one backend `name` can load (a scripted model for mock), before anything is written."""
    target = get_backend(name).check_model
    if target:
        _resolve(target)(Path(path))


def load_lm(name: str, path: str, adapter: str | None, **settings) -> SamplingBackend:
    """Instantiate backend `name` over the model at `path` (plus an optional LoRA adapter)."""
    return get_backend(name).model_class().create(path, adapter, **settings)


def register_installed() -> list[str]:
    """Import every installed backend, so that lm-eval's model registry knows its class (si-hf, si-vllm, si-mock)."""
    names = [name for name, backend in BACKENDS.items() if backend.installed]
    for name in names:
        importlib.import_module(BACKENDS[name].target.partition(":")[0])
    return names

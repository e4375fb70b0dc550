"""Where a model runs: its device and its number format, chosen for the machine unless told.

`auto` picks CUDA when torch sees a GPU, else the CPU, and bfloat16 on a GPU that supports it, else
float32 (bfloat16 on the CPU is slow and erratic on the machines it was measured on). Everything si-bench
stored before these settings existed ran on the CPU in float32 (`LEGACY`): that placement adds nothing to
an id, any other enters the generation and run ids, so stored ids never change and the numbers of two
placements never mix in one evaluation or run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from si_bench.errors import SIBenchError

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
LEGACY_SETTINGS = {"device": "cpu", "dtype": "float32"}  # what every run before --device and --dtype used


@dataclass(frozen=True)
class Placement:
    device: str  # cpu, cuda or cuda:N
    dtype: str  # float32, bfloat16 or float16

    @property
    def kind(self) -> str:
        return self.device.split(":")[0]

    def id_key(self) -> dict[str, str]:
        """What this placement adds to an id: nothing on the CPU in float32, else device kind and dtype."""
        if (self.kind, self.dtype) == (LEGACY_SETTINGS["device"], LEGACY_SETTINGS["dtype"]):
            return {}
        return {"device": self.kind, "dtype": self.dtype}


def check_device(value: str) -> None:
    if not DEVICE_PATTERN.fullmatch(value):
        raise SIBenchError(f"unknown device {value!r} (choose from auto, cpu, cuda, cuda:N)")


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(value: str) -> str:
    check_device(value)
    if value == "cpu":
        return value
    count = _cuda_devices()
    if value == "auto":
        return "cuda" if count else "cpu"
    if not count:
        raise SIBenchError(f"--device {value}: torch sees no CUDA device here (use --device cpu or auto)")
    index = int(value.partition(":")[2] or 0)
    if index >= count:
        raise SIBenchError(f"--device {value}: torch sees {count} CUDA device(s), numbered from 0")
    return value


def resolve_dtype(value: str, device: str) -> str:
    if value not in DTYPES:
        raise SIBenchError(f"unknown dtype {value!r} (choose from {', '.join(DTYPES)})")
    on_gpu = device.startswith("cuda")
    if value == "float16" and not on_gpu:
        raise SIBenchError("--dtype float16 needs a CUDA device (on the CPU use float32 or bfloat16)")
    if value == "auto" or (value == "bfloat16" and on_gpu):
        supported = on_gpu and _bf16_supported()
        if value == "bfloat16" and not supported:
            raise SIBenchError(f"--dtype bfloat16: the GPU at {device} does not support it (use float32 or float16)")
        return "bfloat16" if supported else "float32"
    return value


def _bf16_supported() -> bool:
    import torch

    return bool(torch.cuda.is_bf16_supported())


def resolve(device: str, dtype: str) -> Placement:
    """The concrete placement for `--device` and `--dtype` on this machine (a SIBenchError if it has none)."""
    concrete = resolve_device(device)
    return Placement(concrete, resolve_dtype(dtype, concrete))

from vllm.api import struct


def _checks(self) -> None:
    if self.lora_int_id < 1:
        raise ValueError(f"id must be > 0, got {self.lora_int_id}")
    assert self.lora_path, "lora_path cannot be empty"


LoRARequest = struct("LoRARequest", {"__post_init__": _checks})

"""A fake `vllm` for tests: vLLM 0.33's API (built from the snapshot in tests/fixtures/vllm_api.json, see
vllm/api.py), computed for real with transformers on CPU.

`LLM` takes exactly the real keywords (LLM's own and EngineArgs' fields, values of their types); `generate`,
`sleep` and `wake_up` have the real signatures. Behaviour follows vLLM where si-bench depends on it:
- a prompt must be shorter than `max_model_len` (vllm/v1/engine/input_processor.py, _validate_prompt_len);
- stop tokens: the tokenizer's EOS unless `ignore_eos`, plus the eos ids of the model's generation_config.json
  as `stop_token_ids` (SamplingParams.update_from_generation_config); the stopping token counts in the output;
- with `n > 1` and a seed, child k samples with its own generator seeded `seed + k`
  (vllm/v1/engine/parallel_sampling.py);
- log-probabilities are raw (before temperature); `cumulative_logprob` only when `logprobs` is asked for.
Each sequence is computed alone, so the fake is batch-invariant, as vLLM is with VLLM_BATCH_INVARIANT=1.
Every call is recorded in `CALLS`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from vllm.api import SNAPSHOT, conforming, conforms, resolve, struct

CALLS: list[dict] = []  # one entry per LLM(), generate(), sleep() or wake_up() call

EngineArgs = struct("EngineArgs")
Logprob = struct("Logprob")
CompletionOutput = struct("CompletionOutput")


def _sampling_checks(self) -> None:
    if self.top_k not in (0, -1) or self.top_p != 1.0:
        raise ValueError("the fake vllm samples from the full distribution only")
    if self.n < 1:
        raise ValueError(f"n must be at least 1, got {self.n}.")


SamplingParams = struct("SamplingParams", {"__post_init__": _sampling_checks})


class RequestOutput:
    """vLLM's RequestOutput: the attributes its __init__ sets, no others."""

    def __init__(self, **values: Any):
        unknown = set(values) - set(SNAPSHOT["RequestOutput"])
        if unknown:
            raise TypeError(f"RequestOutput has no {sorted(unknown)}")
        for name in SNAPSHOT["RequestOutput"]:
            setattr(self, name, values.get(name))


ENGINE_FIELDS = {f.name: f for f in __import__("dataclasses").fields(EngineArgs)}
LLM_DEFAULTS = {p["name"]: p.get("value") for p in SNAPSHOT["LLM"]["__init__"] if p["kind"] == "keyword_only"}


def _entries(logprobs: torch.Tensor, token: int, top: int) -> dict[int, Any]:
    """The actual token plus the `top` most likely ones, with vLLM's 1-based ranks."""
    ranks = (logprobs > logprobs[token]).sum().item() + 1
    out = {token: Logprob(float(logprobs[token]), int(ranks))}
    for r, t in enumerate(torch.topk(logprobs, top).indices.tolist() if top else [], start=1):
        out.setdefault(t, Logprob(float(logprobs[t]), r))
    return out


def _engine_args(model: str, kwargs: dict) -> Any:
    """EngineArgs as LLM builds them: LLM's own defaults, then the caller's; values checked against the types."""
    for key, value in kwargs.items():
        if key not in ENGINE_FIELDS:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{key}'")
        if not conforming(value, ENGINE_FIELDS[key].type):
            raise ValueError(f"1 validation error: {key}: {value!r} is not a valid {ENGINE_FIELDS[key].type}")
    if int(kwargs.get("data_parallel_size", 1)) > 1:
        raise ValueError("LLM(data_parallel_size>1) is not supported for single-process usage")
    own = {k: v for k, v in LLM_DEFAULTS.items() if k in ENGINE_FIELDS}
    return EngineArgs(**{**own, "model": model, **kwargs})


class LLM:
    def __init__(self, model: str, **kwargs: Any):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.engine_args = _engine_args(model, kwargs)
        CALLS.append({"call": "LLM", "model": model, **kwargs})
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        length = self.engine_args.max_model_len or AutoConfig.from_pretrained(model).max_position_embeddings
        self.model_config = SimpleNamespace(max_model_len=int(length), model=model)
        self.llm_engine = SimpleNamespace(model_config=self.model_config)
        self.generation_eos = _generation_config_eos(model)
        self.asleep = False

    @torch.no_grad()
    def _logprobs(self, ids: list[int]) -> torch.Tensor:
        logits = self.model(torch.tensor([ids])).logits[0].float()
        return torch.log_softmax(logits, dim=-1)

    @torch.no_grad()
    def _step(self, ids: list[int], cache: Any) -> tuple[torch.Tensor, Any]:
        """Raw (before temperature) log-probabilities of the next token, continuing from a KV cache."""
        out = self.model(torch.tensor([ids]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        return torch.log_softmax(out.logits[0, -1].float(), dim=-1), out.past_key_values

    def _stop_tokens(self, p: Any) -> tuple[int | None, set[int]]:
        """(EOS id, stop token ids) after SamplingParams.update_from_generation_config."""
        eos = None if p.ignore_eos else self.tokenizer.eos_token_id
        stops = set(p.stop_token_ids or [])
        extra = self.generation_eos - {self.tokenizer.eos_token_id}
        if extra and not p.ignore_eos:
            stops |= extra
        return eos, stops

    @torch.no_grad()
    def _sample(self, prefill: tuple, ids: list[int], p: Any, generator: torch.Generator, index: int) -> Any:
        eos, stop_ids = self._stop_tokens(p)
        limit = p.max_tokens if p.max_tokens is not None else self.model_config.max_model_len - len(ids)
        raw, cache = prefill[0], copy.deepcopy(prefill[1])
        tokens: list[int] = []
        token_logprobs: list[dict[int, Any]] = []
        text, reason = "", "length"
        while len(tokens) < limit and len(ids) + len(tokens) < self.model_config.max_model_len:
            if tokens:
                raw, cache = self._step(tokens[-1:], cache)
            if p.temperature > 0:
                token = int(torch.multinomial(torch.softmax(raw / p.temperature, -1), 1, generator=generator))
            else:
                token = int(raw.argmax())
            tokens.append(token)
            token_logprobs.append(_entries(raw, token, p.logprobs or 0))
            if token == eos or token in stop_ids:
                text, reason = self.tokenizer.decode(tokens[:-1], skip_special_tokens=True), "stop"
                break
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            hits = [text.find(s) for s in _stops(p.stop) if s in text]
            if hits:
                text, reason = text[: min(hits)], "stop"
                break
        total = sum(entry[t].logprob for t, entry in zip(tokens, token_logprobs))
        return CompletionOutput(index, text, tokens, total if p.logprobs is not None else None,
                                token_logprobs if p.logprobs is not None else None, finish_reason=reason)

    @conforms
    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        if not self.engine_args.enable_sleep_mode:
            raise ValueError("Sleep mode is not enabled: LLM(enable_sleep_mode=True)")
        CALLS.append({"call": "sleep", "level": level})
        self.asleep = True

    @conforms
    def wake_up(self, tags: list[str] | None = None) -> bool:
        CALLS.append({"call": "wake_up"})
        self.asleep = False
        return True

    @conforms
    def generate(self, prompts, sampling_params=None, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None, mm_processor_kwargs=None) -> list[RequestOutput]:
        if self.asleep:
            raise RuntimeError("the engine is asleep: wake_up() first")
        prompts = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        params = sampling_params or SamplingParams()
        params = list(params) if isinstance(params, list) else [params] * len(prompts)
        self._check_lora(lora_request)
        CALLS.append({"call": "generate", "prompts": prompts, "params": params, "lora_request": lora_request,
                      "outputs": (outputs := [])})
        for prompt, p in zip(prompts, params, strict=True):
            text = prompt if isinstance(prompt, str) else prompt.get("prompt")
            ids = list(prompt["prompt_token_ids"]) if isinstance(prompt, dict) and "prompt_token_ids" in prompt \
                else self.tokenizer.encode(text)
            if not ids or len(ids) >= self.model_config.max_model_len:
                raise ValueError(f"The decoder prompt (length {len(ids)}) plus the number of requested output tokens "
                                 f"(at least 1) is longer than the maximum model length of "
                                 f"{self.model_config.max_model_len}.")
            prompt_logprobs = None
            if p.prompt_logprobs is not None:
                full = self._logprobs(ids)
                prompt_logprobs = [None] + [_entries(full[i - 1], ids[i], p.prompt_logprobs) for i in range(1, len(ids))]
            prefill = self._step(ids, None)  # the prompt once, shared by its n samples
            completions = [self._sample(prefill, ids, p, _generator(p.seed, k), k) for k in range(p.n)]
            outputs.append(RequestOutput(request_id=str(len(CALLS)), prompt=text, prompt_token_ids=ids,
                                         prompt_logprobs=prompt_logprobs, outputs=completions, finished=True,
                                         lora_request=lora_request))
        return outputs

    def _check_lora(self, lora_request: Any) -> None:
        if lora_request is None:
            return
        if not self.engine_args.enable_lora:
            raise ValueError(f"LoRA is not enabled: cannot serve {lora_request.lora_name}")
        config = Path(lora_request.lora_path) / "adapter_config.json"
        rank = json.loads(config.read_text()).get("r") if config.exists() else None
        if rank is not None and rank > self.engine_args.max_lora_rank:
            raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {self.engine_args.max_lora_rank}.")


def _stops(stop: Any) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def _generator(seed: int | None, child: int) -> torch.Generator:
    """Child k of a seeded request samples with seed + k; an unseeded one from fresh entropy."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed + child)
    return generator


def _generation_config_eos(model: str) -> set[int]:
    path = Path(model) / "generation_config.json"
    eos = json.loads(path.read_text()).get("eos_token_id") if path.exists() else None
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


__all__ = ["CALLS", "LLM", "EngineArgs", "SamplingParams", "RequestOutput", "CompletionOutput", "Logprob", "resolve"]

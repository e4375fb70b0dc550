"""A fake `vllm` for tests: the API shapes si-bench uses, computed for real with transformers on CPU.

`LLM.generate` samples with the given seed (temperature, n, stop strings, max_tokens, EOS), reports the
raw (before temperature) log-probability of each sampled token and their sum (`cumulative_logprob`),
and computes `prompt_logprobs` with one forward pass. Every call is recorded in `CALLS`, `sleep` and
`wake_up` too. `EngineArgs` has the fields (a subset of vLLM's) that `LLM` accepts: like vLLM's, `LLM`
refuses anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

CALLS: list[dict] = []  # one entry per LLM() or generate() call


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True

    def __post_init__(self):
        if self.top_k not in (0, -1) or self.top_p != 1.0:
            raise ValueError("the fake vllm samples from the full distribution only")


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput] = field(default_factory=list)


def _entries(logprobs: torch.Tensor, token: int, top: int) -> dict[int, Logprob]:
    """The actual token plus the `top` most likely ones, with vLLM's 1-based ranks."""
    ranks = (logprobs > logprobs[token]).sum().item() + 1
    out = {token: Logprob(float(logprobs[token]), int(ranks))}
    for r, t in enumerate(torch.topk(logprobs, top).indices.tolist() if top else [], start=1):
        out.setdefault(t, Logprob(float(logprobs[t]), r))
    return out


@dataclass
class EngineArgs:
    model: str = "facebook/opt-125m"
    tokenizer: str | None = None
    dtype: str = "auto"
    seed: int = 0
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool | None = None
    enforce_eager: bool = False
    max_num_seqs: int | None = None
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    enable_sleep_mode: bool = False
    quantization: str | None = None


class LLM:
    def __init__(self, model: str, **kwargs: Any):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        EngineArgs(model=model, **kwargs)  # a TypeError for an argument vLLM does not take
        CALLS.append({"call": "LLM", "model": model, **kwargs})
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()

    @torch.no_grad()
    def _logprobs(self, ids: list[int]) -> torch.Tensor:
        logits = self.model(torch.tensor([ids])).logits[0].float()
        return torch.log_softmax(logits, dim=-1)

    @torch.no_grad()
    def _sample(self, ids: list[int], p: SamplingParams, generator: torch.Generator, index: int) -> CompletionOutput:
        tokens: list[int] = []
        token_logprobs: list[dict[int, Logprob]] = []
        text, reason = "", "length"
        while len(tokens) < (p.max_tokens or 16):
            raw = self._logprobs(ids + tokens)[-1]  # raw log-probabilities: before temperature
            if p.temperature > 0:
                token = int(torch.multinomial(torch.softmax(raw / p.temperature, -1), 1, generator=generator))
            else:
                token = int(raw.argmax())
            tokens.append(token)
            token_logprobs.append(_entries(raw, token, p.logprobs or 0))
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if token == self.tokenizer.eos_token_id:
                reason = "stop"
                break
            hits = [text.find(s) for s in p.stop or [] if s in text]
            if hits:
                text, reason = text[: min(hits)], "stop"
                break
        total = sum(entry[t].logprob for t, entry in zip(tokens, token_logprobs))
        return CompletionOutput(index, text, tokens, total if p.logprobs is not None else None,
                                token_logprobs if p.logprobs is not None else None, reason)

    def sleep(self, level: int = 1) -> None:
        CALLS.append({"call": "sleep", "level": level})

    def wake_up(self) -> None:
        CALLS.append({"call": "wake_up"})

    def generate(self, prompts, sampling_params=None, lora_request=None, use_tqdm: bool = False) -> list[RequestOutput]:
        prompts = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        params = sampling_params or SamplingParams()
        params = list(params) if isinstance(params, list) else [params] * len(prompts)
        CALLS.append({"call": "generate", "prompts": prompts, "params": params, "lora_request": lora_request,
                      "outputs": (outputs := [])})
        for prompt, p in zip(prompts, params):
            text = prompt if isinstance(prompt, str) else prompt.get("prompt")
            ids = list(prompt["prompt_token_ids"]) if isinstance(prompt, dict) and "prompt_token_ids" in prompt \
                else self.tokenizer.encode(text)
            prompt_logprobs = None
            if p.prompt_logprobs is not None:
                full = self._logprobs(ids)
                prompt_logprobs = [None] + [_entries(full[i - 1], ids[i], p.prompt_logprobs) for i in range(1, len(ids))]
            generator = torch.Generator().manual_seed(p.seed if p.seed is not None else 0)
            completions = [self._sample(ids, p, generator, k) for k in range(p.n)]
            outputs.append(RequestOutput(text, ids, prompt_logprobs, completions))
        return outputs

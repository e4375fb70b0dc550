"""The Hugging Face backend ("si-hf"): lm-eval's HFLM sampling with per-sample seeds and returning
`SampledText` (see si_bench.sampling)."""

from __future__ import annotations

import ast
import inspect
import math
from collections import defaultdict
from typing import Any, Callable

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences
from lm_eval.models.utils_hf import stop_sequences_criteria
from transformers import StoppingCriteria

from si_bench import progress
from si_bench.backends import RESERVED_ARGS, check_names
from si_bench.errors import SIBenchError
from si_bench.sampling import SampledText, seeds_for

MASK32 = 0xFFFFFFFF
STREAM_DEVICES = ("cpu",)  # where the noise comes from per-row torch generators, as it always has


ARG_INT_MAX = 2**31 - 1  # a count, length or token id: anything larger means no model


def _check_kind(key: str, value: Any, annotation: Any) -> None:
    """A backend argument of a kind HFLM's parameter does not take (text for a length, a number for a flag), or
    a number no model could mean: refused before any work, not a traceback mid-sampling. HFLM's annotations are
    read as text: resolving them imports half of transformers (seconds on every command)."""
    if not isinstance(annotation, str):
        return
    kinds = [part.strip() for part in annotation.split("|")]
    choices = [ast.literal_eval(f"[{k[len('Literal['):-1]}]") for k in kinds if k.startswith("Literal[")]
    if choices:
        if value not in choices[0]:
            raise SIBenchError(f"--backend-args {key}={value}: HFLM's {key} is one of {', '.join(choices[0])}")
        return
    kind = type(value).__name__  # bool, int, float or str, as parse_backend_args makes them
    taken = kind in kinds or (kind == "str" and "os.PathLike" in kinds) or (kind == "int" and "float" in kinds)
    if not taken or (isinstance(value, float) and not math.isfinite(value)):
        raise SIBenchError(f"--backend-args {key}={value}: HFLM's {key} takes {annotation}")
    if kind == "int" and not 0 <= value <= ARG_INT_MAX:
        raise SIBenchError(f"--backend-args {key}={value}: must lie in [0, {ARG_INT_MAX}]")


class StreamNoise:
    """Each row's uniforms from its own seeded CPU generator, `vocab` draws per step: the CPU's noise, unchanged
    since the first stored sample (resumed evaluations rely on drawing exactly the same numbers)."""

    def __init__(self, seeds: list[int]):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def gumbel(self, vocab: int) -> torch.Tensor:
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators])
        return -torch.log(-torch.log(uniform.clamp_(1e-20, 1.0)))


def _mix(x):
    """prospector32 from Wellons' hash prospector: a bijective 32-bit hash (tensors or ints below 2**32). Its
    multipliers are below 2**31, so every int64 product stays below 2**63: no overflow on any device."""
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & MASK32
    x = x ^ (x >> 12)
    x = (x * 0x297A2D39) & MASK32
    return x ^ (x >> 15)


class CounterNoise:
    """Uniforms from a counter-based hash of (row seed, step, token index), computed with integer tensor ops
    where the logits are: no generator state, no host loop, no transfer per token.

    A row's draws depend only on its seed, so they do not change with the rest of its batch. Per step the
    work is one hash of (row-and-step key XOR hashed token index) per logit, about twenty elementwise ops;
    each step's values are distinct (every stage is a bijection), and their 32 bits reach further into the
    Gumbel tail than float32 uniforms.
    """

    def __init__(self, seeds: list[int], device: torch.device | str):
        seed = torch.tensor(seeds, dtype=torch.int64, device=device)  # 56-bit seeds (si_bench.sampling)
        self.row = _mix(_mix(seed & MASK32) ^ (seed >> 32))[:, None]
        self.tokens: torch.Tensor | None = None  # hashed token indices, made once
        self.step = 0

    def uniform(self, vocab: int) -> torch.Tensor:
        if self.tokens is None or self.tokens.shape[-1] != vocab:
            self.tokens = _mix(_mix(torch.arange(vocab, dtype=torch.int64, device=self.row.device)))[None, :]
        key = _mix(self.row ^ _mix(self.step + 1))
        self.step += 1
        bits = _mix(key ^ self.tokens)
        return (bits.double() + 0.5) * 2.0**-32  # in (0, 1), never 0 or 1

    def gumbel(self, vocab: int) -> torch.Tensor:
        return (-torch.log(-torch.log(self.uniform(vocab)))).float()


def noise_for(seeds: list[int], device: torch.device | str) -> StreamNoise | CounterNoise:
    device = torch.device(device)
    return StreamNoise(seeds) if device.type in STREAM_DEVICES else CounterNoise(seeds, device)


class GumbelSampler:
    """A logits processor that samples by argmax over logits/T plus per-row seeded Gumbel noise.

    Sampling so is exact (the Gumbel-max trick) and makes each row's draws depend only on its own
    seed, not on which other prompts share its batch. The noise is drawn on the model's device (see
    `noise_for`). It also records each chosen token's log-probability under the unmodified model
    distribution.
    """

    def __init__(self, seeds: list[int], temperature: float, device: torch.device | str = "cpu"):
        self.noise = noise_for(seeds, device)
        self.temperature = temperature
        self.token_logprobs: list[torch.Tensor] = []
        self._previous: torch.Tensor | None = None

    def record(self, chosen: torch.Tensor) -> None:
        if self._previous is not None:
            self.token_logprobs.append(self._previous.gather(1, chosen[:, None])[:, 0])
            self._previous = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._previous is not None:
            self.record(input_ids[:, -1])
        logits = scores.float()
        self._previous = torch.log_softmax(logits, dim=-1)
        if self.temperature <= 0:
            return logits
        return logits / self.temperature + self.noise.gumbel(logits.shape[-1])


def cut_response(text_of: Callable[[list[int]], str], tokens: list[int], stops: list[str], eos_id: int | None):
    """Return (text, n_kept_tokens): the response before the first stop, and the tokens that produced it.

    The token that completes the stop sequence (or EOS) is kept in the count: stopping is part of
    the response's probability.
    """
    if eos_id is not None and eos_id in tokens:
        tokens = tokens[: tokens.index(eos_id) + 1]
    full = text_of(tokens)
    cuts = [(full.find(s), s) for s in stops if s and full.find(s) >= 0]
    if not cuts:
        return full, len(tokens)
    position, stop = min(cuts)
    needed = position + len(stop)
    low, high = 1, len(tokens)
    while low < high:  # the shortest token prefix whose text reaches the end of the stop sequence
        mid = (low + high) // 2
        if len(text_of(tokens[:mid])) >= needed:
            high = mid
        else:
            low = mid + 1
    return full[:position], low


class RowsFinished(StoppingCriteria):
    """Stops nothing: reports the rows of a batch as each one finishes (its stop sequence or EOS), so progress
    moves per sample rather than once per batch. Runs after lm-eval's stop criteria, whose trackers it reads."""

    def __init__(self, criteria: list, eos_id: int | None, report: Callable[[int], None]):
        self.criteria, self.eos_id, self.report = criteria, eos_id, report
        self.finished: torch.Tensor | None = None
        self.reported = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.finished is None:
            self.finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.eos_id is not None:
            self.finished |= input_ids[:, -1] == self.eos_id
        for criterion in self.criteria:
            self.finished |= torch.tensor(getattr(criterion, "done_tracker", False), device=input_ids.device)
        done = int(self.finished.sum())
        if done > self.reported:
            self.report(done - self.reported)
            self.reported = done
        return torch.zeros_like(self.finished)


@register_model("si-hf")
class LogprobHFLM(HFLM):
    """lm-eval's HFLM, sampling with per-sample seeds and returning `SampledText`."""

    def __init__(self, *args: Any, seed_base: str = "si-bench", max_new_tokens: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.seed_base = seed_base
        self.max_new_tokens = max_new_tokens  # a cap below the task's max_gen_toks
        self.on_batch: Callable[[int], None] | None = None

    @classmethod
    def create(cls, path: str, adapter: str | None, *, device: str = "cpu", dtype: str = "float32",
               **settings: Any) -> "LogprobHFLM":
        return cls(pretrained=path, peft=adapter, device=device, dtype=dtype, **settings)

    @classmethod
    def check_backend_args(cls, args: dict[str, Any]) -> None:
        """lm-eval's `hf` model arguments (HFLM's parameters), plus `attn_implementation`, which HFLM hands to
        `from_pretrained`."""
        accepted = {*inspect.signature(HFLM.__init__).parameters, "attn_implementation"} - {"self", "kwargs"}
        check_names("hf", args, accepted, RESERVED_ARGS)
        parameters = inspect.signature(HFLM.__init__).parameters
        for key, value in args.items():
            if key in parameters:
                _check_kind(key, value, parameters[key].annotation)

    def loglikelihood(self, requests: list, disable_tqdm: bool = False):
        return super().loglikelihood(requests, disable_tqdm=True)  # progress is the caller's (rich) bar

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        if self.on_batch is None and (reporter := progress.current()) is not None:  # under `si-bench lm-eval`
            task = reporter.add_task("lm-eval · sampling", total=len(requests))
            self.on_batch = lambda n: reporter.advance(task, n)
            try:
                return self.generate_until(requests, disable_tqdm)
            finally:
                self.on_batch = None
        seeds = seeds_for(requests, self.seed_base)
        order = sorted(range(len(requests)), key=lambda i: -len(self.tok_encode(requests[i].args[0])))
        results: list[str | None] = [None] * len(requests)
        batch_size = int(self.batch_size) if str(self.batch_size).isdigit() else 8
        groups: dict[str, list[int]] = defaultdict(list)
        for i in order:
            groups[repr(sorted(requests[i].args[1].items()))].append(i)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                batch = indices[start : start + batch_size]
                reported = [0]
                texts = self._sample_batch(
                    [requests[i].args[0] for i in batch], dict(requests[batch[0]].args[1]), [seeds[i] for i in batch],
                    report=self._reporter(reported),
                )
                for i, text in zip(batch, texts, strict=True):
                    results[i] = text
                if self.on_batch is not None:
                    self.on_batch(len(batch) - reported[0])  # the rows that ran to the token limit
        return results  # type: ignore[return-value]

    def _reporter(self, reported: list[int]) -> Callable[[int], None] | None:
        if self.on_batch is None:
            return None
        on_batch = self.on_batch

        def report(n: int) -> None:
            reported[0] += n
            on_batch(n)

        return report

    def _shared_prefill(self, context: torch.Tensor, mask: torch.Tensor, row_of: torch.Tensor):
        """Encode each distinct prompt once and share its KV cache among its N samples.

        With N samples per prompt, the prompt's forward pass (most of the cost on short answers) is done
        once instead of N times. The last prompt token is left for `generate`, which continues from the cache.
        """
        from transformers import DynamicCache

        cache = DynamicCache()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        self.model(input_ids=context[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                   past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache.reorder_cache(row_of)  # type: ignore[arg-type]  # a torch.long tensor; the stub names the legacy LongTensor
        return cache

    def _sample_batch(self, contexts: list[str], gen_kwargs: dict, seeds: list[int],
                      report: Callable[[int], None] | None = None) -> list[SampledText]:
        from transformers import GenerationConfig, LogitsProcessorList

        temperature = float(gen_kwargs.pop("temperature", 0.0))
        do_sample = gen_kwargs.pop("do_sample", temperature > 0)
        if not do_sample:
            temperature = 0.0
        if gen_kwargs.pop("top_k", 0) not in (0, None, -1) or float(gen_kwargs.pop("top_p", 1.0)) != 1.0:
            raise SIBenchError("si-bench samples from the full distribution: use top_k 0 and top_p 1")
        max_new = int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks))
        if self.max_new_tokens:
            max_new = min(max_new, self.max_new_tokens)
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        stops = handle_stop_sequences(gen_kwargs.pop("until", None), eos=eos)
        unique = list(dict.fromkeys(contexts))
        row_of = torch.tensor([unique.index(c) for c in contexts], device=self.device)
        context, mask = self.tok_batch_encode(unique, left_truncate_len=self.max_length - max_new)
        context, mask = context.to(self.device), mask.to(self.device)
        sampler = GumbelSampler(seeds, temperature, self.device)
        # The stop-token rule of both backends: the tokenizer's EOS alone, never the extra eos ids a checkpoint's
        # generation_config.json may list (set here, transformers does not fill them in; vllm_backend tells vLLM).
        config = GenerationConfig(
            do_sample=False, max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eot_token_id,
        )
        with torch.no_grad():
            cache = self._shared_prefill(context, mask, row_of) if len(unique) < len(contexts) else None
            context, mask = context[row_of], mask[row_of]
            stopping = stop_sequences_criteria(self.tokenizer, stops, context.shape[1], context.shape[0])
            if report is not None:
                stopping.append(RowsFinished(list(stopping), self.eot_token_id, report))
            output = self.model.generate(
                input_ids=context,
                attention_mask=mask,
                past_key_values=cache,
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=stopping,
            )
        generated = output[:, context.shape[1] :]
        sampler.record(generated[:, -1])
        token_logprobs = torch.stack(sampler.token_logprobs, dim=1).cpu()  # (batch, generated steps)
        texts = []
        for row, tokens in enumerate(generated.tolist()):
            text, kept = cut_response(self.tok_decode, tokens, [s for s in stops if s != eos], self.eot_token_id)
            texts.append(SampledText(text, float(token_logprobs[row, :kept].sum()), kept))
        return texts

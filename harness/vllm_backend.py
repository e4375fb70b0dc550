"""The vLLM backend ("si-vllm"): the same contract as `LogprobHFLM`, on a GPU.

Imported only when `backend == "vllm"` (it imports vllm, which exists only in the GPU environment of
requirements-vllm.txt). Samples carry their log-probabilities from vLLM itself (`cumulative_logprob`),
so no second forward pass is needed.

Every name, keyword and type used here is checked against vLLM 0.33 itself: tests/fake_vllm is built from a
snapshot of the real wheel's API (tests/fixtures/vllm_api.py writes tests/fixtures/vllm_api.json).

Sampling semantics, matched to the HF backend:
- lm-eval sends a `repeats: K` request as the same object K times. The K occurrences become ONE vLLM
  request with `n=K` and one seed per prompt, `sample_seed(seed_base, prompt_id, 0)`; vLLM samples child k
  with seed + k (vllm/v1/engine/parallel_sampling.py). The k-th occurrence gets the k-th completion. The
  draws are not the same numbers as the HF backend's (another RNG), only the same distribution.
- Resume: an evaluation stores whole chunks of prompts, all N samples of a prompt together, and a resumed
  one sends each prompt it still lacks exactly the request the uninterrupted one would have sent (same prompt
  tokens, seed and n). vLLM's draws for a request depend only on its seed and the logits; the logits are
  the same bits whatever else shares the batch only when vLLM runs batch-invariant (VLLM_BATCH_INVARIANT=1 in
  the environment). So: with VLLM_BATCH_INVARIANT=1 a resumed evaluation stores exactly the samples an
  uninterrupted one would have; without it, the redrawn prompts' samples come from the same distribution and
  seeds, but a near-tie between tokens may break the other way (other batch composition, prefix-cache hits),
  so a few of them can differ. Stored samples are never redrawn, and no prompt mixes samples of two runs.
- The full distribution: temperature from the task, top_k disabled, top_p 1. vLLM spells "top_k
  disabled" as 0 (and, in older versions, only as -1: "top_k must be -1 (disable), or at least 1"); 0.33
  accepts both, see TOP_K_DISABLED. Explicit SamplingParams leave no room for generation_config.json's
  sampling defaults (vLLM applies those only to calls without SamplingParams), so nothing else truncates the
  distribution.
- Log-probabilities: vLLM's default `logprobs_mode` is "raw_logprobs", the log-softmax of the model's
  logits BEFORE temperature and other processing. That is what we want: the model's own NLL of the text,
  as `LogprobHFLM` records it. ("processed_logprobs" would give the sampling distribution instead; at
  temperature 1 with no truncation the two coincide.) `logprobs=0` asks for the sampled token's
  log-probability only, which makes vLLM fill `cumulative_logprob`.
- Stopping, one rule on both backends (hf_backend's GenerationConfig says the same): a sample ends at the
  tokenizer's EOS token or at one of the task's `until` strings. vLLM by itself would also stop at every eos
  id of the model's generation_config.json (SamplingParams.update_from_generation_config, even with
  generation_config="vllm"); the HF backend never has, so here `ignore_eos=True` drops vLLM's EOS set and
  `stop_token_ids` puts back the tokenizer's EOS alone. As on the HF backend, the token that completes a
  stop string or the EOS token counts in the sample's tokens and log-probability; the returned text ends
  before the stop string.
- Prompt length: vLLM refuses a prompt of `max_model_len` tokens or more (it must leave room for one output
  token), so sampling prompts are cut to `max_length - max_new_tokens` and scoring inputs to `max_length - 1`
  tokens (their left end dropped, as lm-eval truncates).

The engine: a process holds one (`ENGINE`; one engine takes most of the GPU's memory), and every
evaluation with the same engine arguments reuses it. A self-improvement run loads it with LoRA enabled
from its first measurement (`adapter_serving`), so each round's adapter is served on the base model
loaded once, as its own `LoRARequest`; while the run fine-tunes, the engine sleeps (vLLM's sleep mode,
level 1: weights to CPU memory, KV cache dropped, `pause_engine`) and wakes for the next measurement.
Without sleep mode (full fine-tuning, whose base changes every round) the engine is released instead.
`--backend-args` are checked against `vllm.EngineArgs` (names, and values against the fields' real types:
Literal, int, float, bool, optional ...) and handed to `vllm.LLM`; any engine argument not given keeps vLLM's
own default (its GPU memory share, 0.92 in 0.33, included).
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import json
import math
import types
import typing
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, cast

import vllm
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import _add_special_kwargs, handle_stop_sequences, has_bos_prefix
from vllm.lora.request import LoRARequest

from si_bench.backends import RESERVED_ARGS, check_names
from si_bench.errors import SIBenchError
from si_bench.sampling import SampledText, sample_seed

TOP_K_DISABLED = 0  # vLLM >= 0.8: 0 or -1 both mean "all tokens"; before that only -1 was accepted
DEFAULT_MAX_GEN_TOKS = 256
OWN_ARGS = {"max_gen_toks", "max_length", "add_bos_token"}  # LogprobVLLM's arguments beside the engine's
REFUSED_ARGS = {
    **RESERVED_ARGS,
    "tokenizer": "si-bench tokenizes with the model's own tokenizer",
    "data_parallel_size": "one engine per process; spread prompts over GPUs with one process per GPU",
}


def engine_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(vllm.EngineArgs)}


def lora_ranks() -> tuple[int, ...]:
    """The values vLLM's `max_lora_rank` takes: its own Literal (vllm.config.lora.MaxLoRARanks)."""
    return tuple(sorted(typing.get_args(engine_fields()["max_lora_rank"].type)))


def lora_rank_bound(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of rank `rank`."""
    ranks = lora_ranks()
    for bound in ranks:
        if rank <= bound:
            return bound
    raise SIBenchError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({ranks[-1]})")


def adapter_serving(lora_rank: int | None) -> dict[str, Any]:
    """Engine arguments of a run's evaluations: LoRA enabled from the first measurement (so that each round's
    adapter is served on the one base model) and sleep mode (so that the engine can make room for fine-tuning)."""
    if lora_rank is None:
        return {}
    return {"enable_lora": True, "max_lora_rank": lora_rank_bound(lora_rank), "enable_sleep_mode": True}


def _files_signature(folder: str) -> tuple:
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir()))


class EngineHolder:
    """The process's one vLLM engine, reused by every evaluation with the same engine arguments."""

    def __init__(self) -> None:
        self.settings: dict[str, Any] | None = None
        self.llm: Any = None
        self.asleep = False
        self.adapter_ids: dict[tuple, int] = {}

    def get(self, settings: dict[str, Any]) -> Any:
        if self.llm is not None and self.settings == settings:
            if self.asleep:
                self.llm.wake_up()
                self.asleep = False
            return self.llm
        self.release()
        self.llm, self.settings = vllm.LLM(**settings), dict(settings)
        return self.llm

    def release(self) -> None:
        if self.llm is None:
            return
        self.llm, self.settings, self.asleep = None, None, False
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def pause(self) -> None:
        """Give back the GPU's memory: sleep when the engine can (waking is fast), else release it."""
        if self.llm is None or self.asleep:
            return
        if self.settings and self.settings.get("enable_sleep_mode"):
            self.llm.sleep(level=1)
            self.asleep = True
        else:
            self.release()

    def adapter(self, path: str) -> LoRARequest:
        """One LoRARequest id per adapter (vLLM caches adapters by id): an adapter rewritten in place is new."""
        key = (str(path), _files_signature(path))
        number = self.adapter_ids.setdefault(key, len(self.adapter_ids) + 1)
        return LoRARequest(f"si-bench-adapter-{number}", number, str(path))


ENGINE = EngineHolder()


def pause_engine() -> None:
    ENGINE.pause()


def accepts(kind: Any, value: Any) -> bool:
    """Whether a `--backend-args` value (a bool, number or text) fits an engine argument's type as vLLM's
    configs validate it: a member of a Literal, an int (not a bool) for int, a number for float, ...; a list,
    dict or class cannot be written as key=value. An unresolved (string) annotation is left to vLLM."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(accepts(a, value) for a in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin is typing.Annotated:
        return accepts(args[0], value)
    if kind is typing.Any or isinstance(kind, str):
        return True
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return value in {m.value for m in kind} or value in kind.__members__
    return origin is None and isinstance(kind, type) and isinstance(value, kind)


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(kind)))
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


@register_model("si-vllm")
class LogprobVLLM(TemplateLM):
    """lm-eval model over `vllm.LLM`, returning `SampledText` from `generate_until`."""

    def __init__(
        self,
        pretrained: str,
        lora: str | None = None,
        batch_size: int | str = 32,
        max_new_tokens: int | None = None,
        seed_base: str = "si-bench",
        dtype: str = "auto",
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        max_length: int | None = None,
        add_bos_token: bool | None = None,
        **engine_args: Any,
    ):
        super().__init__()
        from transformers import AutoTokenizer

        self.pretrained = pretrained
        # The model's own HF tokenizer: tokenization identical to the HF backend's (and to vLLM's, which
        # loads the same files), and it lets the tests run against a fake vllm.
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self.add_bos_token = add_bos_token
        self.seed_base = seed_base
        self.max_new_tokens = max_new_tokens  # a cap below the task's max_gen_toks
        self.max_gen_toks = int(max_gen_toks)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 32  # prompts per generate() call
        self.on_batch: Callable[[int], None] | None = None
        # Only what si-bench sets or the user gave: every other engine argument keeps vLLM's default.
        settings: dict[str, Any] = dict(model=pretrained, dtype=dtype, **engine_args)
        if max_length:
            settings["max_model_len"] = int(max_length)
        self.lora_request = None
        if lora:
            settings["enable_lora"] = True
            # The smallest rank vLLM takes that holds the adapter (as adapter_serving), or the user's if larger.
            bound = lora_rank_bound(_adapter_rank(lora) or _default_lora_rank())
            settings["max_lora_rank"] = max(int(settings.get("max_lora_rank", bound)), bound)
            self.lora_request = ENGINE.adapter(lora)
        self.model = ENGINE.get(settings)
        self._max_length = int(settings["max_model_len"]) if settings.get("max_model_len") else None

    @classmethod
    def create(cls, path: str, adapter: str | None, *, device: str | None = None, **settings: Any) -> "LogprobVLLM":
        # vLLM places the engine on its own platform's devices; `device` only chose the default dtype.
        return cls(pretrained=path, lora=adapter, **settings)

    @classmethod
    def check_backend_args(cls, args: dict[str, Any]) -> None:
        """vLLM's engine arguments (the fields of `vllm.EngineArgs`) and this class's own, values of the right kind."""
        fields = engine_fields()
        check_names("vllm", args, {*fields, *OWN_ARGS}, REFUSED_ARGS)
        for key, value in args.items():
            if key in fields and not accepts(fields[key].type, value):
                raise SIBenchError(f"--backend-args {key}={value}: vLLM's {key} takes {_describe(fields[key].type)}")

    # ---- tokenizer ----
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        if not self._max_length:
            self._max_length = int(self.model.model_config.max_model_len)  # what vLLM derived from the model
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        # As HFLM.tok_encode: the tokenizer's own default unless told, and no second BOS.
        special = _add_special_kwargs(add_special_tokens, self.add_bos_token)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        encoding = self.tokenizer.encode(string, **special)
        return encoding[-left_truncate_len:] if left_truncate_len else encoding

    def tok_decode(self, tokens: list[int] | int, skip_special_tokens: bool = True) -> str:
        # one sequence decodes to one string
        return cast(str, self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens))

    # ---- chat template (as HFLM) ----
    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        import jinja2

        kwargs: dict[str, Any] = dict(tokenize=False, add_generation_prompt=add_generation_prompt,
                                      continue_final_message=not add_generation_prompt)
        # tokenize=False: the template's text
        try:
            return cast(str, self.tokenizer.apply_chat_template(chat_history, **kwargs))
        except jinja2.exceptions.TemplateError:  # templates without a system role
            return cast(str, self.tokenizer.apply_chat_template([m for m in chat_history if m["role"] != "system"],
                                                                **kwargs))

    # ---- sampling ----
    def _sampling_params(self, gen_kwargs: dict, n: int, seed: int) -> tuple[Any, int]:
        gen_kwargs = dict(gen_kwargs)
        temperature = float(gen_kwargs.pop("temperature", 0.0))
        if not gen_kwargs.pop("do_sample", temperature > 0):
            temperature = 0.0
        if gen_kwargs.pop("top_k", 0) not in (0, None, -1) or float(gen_kwargs.pop("top_p", 1.0)) != 1.0:
            raise SIBenchError("si-bench samples from the full distribution: use top_k 0 and top_p 1")
        max_new = int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks))
        if self.max_new_tokens:
            max_new = min(max_new, int(self.max_new_tokens))
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        stops = [s for s in handle_stop_sequences(gen_kwargs.pop("until", None), eos=eos) if s and s != eos]
        params = vllm.SamplingParams(
            n=n, temperature=temperature, top_k=TOP_K_DISABLED, top_p=1.0, max_tokens=max_new, stop=stops,
            seed=seed, logprobs=0, **self._stop_tokens(),
        )
        return params, max_new

    def _stop_tokens(self) -> dict[str, Any]:
        """The tokenizer's EOS alone (the HF backend's rule), not vLLM's EOS set from generation_config.json."""
        if self.eot_token_id is None:
            return {}
        return {"ignore_eos": True, "stop_token_ids": [self.eot_token_id]}

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        # One vLLM request per distinct request object, asking for as many samples as it occurs.
        occurrences: dict[int, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            occurrences[id(req)].append(i)
        unique = [requests[positions[0]] for positions in occurrences.values()]
        results: list[SampledText | None] = [None] * len(requests)
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start : start + self.batch_size]
            prompts, params = [], []
            for req in batch:
                context, gen_kwargs = req.args[0], req.args[1]
                prompt_id = str(req.doc.get("prompt_id", req.doc_id))
                seed = sample_seed(self.seed_base, prompt_id, 0)
                p, max_new = self._sampling_params(gen_kwargs, len(occurrences[id(req)]), seed)
                tokens = self.tok_encode(context, left_truncate_len=max(self.max_length - max_new, 1))
                prompts.append({"prompt_token_ids": tokens})
                params.append(p)
            outputs = self.model.generate(prompts, params, lora_request=self.lora_request, use_tqdm=False)
            done = 0
            for req, out in zip(batch, outputs, strict=True):
                # not strict: fewer completions than asked for are named below, after the loop
                for position, completion in zip(occurrences[id(req)], out.outputs, strict=False):
                    results[position] = SampledText(
                        completion.text, float(completion.cumulative_logprob), len(completion.token_ids)
                    )
                    done += 1
            if self.on_batch is not None:
                self.on_batch(done)
        if any(r is None for r in results):
            raise RuntimeError("vLLM returned fewer completions than requested")
        return results  # type: ignore[return-value]

    # ---- scoring ----
    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        params = vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1, detokenize=False)
        results: list[tuple[float, bool]] = []
        for start in range(0, len(requests), max(self.batch_size, 1) * 8):
            batch = requests[start : start + max(self.batch_size, 1) * 8]
            prompts, spans = [], []
            for _, context_enc, continuation_enc in batch:
                whole = (context_enc + continuation_enc)[-(self.max_length - 1) :]  # vLLM refuses max_length
                prompts.append({"prompt_token_ids": whole})
                spans.append((whole, len(whole) - len(continuation_enc)))
            outputs = self.model.generate(prompts, params, lora_request=self.lora_request, use_tqdm=False)
            for (whole, ctxlen), out in zip(spans, outputs, strict=True):
                total, greedy = 0.0, True
                # prompt_logprobs[i] holds the log-probability of token i given tokens < i (entry 0 is None);
                # with prompt_logprobs=1 each dict has the actual token plus the top-1 token.
                for token, entry in zip(whole[ctxlen:], out.prompt_logprobs[ctxlen:], strict=True):
                    logprob = entry[token]
                    total += float(getattr(logprob, "logprob", logprob))
                    rank = getattr(logprob, "rank", None)
                    top = rank == 1 if rank is not None else token == max(entry, key=lambda t: _lp(entry[t]))
                    greedy = greedy and top
                results.append((total, greedy))
        return results

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("si-bench does not use rolling log-likelihoods")


def _lp(value: Any) -> float:
    return float(getattr(value, "logprob", value))


def _default_lora_rank() -> int:
    """vLLM's own default max_lora_rank (a field of vllm.EngineArgs)."""
    default = engine_fields()["max_lora_rank"].default
    if not isinstance(default, int):
        raise SIBenchError(f"vLLM's max_lora_rank has no integer default ({default!r})")
    return default


def _adapter_rank(adapter: str) -> int | None:
    config = Path(adapter) / "adapter_config.json"
    try:
        return int(json.loads(config.read_text()).get("r"))
    except (OSError, ValueError, TypeError):
        return None

"""The vLLM backend ("si-vllm"): the same contract as `LogprobHFLM`, on a GPU.

Imported only when `backend == "vllm"` (it imports vllm, which exists only in the GPU environment of
requirements-vllm.txt). Samples carry their log-probabilities from vLLM itself (`cumulative_logprob`),
so no second forward pass is needed.

Sampling semantics, matched to the HF backend:
- lm-eval sends a `repeats: K` request as the same object K times. The K occurrences become ONE vLLM
  request with `n=K` and one seed per prompt, `sample_seed(seed_base, prompt_id, 0)`, so a resumed
  evaluation draws exactly what an uninterrupted one would have (the draws of one vLLM request depend
  only on its seed). The k-th occurrence gets the k-th completion. The draws are not the same numbers
  as the HF backend's (another RNG), only the same distribution.
- The full distribution: temperature from the task, top_k disabled, top_p 1. vLLM spells "top_k
  disabled" as 0 (and, in older versions, only as -1: "top_k must be -1 (disable), or at least 1"); 0.33
  accepts both, see TOP_K_DISABLED. Unlike HF, vLLM applies no default top_k and ignores
  generation_config.json unless asked (`generation_config="auto"`), so nothing else truncates the
  distribution.
- Log-probabilities: vLLM's default `logprobs_mode` is "raw_logprobs", the log-softmax of the model's
  logits BEFORE temperature and other processing. That is what we want: the model's own NLL of the text,
  as `LogprobHFLM` records it. ("processed_logprobs" would give the sampling distribution instead; at
  temperature 1 with no truncation the two coincide.) `logprobs=0` asks for the sampled token's
  log-probability only, which makes vLLM fill `cumulative_logprob`.
- Stopping: the task's `until` strings (not the EOS string: vLLM stops at EOS by itself). As on the HF
  backend, the token that completes a stop string or the EOS token counts in the sample's tokens and
  log-probability; the returned text ends before the stop string.

The engine: a process holds one (`ENGINE`; one engine takes most of the GPU's memory), and every
evaluation with the same engine arguments reuses it. A self-improvement run loads it with LoRA enabled
from its first measurement (`adapter_serving`), so each round's adapter is served on the base model
loaded once, as its own `LoRARequest`; while the run fine-tunes, the engine sleeps (vLLM's sleep mode,
level 1: weights to CPU memory, KV cache dropped, `pause_engine`) and wakes for the next measurement.
Without sleep mode (full fine-tuning, whose base changes every round) the engine is released instead.
`--backend-args` are checked against `vllm.EngineArgs` and handed to `vllm.LLM`.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

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
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's max_lora_rank takes
DEFAULT_LORA_RANK = 16  # vLLM's default max_lora_rank
OWN_ARGS = {"max_gen_toks", "max_length", "add_bos_token"}  # LogprobVLLM's arguments beside the engine's
REFUSED_ARGS = {
    **RESERVED_ARGS,
    "tokenizer": "si-bench tokenizes with the model's own tokenizer",
    "data_parallel_size": "one engine per process; spread prompts over GPUs with one process per GPU",
}


def lora_rank_bound(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of rank `rank`."""
    for bound in LORA_RANKS:
        if rank <= bound:
            return bound
    raise SIBenchError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")


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
        if self.settings.get("enable_sleep_mode"):
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


def _check_type(key: str, value: Any, default: Any) -> None:
    """A value of another kind than the engine argument's default (a number for a flag, text for a number)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = True
    if not ok:
        raise SIBenchError(f"--backend-args {key}={value}: vLLM's {key} takes a {type(default).__name__}")


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
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
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
        settings: dict[str, Any] = dict(
            model=pretrained, tensor_parallel_size=int(tensor_parallel_size),
            gpu_memory_utilization=float(gpu_memory_utilization), dtype=dtype, **engine_args,
        )
        if max_length:
            settings["max_model_len"] = int(max_length)
        self.lora_request = None
        if lora:
            settings["enable_lora"] = True
            bound = lora_rank_bound(_adapter_rank(lora) or DEFAULT_LORA_RANK)
            settings["max_lora_rank"] = max(int(settings.get("max_lora_rank", DEFAULT_LORA_RANK)), bound)
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
        fields = {f.name: f.default for f in dataclasses.fields(vllm.EngineArgs)}
        check_names("vllm", args, {*fields, *OWN_ARGS}, REFUSED_ARGS)
        for key, value in args.items():
            if key in fields:
                _check_type(key, value, fields[key])

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
        if self._max_length:
            return self._max_length
        engine = getattr(self.model, "llm_engine", None)
        length = getattr(getattr(engine, "model_config", None), "max_model_len", None)
        if length is None:
            from transformers import AutoConfig

            length = getattr(AutoConfig.from_pretrained(self.pretrained), "max_position_embeddings", 2048)
        self._max_length = int(length)
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
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # ---- chat template (as HFLM) ----
    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        import jinja2

        kwargs = dict(tokenize=False, add_generation_prompt=add_generation_prompt,
                      continue_final_message=not add_generation_prompt)
        try:
            return self.tokenizer.apply_chat_template(chat_history, **kwargs)
        except jinja2.exceptions.TemplateError:  # templates without a system role
            return self.tokenizer.apply_chat_template([m for m in chat_history if m["role"] != "system"], **kwargs)

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
            seed=seed, logprobs=0,
        )
        return params, max_new

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
                whole = (context_enc + continuation_enc)[-self.max_length :]
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


def _adapter_rank(adapter: str) -> int | None:
    config = Path(adapter) / "adapter_config.json"
    try:
        return int(json.loads(config.read_text()).get("r"))
    except (OSError, ValueError, TypeError):
        return None

"""What a sampling backend returns, and how each sample gets its seed.

A backend is an lm-eval model class whose `generate_until` returns `SampledText`: a `str` that also
carries the sample's total log-probability and token count, captured during generation (no second
forward pass). Each sample is drawn with its own seed (from the evaluation, the prompt and the sample
index), so a resumed evaluation draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Callable, Protocol


class SampledText(str):
    """Generated text plus its log-probability under the model (the response tokens, stop token included)."""

    logprob: float
    n_tokens: int

    def __new__(cls, text: str, logprob: float, n_tokens: int):
        obj = super().__new__(cls, text)
        obj.logprob = logprob
        obj.n_tokens = n_tokens
        return obj


class SamplingBackend(Protocol):
    """The contract si-bench relies on (lm-eval's model API plus two attributes)."""

    seed_base: str  # the evaluation's generation id: every sample's seed derives from it
    on_batch: Callable[[int], None] | None  # progress callback: n samples done

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[SampledText]: ...

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]: ...


def sample_seed(base: str, prompt_id: str, sample_idx: int) -> int:
    digest = hashlib.sha256(f"{base}|{prompt_id}|{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def sample_indices(requests: list) -> list[int]:
    """lm-eval repeats a request object K times for `repeats: K`; its k-th occurrence is sample k."""
    seen: dict[int, int] = defaultdict(int)
    indices = []
    for req in requests:
        indices.append(seen[id(req)])
        seen[id(req)] += 1
    return indices


def seeds_for(requests: list, base: str) -> list[int]:
    return [sample_seed(base, str(req.doc.get("prompt_id", req.doc_id)), k)
            for req, k in zip(requests, sample_indices(requests), strict=True)]

"""Cross-improvement: a limited budget of external responses replaces self-picked ones.

Which prompts get external data is a seeded random choice made without looking at ground truth or
at correctness; how many per round follows the allocation's shares (largest remainder, so the
counts add up to the budget exactly).
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any, Callable

from si_bench.datasets import Prompt
from si_bench.errors import SIBenchError
from si_bench.evaluation import Evaluation
from si_bench.models import resolve_model


def per_round_counts(shares: list[float], budget: int) -> list[int]:
    raw = [s * budget for s in shares]
    counts = [math.floor(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: budget - sum(counts)]:
        counts[i] += 1
    return counts


def check_budget(shares: list[float], budget: int, n_prompts: int) -> list[int]:
    counts = per_round_counts(shares, budget)
    worst = max(counts, default=0)
    if worst > n_prompts:
        raise SIBenchError(
            f"--budget {budget} needs {worst} external items in one round but only {n_prompts} training prompts "
            "are available per round"
        )
    return counts


def choose_prompts(prompt_ids: list[str], count: int, seed: int, round_: int) -> list[str]:
    """A seeded choice over prompt ids only: it cannot depend on correctness."""
    rng = random.Random(f"external-{seed}-{round_}")
    return sorted(rng.sample(sorted(prompt_ids), count))


def ground_truth(prompts: list[Prompt], **_: object) -> dict[str, str]:
    """The dataset's reference solutions (GSM8k calculator annotations already stripped)."""
    return {p.prompt_id: p.reference for p in prompts}


SOURCES: dict[str, Callable[..., dict[str, str]]] = {"ground-truth": ground_truth}


def model_picks(spec: str, prompts: list[Prompt], *, cfg: Any, db: str, progress: Any = None) -> dict[str, str]:
    """Another model's best-of-N picks on the training prompts (an external source), stored as its evaluation."""
    ecfg = replace(cfg.eval_config("train", None), model=spec)
    return Evaluation(ecfg, db=db, prompts=prompts, progress=progress).run().picks


def check_source(spec: str | None) -> None:
    """An external source that cannot be used is an error before any work: ground-truth, or a model that
    resolves (a preset, a model directory, a hub id available here)."""
    if spec and spec not in SOURCES:
        try:
            resolve_model(spec)
        except SIBenchError as exc:
            raise SIBenchError(f"--external {spec!r} is neither {' nor '.join(SOURCES)} nor a usable model: {exc}"
                               ) from None


def source_for(spec: str) -> Callable[..., dict[str, str]]:
    """`ground-truth`, or any model spec: that model's own best-of-N picks."""
    if spec in SOURCES:
        return SOURCES[spec]
    return lambda prompts, **kw: model_picks(spec, prompts, **kw)

"""`SelfImproveConfig`: every setting of a self-improvement run, documented once (as trl puts a config
dataclass beside each trainer).

The run id is a hash of this configuration, so the same command resumes the same run and any changed
setting starts a different one. Settings the paper leaves open are fields here and are recorded with
the run. Sampling and verification settings are `SamplingConfig`'s, shared with `evaluate`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from si_bench.datasets import MAX_PROMPTS
from si_bench.devices import LEGACY_SETTINGS
from si_bench.errors import SIBenchError
from si_bench.evaluation import EvalConfig, SamplingConfig
from si_bench.fit import allocation_shares
from si_bench.options import SEED_MAX, Options, differs, option

MODES = ("regenerate", "fixed")
MAX_ROUNDS = 1000  # each round fine-tunes and measures: a thousand is past any run that could finish
MAX_RANK = 4096  # a LoRA rank (and its alpha) past the width of any model si-bench can load
MAX_LEARNING_RATE = 1.0  # SFT with Adam diverges long before
MAX_REPLICATES = 1000  # --seeds: each is a whole run (a sweep's default --max-jobs)
MAX_SFT_BATCH = 4096  # rows per SFT step (batch, and batch x accumulation): past what an accelerator holds
RETIRED_FIELDS = ("extra",)  # in configs stored by earlier versions; never part of a run id


@dataclass
class SelfImproveConfig(SamplingConfig):
    """Settings of one run. The defaults are the embedded demo (smollm2-135m on arith), sized to finish within
    15 minutes on a 2-core CPU with a trajectory that identifies its rate: fixed mode, 5 epochs measured every
    half epoch (11 points), 32 test prompts."""

    verifier: str = differs("majority", "measured on the base model's best-of-4 over 32 arith training prompts, seeds "
                                        "1 and 2 (not the demo's): TF ranked a prompt's candidates at chance "
                                        "(within-prompt AUROC 0.36 and 0.58 zero-shot, 0.36 and 0.33 with 2 shots) "
                                        "and passed sigma everywhere, so every TF pick was the lowest NLL; majority "
                                        "ranked them 0.66 and 0.58 within prompts and 0.73 and 0.77 pooled (no "
                                        "interval within prompts excludes 0.5 at this size), and costs no forward pass")
    verifier_shots: int = differs(0, "majority takes no prompt; with --verifier tf, 2 shots (examples wrong "
                                     "throughout) measured no better than zero-shot (0.36 and 0.33 against 0.36 "
                                     "and 0.58), at several times the prompt length")
    max_new_tokens: int | None = differs(24, "arith answers are short, and one long sample holds up its batch")
    mode: str = option("fixed", "fixed (picks made once from the base model, then --rounds epochs over them, "
                                "measured every half epoch; t counts epochs) or regenerate (new picks every round; "
                                "t counts rounds).", choices=MODES)
    rounds: int = option(5, "Rounds (regenerate) or epochs (fixed).", min=1, max=MAX_ROUNDS)
    train_prompts: int = option(32, "Training prompts (a seeded sample of the train split, the same every round).",
                                min=1, max=MAX_PROMPTS)
    test_limit: int = option(32, "Test prompts, measured at t=0, every --eval-every rounds (every half epoch in "
                                 "fixed mode) and at the end.", min=1, max=MAX_PROMPTS)
    eval_every: int = option(1, "Measure the test split every this many rounds (the last is always measured).",
                             min=1, max=MAX_ROUNDS)
    external: str | None = option(None, "Cross-improvement source: ground-truth, or a model whose best-of-N "
                                        "picks are used.")
    budget: int = option(0, "External items in total (cross-improvement).", min=0,
                         max=MAX_ROUNDS * MAX_PROMPTS)
    allocation: str = option("uniform", "How the budget is spread over rounds: early, uniform, late or "
                                        "comma-separated shares per round.")
    lora: bool = option(True, "LoRA fine-tuning (default) or full fine-tuning.", flag="--lora/--full-finetune")
    lora_r: int = option(16, "LoRA rank.", min=1, max=MAX_RANK)
    lora_alpha: int | None = option(None, "LoRA alpha (default: twice the rank).", above=0,
                                      max=2 * MAX_RANK)
    learning_rate: float = option(5e-4, "SFT learning rate (0: the weights stay as they are).", min=0,
                                  max=MAX_LEARNING_RATE)
    epochs_per_round: float = option(2.0, "SFT epochs over a round's picks (regenerate mode).", above=0,
                                     max=MAX_ROUNDS)
    train_batch_size: int = option(4, "SFT batch size.", min=1, max=MAX_SFT_BATCH)
    grad_accum: int = option(1, "SFT gradient accumulation steps.", min=1, max=MAX_SFT_BATCH)
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass: less accelerator "
                                                 "memory, slower steps, the same gradients.",
                                          flag="--gradient-checkpointing", in_id=False)
    keep_checkpoints: str = option("all", "Keep all checkpoints or only the last.", choices=("all", "last"),
                                   in_id=False)
    external_shares: list[float] | None = option(None, "The external budget's share per round, as resolved when the "
                                                       "run was made.", in_id=False, hidden=True)

    def check(self) -> None:
        if self.external and self.mode == "fixed":
            raise SIBenchError("cross-improvement (--external) applies to regenerate mode only")
        if self.budget and not self.external:
            raise SIBenchError("--budget needs --external (ground-truth or a model)")
        if self.external:
            self.shares()

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r

    def shares(self) -> list[float]:
        """The external budget's share per round: resolved when the run was made, so that an existing run keeps
        the meaning its allocation had then."""
        return self.external_shares or allocation_shares(self.allocation, self.rounds)

    def eval_config(self, split: str, limit: int | None) -> EvalConfig:
        """The evaluation of one of this run's checkpoints: the shared settings, a split and its size."""
        shared = {f.name: getattr(self, f.name) for f in fields(SamplingConfig)}
        return EvalConfig(**shared, split=split, limit=limit)

    def hashed(self) -> dict:
        """The settings in the run id. `rounds` is left out unless an external budget is spread over them, so
        the same command with more rounds (or `train-round`) continues a run."""
        out = self.identity()
        out["lora_alpha"] = self.effective_lora_alpha
        if not self.external:
            out.pop("rounds")
        return out

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.hashed(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        name = self.model.rstrip("/").split("/")[-1]
        return f"{name}-{self.dataset}-{self.mode}-s{self.seed}-{self.config_hash}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SelfImproveConfig":
        stored = json.loads(text)
        for name in RETIRED_FIELDS:
            stored.pop(name, None)
        if stored.get("external") and stored.get("allocation") == "late" and "external_shares" not in stored:
            # Stored before schema v3, when late meant the last round: the run keeps that meaning.
            stored["external_shares"] = [0.0] * (stored["rounds"] - 1) + [1.0]
        for name, value in LEGACY_SETTINGS.items():  # runs stored before --device and --dtype ran there
            stored.setdefault(name, value)
        return cls(**stored)


@dataclass
class RunPlacement(Options):
    """Where a run's checkpoints go (not part of the run: a moved workdir is the same run)."""

    workdir: str | None = option(None, "Where checkpoints go (default: si-bench-runs/ beside the store).",
                                output="directory")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise SIBenchError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SIBenchError(f"--seeds must be distinct integers >= 0, got {text!r}")
    if max(seeds) > SEED_MAX or len(seeds) > MAX_REPLICATES:
        raise SIBenchError(f"--seeds takes at most {MAX_REPLICATES} seeds, each at most {SEED_MAX}")
    return seeds


@dataclass
class Replicates(Options):
    """Replicate runs of one configuration, one per seed."""

    seeds: str | None = option(None, "Comma-separated seeds: replicate runs (overrides --seed); fit pools them.",
                               check=parse_seeds)

    def seed_list(self) -> list[int] | None:
        return parse_seeds(self.seeds) if self.seeds else None


@dataclass
class RunRef(Options):
    """An existing run."""

    run: str = option(help="Run id (see `si-bench runs`).")

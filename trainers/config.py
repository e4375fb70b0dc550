"""`SelfImproveConfig`: every setting of a self-improvement run, documented once.

The run id is a hash of this configuration, so the same command resumes the same run and any
changed setting starts a different one. Settings the paper leaves open are fields here and are
recorded with the run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from si_bench.errors import SIBenchError

MODES = ("regenerate", "fixed")
ALLOCATIONS = ("early", "uniform", "late")


@dataclass
class SelfImproveConfig:
    """Settings of one run. The defaults are the embedded demo (smollm2-135m on arith), sized to finish in
    about 15 minutes on a 2-core CPU: a zero-shot verifier prompt (prompt encoding dominates CPU cost, and
    at 135M parameters the few-shot verifier was no better in our measurement), short answers, 3 rounds.

    Args:
        model: the starting model (preset, directory or hub id).
        dataset, verifier: as in `evaluate` (the verifier picks the training data).
        mode: `regenerate` (new candidates and picks every round; t counts rounds) or `fixed` (picks made once
            from the base model, then `rounds` epochs over them, measured every half epoch; t counts epochs).
        rounds: rounds (regenerate) or epochs (fixed).
        samples, sigma: N candidates per prompt and the verifier threshold of the best-of-N pick.
        train_prompts: training prompts (a seeded sample of the train split, the same every round).
        test_limit: test prompts measured at t=0, every `eval_every` rounds and at the last round.
        eval_every: measure the test split every this many rounds (the last round is always measured).
        external, budget, allocation: cross-improvement. `external` is `ground-truth` or a model spec whose
            best-of-N pick is used; `budget` external items in total, spread over rounds by `allocation`
            (`early`, `uniform`, `late` or comma-separated shares summing to 1).
        lora: LoRA fine-tuning (default) or full fine-tuning; lora_r, lora_alpha, learning_rate, epochs_per_round,
            train_batch_size, grad_accum: SFT settings (the paper's are not public).
        keep_checkpoints: `all` or `last`.
        batch_size, n_boot, chunk_prompts: generation batch, bootstrap replicates, prompts per stored chunk
            (these change no number and stay out of the run id).
    """

    model: str = "smollm2-135m"
    dataset: str = "arith"
    verifier: str = "tf"
    mode: str = "regenerate"
    rounds: int = 3
    samples: int = 4
    sigma: float = 0.5
    train_prompts: int = 32
    test_limit: int = 48
    eval_every: int = 1
    num_fewshot: int = 3
    verifier_shots: int = 0
    apply_chat_template: bool = False
    max_new_tokens: int | None = 24
    batch_size: int = 32
    backend: str = "hf"
    seed: int = 0
    external: str | None = None
    budget: int = 0
    allocation: str = "uniform"
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    learning_rate: float = 5e-4
    epochs_per_round: float = 2.0
    train_batch_size: int = 4
    grad_accum: int = 1
    keep_checkpoints: str = "all"
    n_boot: int = 1000
    chunk_prompts: int = 8
    extra: dict = field(default_factory=dict)

    # Settings that do not change any number: they stay out of the run id.
    _NOT_HASHED = ("keep_checkpoints", "batch_size", "n_boot", "chunk_prompts", "extra")

    def validate(self) -> None:
        from si_bench.datasets import get_dataset
        from si_bench.verify import get_verifier

        get_dataset(self.dataset)
        get_verifier(self.verifier)
        if self.mode not in MODES:
            raise SIBenchError(f"unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        if self.rounds < 1:
            raise SIBenchError("--rounds must be at least 1")
        if self.keep_checkpoints not in ("all", "last"):
            raise SIBenchError("--keep-checkpoints must be all or last")
        if self.external and self.mode == "fixed":
            raise SIBenchError("cross-improvement (--external) applies to regenerate mode only")
        if self.budget < 0:
            raise SIBenchError("--budget must be >= 0")
        if self.budget and not self.external:
            raise SIBenchError("--budget needs --external (ground-truth or a model)")
        if self.external:
            self.shares()  # validates the allocation
        if not 0 <= self.sigma <= 1:
            raise SIBenchError(f"--sigma must lie in [0, 1], got {self.sigma}")

    def shares(self) -> list[float]:
        k = self.rounds
        if self.allocation == "early":
            return [1.0] + [0.0] * (k - 1)
        if self.allocation == "late":
            return [0.0] * (k - 1) + [1.0]
        if self.allocation == "uniform":
            return [1.0 / k] * k
        try:
            shares = [float(x) for x in self.allocation.split(",")]
        except ValueError:
            raise SIBenchError(
                f"--allocation must be early, uniform, late or {k} comma-separated shares, got {self.allocation!r}"
            ) from None
        if len(shares) != k:
            raise SIBenchError(f"--allocation has {len(shares)} shares for {k} rounds")
        if any(s < 0 for s in shares) or abs(sum(shares) - 1) > 1e-6:
            raise SIBenchError(f"--allocation shares must be >= 0 and sum to 1 (they sum to {sum(shares):g})")
        return shares

    def hashed(self) -> dict:
        """The settings in the run id. `rounds` is left out unless an external budget is spread over them, so
        the same command with more rounds (or `train-round`) continues a run."""
        skip = set(self._NOT_HASHED) | (set() if self.external else {"rounds"})
        return {k: v for k, v in asdict(self).items() if k not in skip}

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.hashed(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        name = self.model.rstrip("/").split("/")[-1]
        return f"{name}-{self.dataset}-{self.mode}-s{self.seed}-{self.config_hash}"

    @classmethod
    def from_json(cls, text: str) -> "SelfImproveConfig":
        return cls(**json.loads(text))

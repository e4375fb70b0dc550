"""The scripted model the bookkeeping tests run on, what it must measure, and a stand-in for SFT.

Sample k of every prompt is SCRIPT[k % 3]: a wrong answer that is the likeliest per token but doubted by the
verifier, a right answer it trusts, and a right one it trusts more. Every measure follows by hand.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from si_bench import faults
from si_bench.mock_backend import Response
from si_bench.models import ModelRef

SCRIPT = [
    Response("#### -1", logprob=-1.0, n_tokens=2, score=0.25),  # wrong; 0.5 nats per token
    Response("{answer} is the answer.\n#### {answer}", logprob=-6.0, n_tokens=4, score=0.75),  # right; 1.5 per token
    Response("#### {answer}", logprob=-2.0, n_tokens=2, score=0.9),  # right; 1.0 per token
]
SAMPLES = 3

# sigma -> (picked sample, fallback): above sigma the lowest per-token NLL wins, else the best score.
PICKS = {0.2: (0, False), 0.5: (2, False), 0.95: (2, True)}


NLL_PICK = 0  # what the lowest per-token NLL alone picks: the wrong answer


def expected_measures(sigma: float) -> dict[str, float]:
    picked, fallback = PICKS[sigma]
    nll = [-r.logprob for r in SCRIPT]
    right = [r.text != "#### -1" for r in SCRIPT]
    return {
        "auroc_within": 1.0,
        "picks_by_score": float(not fallback and picked != NLL_PICK),
        "picks_by_nll": float(not fallback and picked == NLL_PICK),
        "pick_lift": right[picked] - sum(right) / SAMPLES,  # against a random pick of the same candidates
        "verifier_signal": 1.0,  # the within-prompt AUROC's interval is [1, 1]
        "solver_accuracy": sum(right) / SAMPLES,
        "solver_uncertainty": sum(nll) / SAMPLES,
        "verifier_accuracy": float(right[picked]),
        "verifier_uncertainty": nll[picked],
        "gap": sum(nll) / SAMPLES - nll[picked],
        "fallback_rate": float(fallback),
        "pass@1": sum(right) / SAMPLES,
        "auroc": 1.0,  # the verifier ranks both right answers above the wrong one
    }


def scripted_fine_tune(parent: ModelRef, rows: list[dict], target: Path, cfg, *, seed: int,
                       epochs: float | None = None, progress=None) -> dict:
    """Stands in for trl's SFT step (si_bench.trainers.sft.fine_tune): one `train_step` fault point (and one step of
    a "fine-tuning" phase of `progress`) per optimiser step, then a checkpoint directory whose adapter_config.json
    depends on the parent, the rows and the seed only, so its hash (the checkpoint's weights) does too. Written whole
    or not at all, as the real one."""
    steps = math.ceil(len(rows) / cfg.train_batch_size) * math.ceil(epochs or cfg.epochs_per_round)
    task = progress.add_task("fine-tuning", total=steps) if progress is not None else None
    for _ in range(steps):
        if task is not None:
            progress.advance(task, 1)
        faults.point("train_step")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    trained_on = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    (scratch / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": parent.path, "parent": parent.identity, "rows": trained_on, "seed": seed,
    }, sort_keys=True))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(scratch, target)
    return {"train_loss": 0.0, "first_loss": None, "last_loss": None, "steps": steps}


@contextmanager
def scripted_sft() -> Iterator[None]:
    """The run loop fine-tunes with `scripted_fine_tune` instead of trl while this lasts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("si_bench.trainers.rounds.fine_tune", scripted_fine_tune)
        yield

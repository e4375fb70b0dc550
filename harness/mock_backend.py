"""The scripted backend ("si-mock", `--backend mock`): a model that returns given texts with given
log-probabilities and verifier scores, in the spirit of lm-eval's DummyLM and inspect_ai's mockllm.

A scripted model is a directory whose `config.json` holds the script (`write_scripted_model`); the
directory's hash is its identity, as a real model's weights are, so another script gets other ids. Sample k
of every prompt is response k (modulo the number of responses): its text, with `{answer}` replaced by the
prompt's reference answer, its log-probability and its token count. The verifier scores a candidate with the
score of the response it is (a literal text before one with `{answer}`, which matches any answer). Nothing
is generated, so the pipeline's bookkeeping (selection, measures, storage, resume, the run loop) can be
tested exactly and in milliseconds.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from si_bench.errors import SIBenchError
from si_bench.models import SCRIPT_KEY
from si_bench.sampling import SampledText, sample_indices

ANSWER = "{answer}"
UNLIKELY = -30.0  # the log-likelihood of a choice between the lowest and the highest


@dataclass(frozen=True)
class Response:
    """One scripted response: `{answer}` in its text stands for the prompt's reference answer."""

    text: str
    logprob: float  # the response's total log-probability (its NLL is -logprob)
    n_tokens: int
    score: float  # what the verifier says of it, in [0, 1]

    def render(self, answer: str) -> str:
        return self.text.replace(ANSWER, answer)

    def matches(self, candidate: str) -> bool:
        pattern = ".+?".join(re.escape(part) for part in self.text.strip().split(ANSWER))
        return re.fullmatch(pattern, candidate.strip(), flags=re.DOTALL) is not None


def write_scripted_model(directory: Path, responses: list[Response]) -> Path:
    """Write a scripted model into `directory` (a model spec si-bench resolves like any model directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = {SCRIPT_KEY: {"responses": [asdict(r) for r in responses]}}
    (directory / "config.json").write_text(json.dumps(script, indent=2))
    return directory


def read_script(directory: Path) -> list[Response]:
    config = directory / "config.json"
    script = json.loads(config.read_text()).get(SCRIPT_KEY) if config.exists() else None
    if not script or not script.get("responses"):
        raise SIBenchError(f"{directory} is not a scripted model (its config.json has no {SCRIPT_KEY!r} responses)")
    return [Response(**r) for r in script["responses"]]


def choice_logliks(score: float, n_choices: int) -> list[float]:
    """Log-likelihoods of ordered choices (worst first) whose verifier score is `score`: the mass lies on the
    lowest and the highest choice, so P(True) of TF and the expected rating of QE both come out as `score`."""
    score = min(max(score, 1e-9), 1 - 1e-9)
    return [math.log(1 - score), *[UNLIKELY] * (n_choices - 2), math.log(score)]


@register_model("si-mock")
class ScriptedLM(LM):
    """An lm-eval model that plays back a script (see the module's docstring)."""

    def __init__(self, pretrained: str, seed_base: str = "si-bench", **_ignored: Any):
        super().__init__()
        self.responses = read_script(Path(pretrained))
        self.seed_base = seed_base  # the SamplingBackend protocol's; a script's samples need no seed
        self.on_batch: Callable[[int], None] | None = None

    @classmethod
    def create(cls, path: str, adapter: str | None, **settings: Any) -> "ScriptedLM":
        """An adapter (a run's checkpoint) changes the model's identity, not what it says."""
        return cls(pretrained=path, **settings)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[SampledText]:
        texts = []
        for request, k in zip(requests, sample_indices(requests), strict=True):
            response = self.responses[k % len(self.responses)]
            texts.append(SampledText(response.render(str(request.doc.get("answer", ""))), response.logprob,
                                     response.n_tokens))
        if self.on_batch is not None:
            self.on_batch(len(requests))
        return texts

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Multiple-choice requests of the verifier tasks: each document's choices, scored by its candidate."""
        n_choices = Counter((r.task_name, r.doc_id) for r in requests)
        return [(choice_logliks(self.score(r.doc["candidate"]), n_choices[r.task_name, r.doc_id])[r.idx], False)
                for r in requests]

    def score(self, candidate: str) -> float:
        """The score of the response the candidate is; literal texts are tried before those with `{answer}`."""
        for response in sorted(self.responses, key=lambda r: ANSWER in r.text):
            if response.matches(candidate):
                return response.score
        raise SIBenchError(f"the scripted model never says {candidate!r}, so it has no score for it")

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        raise SIBenchError("the scripted model answers and verifies; it scores no rolling log-likelihoods")

"""Self-verification methods: the same model scores each of its candidates in [0, 1].

A method is an lm-eval multiple-choice task over (prompt, candidate) documents plus a rule turning
the choices' log-likelihoods into a score. Add a method by adding a task YAML and an entry here.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

from si_bench import lmeval
from si_bench.datasets import Prompt
from si_bench.errors import SIBenchError
from si_bench.tasks import TASKS_DIR


def _softmax(logliks: list[float]) -> list[float]:
    top = max(logliks)
    weights = [math.exp(x - top) for x in logliks]
    total = sum(weights)
    return [w / total for w in weights]


def true_probability(logliks: list[float]) -> float:
    """TF: P(True) / (P(True) + P(False)); choices are [False, True]."""
    return _softmax(logliks)[1]


def expected_rating(logliks: list[float]) -> float:
    """QE: the expected rating over 1..K, mapped to [0, 1]."""
    probs = _softmax(logliks)
    return sum(p * i for i, p in enumerate(probs)) / (len(probs) - 1)


@dataclass(frozen=True)
class VerifierMethod:
    name: str
    task: str
    score: Callable[[list[float]], float]
    correct_label: dict  # few-shot target fields for a correct / a wrong example
    wrong_label: dict

    def key(self, shots: int, apply_chat_template: bool) -> str:
        """Identifies the verdicts: the method, its prompt (the task YAML's bytes), shots and template."""
        yaml_bytes = (TASKS_DIR / f"{self.task}.yaml").read_bytes() + (TASKS_DIR / "_verifier.yaml").read_bytes()
        blob = f"{self.name}|{hashlib.sha256(yaml_bytes).hexdigest()}|{shots}|{apply_chat_template}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


VERIFIERS: dict[str, VerifierMethod] = {
    "tf": VerifierMethod("tf", "si_verify_tf", true_probability, {"label": 1}, {"label": 0}),
    "qe": VerifierMethod("qe", "si_verify_qe", expected_rating, {"rating": 4}, {"rating": 0}),
}


def get_verifier(name: str) -> VerifierMethod:
    try:
        return VERIFIERS[name]
    except KeyError:
        raise SIBenchError(f"unknown verifier {name!r} (choose from {', '.join(VERIFIERS)})") from None


def corrupt(prompt: Prompt) -> str:
    """A wrong candidate for few-shot examples: the reference with its final answer changed."""
    answer = prompt.answer
    try:
        wrong = str(int(float(answer)) + 1 + len(prompt.question) % 7)
    except ValueError:
        wrong = f"{answer} + 1"
    head, sep, tail = prompt.reference.rpartition(answer)
    return f"{head}{wrong}{tail}" if sep else f"{prompt.reference}\nThe answer is {wrong}."


def fewshot_docs(method: VerifierMethod, train: list[Prompt]) -> list[dict]:
    """Alternating correct and wrong examples from training prompts (ground truth used only here)."""
    docs = []
    for i, p in enumerate(train):
        good = i % 2 == 0
        docs.append({
            "question": p.question,
            "candidate": p.reference if good else corrupt(p),
            "label": 0, "rating": 0,
            **(method.correct_label if good else method.wrong_label),
        })
    return docs


def score_candidates(lm, method: VerifierMethod, items: list[tuple[Prompt, str]], train: list[Prompt], *,
                     shots: int, apply_chat_template: bool) -> list[tuple[float, list[float]]]:
    """(score, choice log-likelihoods) for each (prompt, candidate text)."""
    docs = [
        {"question": p.question, "candidate": text.strip(), "label": 0, "rating": 0, "row": i}
        for i, (p, text) in enumerate(items)
    ]
    logliks = lmeval.choice_logliks(
        lm, method.task, docs, fewshot_docs(method, train), shots=shots, apply_chat_template=apply_chat_template
    )
    return [(method.score(ll), ll) for ll in logliks]

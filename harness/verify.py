"""Self-verification methods: the same model scores each of its candidates in [0, 1].

A model method (TF, QE) is an lm-eval multiple-choice task over (prompt, candidate) documents plus a rule
turning the choices' log-likelihoods into a score; add one with a task YAML and an entry here. `majority`
(self-consistency) needs no forward pass: a candidate's score is the share of its prompt's N samples whose
extracted answer equals its own. Every method returns (score, raw) per candidate, stored as a verdict.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from si_bench import lmeval
from si_bench.datasets import Prompt, get_dataset
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


# The few-shot examples' text is not in the task YAML, so a change to it is a revision that enters the key of
# few-shot verdicts (zero-shot keys never carry it). Revision 2: a wrong example is wrong throughout.
FEWSHOT_REVISION = 2


@dataclass(frozen=True)
class Candidate:
    """One candidate to verify: its prompt, its text, and the extracted answers of its prompt's N samples."""

    prompt: Prompt
    text: str
    answer: str | None = None
    answers: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class VerifierMethod:
    """A verifier that asks the model (an lm-eval multiple-choice task)."""

    name: str
    task: str
    score: Callable[[list[float]], float]
    correct_label: dict  # few-shot target fields for a correct / a wrong example
    wrong_label: dict
    uses_model: bool = True

    def key(self, shots: int, apply_chat_template: bool) -> str:
        """Identifies the verdicts: the method, its prompt (the task YAML's bytes and, with shots, the examples'
        revision), shots and template."""
        yaml_bytes = (TASKS_DIR / f"{self.task}.yaml").read_bytes() + (TASKS_DIR / "_verifier.yaml").read_bytes()
        blob = f"{self.name}|{hashlib.sha256(yaml_bytes).hexdigest()}|{shots}|{apply_chat_template}"
        if shots:
            blob += f"|fewshot-r{FEWSHOT_REVISION}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def verdicts(self, lm, candidates: Sequence[Candidate], train: list[Prompt], *, shots: int,
                 apply_chat_template: bool) -> list[tuple[float, dict[str, Any]]]:
        scored = score_candidates(lm(), self, [(c.prompt, c.text) for c in candidates], train, shots=shots,
                                  apply_chat_template=apply_chat_template)
        return [(score, {"method": self.name, "choice_logliks": ll}) for score, ll in scored]


def agreement(answer: str | None, answers: Sequence[str | None]) -> float:
    """Self-consistency: the share of the samples whose extracted answer is `answer` (0 without an answer)."""
    if answer is None or not answers:
        return 0.0
    return sum(a == answer for a in answers) / len(answers)


@dataclass(frozen=True)
class MajorityMethod:
    """Self-consistency: no prompt, no forward pass; the score is `agreement` over the stored samples."""

    name: str = "majority"
    uses_model: bool = False
    task: str = "si_verify_majority"  # its task under lm-eval's own CLI (run with `--model dummy`: no model)

    def key(self, shots: int, apply_chat_template: bool) -> str:
        """Neither shots nor a template change agreement, so every evaluation shares one key."""
        return hashlib.sha256(f"{self.name}|agreement-r1".encode()).hexdigest()[:16]

    def verdicts(self, lm, candidates: Sequence[Candidate], train: list[Prompt], *, shots: int,
                 apply_chat_template: bool) -> list[tuple[float, dict[str, Any]]]:
        out = []
        for c in candidates:
            score = agreement(c.answer, c.answers)
            out.append((score, {"method": self.name, "agreeing": round(score * len(c.answers)),
                                "samples": len(c.answers)}))
        return out


Verifier = VerifierMethod | MajorityMethod

VERIFIERS: dict[str, Verifier] = {
    "tf": VerifierMethod("tf", "si_verify_tf", true_probability, {"label": 1}, {"label": 0}),
    "qe": VerifierMethod("qe", "si_verify_qe", expected_rating, {"rating": 4}, {"rating": 0}),
    "majority": MajorityMethod(),
}


def get_verifier(name: str) -> Verifier:
    try:
        return VERIFIERS[name]
    except KeyError:
        raise SIBenchError(f"unknown verifier {name!r} (choose from {', '.join(VERIFIERS)})") from None


def corrupt(prompt: Prompt) -> str:
    """A wrong candidate for few-shot examples: the reference with its answer changed wherever it appears as a
    whole number (the working's result and the final line alike), so the example is wrong throughout."""
    answer = prompt.answer
    try:
        wrong = str(int(float(answer)) + 1 + len(prompt.question) % 7)
    except ValueError:
        wrong = f"{answer} + 1"
    whole = re.compile(rf"(?<![\w.]){re.escape(answer)}(?![\w]|\.\d)")
    text, n = whole.subn(lambda _: wrong, prompt.reference)
    return text if n else f"{prompt.reference}\nThe answer is {wrong}."


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


def candidate_doc(question: str, text: str) -> dict:
    """A verifier task's document for one candidate (its target fields unused: no ground truth)."""
    return {"question": question, "candidate": text.strip(), "label": 0, "rating": 0}


def model_methods() -> list[VerifierMethod]:
    return [m for m in VERIFIERS.values() if isinstance(m, VerifierMethod)]


def labelled(doc: dict, correct: bool) -> dict:
    """`doc` with every model method's target field set as for a correct (or a wrong) candidate: one document then
    serves each method's task, which reads its own field."""
    for method in model_methods():
        doc = {**doc, **(method.correct_label if correct else method.wrong_label)}
    return doc


def logged_docs(log: lmeval.SolverLog, train: list[Prompt]) -> tuple[list[dict], list[dict]]:
    """(few-shot, evaluated) documents of the verifier tasks under lm-eval's own CLI: the few-shot examples of
    `fewshot_docs` from the same training prompts, and each logged sample of a solver run as a candidate, with what
    `majority` needs (its extracted answer and its prompt's) and, as its target, whether it is correct (so lm-eval's
    own `acc` says whether the verifier judged it right; the score never reads it)."""
    methods = model_methods()
    fewshot = [{**rows[0], **{key: row[key] for row, m in zip(rows, methods, strict=True)
                              for key in m.correct_label.keys() | m.wrong_label.keys()}}
               for rows in zip(*(fewshot_docs(m, train) for m in methods), strict=True)]
    docs = []
    for p in log.prompts:
        dataset = get_dataset(p.doc["dataset"])
        checked = [dataset.check(text, p.doc["answer"]) for text in p.texts]
        answers = [answer for answer, _ in checked]
        for k, (text, (answer, correct)) in enumerate(zip(p.texts, checked, strict=True)):
            docs.append(labelled({**candidate_doc(p.doc["question"], text), "prompt_id": p.doc["prompt_id"],
                                  "sample_idx": k, "dataset": p.doc["dataset"], "answer": answer,
                                  "answers": answers, "correct": correct, "source": log.digest}, correct))
    return fewshot, docs


def score_candidates(lm, method: VerifierMethod, items: list[tuple[Prompt, str]], train: list[Prompt], *,
                     shots: int, apply_chat_template: bool) -> list[tuple[float, list[float]]]:
    """(score, choice log-likelihoods) for each (prompt, candidate text)."""
    docs = [{**candidate_doc(p.question, text), "row": i} for i, (p, text) in enumerate(items)]
    logliks = lmeval.choice_logliks(
        lm, method.task, docs, fewshot_docs(method, train), shots=shots, apply_chat_template=apply_chat_template
    )
    return [(method.score(ll), ll) for ll in logliks]

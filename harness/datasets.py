"""Dataset registry: where prompts come from, how a split is sampled, how an answer is checked.

Each dataset is a `Dataset` entry in `DATASETS`; nothing else in si-bench branches on a dataset name.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

from si_bench.errors import SIBenchError

DATA_DIR = Path(str(files("si_bench") / "data"))


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    question: str
    reference: str  # a worked solution (for few-shot examples and ground-truth external data)
    answer: str  # the final answer, compared with the model's
    meta: dict = field(default_factory=dict)

    def as_doc(self) -> dict:
        return {
            "prompt_id": self.prompt_id,
            "question": self.question,
            "reference": self.reference,
            "answer": self.answer,
            "stratum": str(self.meta.get("stratum", "")),
        }


@dataclass(frozen=True)
class Dataset:
    name: str
    splits: dict[str, Callable[[], list[Prompt]]]
    extract: Callable[[str], str | None]
    is_correct: Callable[[str | None, str], bool]
    task: str  # the lm-eval solver task in tasks/
    train_split: str = "train"  # where training prompts come from (math500 has no train split of its own)

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise SIBenchError(f"dataset {self.name} has no split {split!r} (choose from {', '.join(self.splits)})")

    def load(self, split: str) -> list[Prompt]:
        self.check_split(split)
        return self.splits[split]()

    def check(self, text: str, answer: str) -> tuple[str | None, bool]:
        extracted = self.extract(text)
        return extracted, self.is_correct(extracted, answer)


# ---------- reading shipped files ----------

def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.exists():
        raise SIBenchError(f"data file {path} is missing")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SIBenchError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise SIBenchError(f"{path}: line {number} is not a JSON object")
            missing = [k for k in required if k not in row]
            if missing:
                raise SIBenchError(f"{path}: line {number} lacks field(s) {', '.join(missing)}")
            rows.append(row)
    return rows


def _stable_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:12]


# ---------- numeric answers (GSM8k, arith) ----------

CALCULATOR = re.compile(r"<<[^>]*>>")
STRICT = re.compile(r"#### *(-?[0-9.,]+)")
NUMBER = re.compile(r"-?[$0-9.,]*[0-9]")


def strip_calculator(text: str) -> str:
    """GSM8k solutions carry calculator annotations like `<<48/2=24>>`; they are not part of the prose."""
    return CALCULATOR.sub("", text)


def extract_number(text: str) -> str | None:
    text = strip_calculator(text)
    strict = STRICT.findall(text)
    candidates = strict or NUMBER.findall(text)
    if not candidates:
        return None
    value = candidates[-1].replace(",", "").replace("$", "").rstrip(".")
    return value or None


def numbers_equal(predicted: str | None, gold: str) -> bool:
    if predicted is None:
        return False
    try:
        return abs(float(predicted) - float(gold.replace(",", ""))) < 1e-6
    except ValueError:
        return predicted.strip() == gold.strip()


def _gsm8k(split: str) -> list[Prompt]:
    rows = read_jsonl(DATA_DIR / "gsm8k" / f"{split}.jsonl", ("question", "answer"))
    return [
        Prompt(
            prompt_id=f"gsm8k-{split}-{i}",
            question=row["question"],
            reference=strip_calculator(row["answer"]),
            answer=row["answer"].rsplit("####", 1)[-1].strip().replace(",", ""),
        )
        for i, row in enumerate(rows)
    ]


# ---------- MATH (math-verify) ----------

def extract_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def math_equal(predicted: str | None, gold: str) -> bool:
    if predicted is None:
        return False
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${gold}$"), parse(f"${predicted}$")))
    except Exception:  # noqa: BLE001 - math-verify raises anything on unparsable LaTeX or a timeout
        return predicted.strip() == gold.strip()


def _math_rows(path: Path, split: str) -> list[Prompt]:
    rows = read_jsonl(path, ("problem", "solution", "answer", "subject", "unique_id"))
    return [
        Prompt(
            prompt_id=row["unique_id"],
            question=row["problem"],
            reference=row["solution"],
            answer=row["answer"],
            meta={"stratum": row["subject"], "level": row.get("level")},
        )
        for row in rows
    ]


# ---------- arith: generated arithmetic, where a 135M model has a learning signal ----------

ARITH_LEVELS: dict[int, dict[str, Any]] = {
    1: dict(terms=2, low=1, high=20, ops="+"),
    2: dict(terms=2, low=5, high=50, ops="+-"),
    3: dict(terms=3, low=2, high=30, ops="+-"),
}
ARITH_SIZES = {"train": 3000, "test": 600}
MAX_PROMPTS = 7500  # the largest split si-bench has (MATH train): no prompt count or limit can mean more
ARITH_TEST_SHARE = 5  # one problem in five, by a hash of the problem itself, belongs to test


def arith_split_of(expression: str) -> str:
    """Train and test are disjoint by construction: the split is a function of the problem text."""
    digest = int(hashlib.sha256(expression.encode()).hexdigest(), 16)
    return "test" if digest % ARITH_TEST_SHARE == 0 else "train"


def _arith_problem(rng: random.Random, level: int) -> tuple[str, int]:
    spec = ARITH_LEVELS[level]
    numbers = [rng.randint(spec["low"], spec["high"]) for _ in range(spec["terms"])]
    expression = str(numbers[0])
    for n in numbers[1:]:
        op = rng.choice(spec["ops"])
        if op == "-" and eval(expression) - n < 0:  # noqa: S307 - our own digits and +/-
            op = "+"
        expression += f" {op} {n}"
    return expression, eval(expression)  # noqa: S307


@lru_cache(maxsize=None)
def arith(split: str, seed: int = 0) -> tuple[Prompt, ...]:
    """Seeded problems of every level in equal shares (as far as a level's problem space allows)."""
    rng = random.Random(f"arith-{seed}")
    quota = ARITH_SIZES[split] // len(ARITH_LEVELS)
    prompts: list[Prompt] = []
    seen: set[str] = set()  # across levels: an expression two levels can draw is one prompt
    for level in sorted(ARITH_LEVELS):
        drawn = 0
        for _ in range(50 * quota):
            if drawn == quota:
                break
            expression, value = _arith_problem(rng, level)
            if expression in seen or arith_split_of(expression) != split:
                continue
            seen.add(expression)
            drawn += 1
            prompts.append(
                Prompt(
                    prompt_id=f"arith-{_stable_id(expression)}",
                    question=f"What is {expression}?",
                    reference=f"{expression} = {value}\n#### {value}",
                    answer=str(value),
                    meta={"stratum": f"level{level}", "level": level},
                )
            )
    random.Random(f"arith-order-{seed}").shuffle(prompts)
    return tuple(prompts)


DATASETS: dict[str, Dataset] = {
    "arith": Dataset(
        name="arith",
        splits={"train": lambda: list(arith("train")), "test": lambda: list(arith("test"))},
        extract=extract_number,
        is_correct=numbers_equal,
        task="si_solver_arith",
    ),
    "gsm8k": Dataset(
        name="gsm8k",
        splits={"train": lambda: _gsm8k("train"), "test": lambda: _gsm8k("test")},
        extract=extract_number,
        is_correct=numbers_equal,
        task="si_solver_gsm8k",
    ),
    "math": Dataset(
        name="math",
        splits={
            "train": lambda: _math_rows(DATA_DIR / "math" / "train.jsonl.gz", "train"),
            "test": lambda: _math_rows(DATA_DIR / "math" / "test.jsonl", "test"),
        },
        extract=extract_boxed,
        is_correct=math_equal,
        task="si_solver_math",
    ),
    "math500": Dataset(
        name="math500",
        splits={
            "test": lambda: _math_rows(DATA_DIR / "math" / "math500.jsonl", "test"),
            "train": lambda: _math_rows(DATA_DIR / "math" / "train.jsonl.gz", "train"),
        },
        extract=extract_boxed,
        is_correct=math_equal,
        task="si_solver_math",
    ),
}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise SIBenchError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})") from None


def sample_prompts(prompts: list[Prompt], limit: int | None, seed: int) -> list[Prompt]:
    """A seeded random sample, stratified by `meta['stratum']` when the dataset has strata; never the first N."""
    if limit is None or limit >= len(prompts):
        return list(prompts)
    if limit <= 0:
        raise SIBenchError("--limit must be positive")
    rng = random.Random(f"limit-{seed}")
    strata: dict[str, list[Prompt]] = {}
    for p in prompts:
        strata.setdefault(str(p.meta.get("stratum", "")), []).append(p)
    if len(strata) == 1:
        return rng.sample(prompts, limit)
    # Largest-remainder allocation keeps each stratum's share.
    quotas = {k: limit * len(v) / len(prompts) for k, v in strata.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: quotas[k] - counts[k], reverse=True)[: limit - sum(counts.values())]:
        counts[k] += 1
    chosen = [p for k in sorted(strata) for p in rng.sample(strata[k], counts[k])]
    rng.shuffle(chosen)
    return chosen

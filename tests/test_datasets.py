"""Answer checking on the shipped data, prompt sampling, and malformed data files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from si_bench import datasets as ds
from si_bench.datasets import DATA_DIR, get_dataset, read_jsonl, sample_prompts
from si_bench.errors import SIBenchError

# ---------- GSM8k ----------

def test_gsm8k_reference_solutions_extract_their_own_answer():
    rows = read_jsonl(DATA_DIR / "gsm8k" / "train.jsonl", ("question", "answer"))[:200]
    prompts = get_dataset("gsm8k").load("train")[:200]
    annotated = 0
    for row, prompt in zip(rows, prompts, strict=True):
        gold = row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
        annotated += "<<" in row["answer"]
        # the raw solution, calculator annotations and all, and the stored (stripped) reference
        for text in (row["answer"], prompt.reference):
            assert ds.extract_number(text) == gold, (text, gold)
            assert get_dataset("gsm8k").check(text, prompt.answer) == (gold, True)
        assert "<<" not in prompt.reference and prompt.answer == gold
    assert annotated > 150  # the annotations really were there to strip


@pytest.mark.parametrize("text, expected", [
    ("She pays 3 * $1,250 = <<3*1250=3750>>$3,750.\nThe answer is $3,750.", "3750"),
    ("3 boxes * 12 = <<3*12=36>>36 eggs, minus 4 is 32.\n#### 32", "32"),
    ("Total: 1,000 + 250 = <<1000+250=1250>>1,250 dollars\n#### $1,250.", "1250"),
    ("It loses <<10-13=-3>>-3 degrees, so -3.", "-3"),
    ("I think it is 7.5.", "7.5"),
])
def test_gsm8k_model_style_answers(text, expected):
    answer, correct = get_dataset("gsm8k").check(text, expected)
    assert answer == expected and correct


def test_gsm8k_wrong_and_missing_answers():
    gsm = get_dataset("gsm8k")
    assert gsm.check("#### 31", "32") == ("31", False)
    assert gsm.check("no number here", "32") == (None, False)
    assert gsm.check("3 * 4 = <<3*4=12>>12", "12") == ("12", True)  # the annotation itself is not the answer
    assert ds.extract_number("<<3*4=12>>") is None


# ---------- MATH (math-verify) ----------

def test_math_reference_boxed_answers_verify():
    math = get_dataset("math")
    failures = [p.prompt_id for p in math.load("test")[:100] if not math.check(p.reference, p.answer)[1]]
    assert failures == []


def test_math500_reference_boxed_answers_verify():
    math500 = get_dataset("math500")
    prompts = math500.load("test")
    assert len(prompts) == 500
    failures = [p.prompt_id for p in prompts if not math500.check(p.reference, p.answer)[1]]
    assert len(failures) <= 2, failures  # at most a stray formatting mismatch in the published set


@pytest.mark.parametrize("predicted, gold, ok", [
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac{1}{2}", "\\frac12", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("0.4", "\\frac{1}{2}", False),
    ("3", "-3", False),
])
def test_math_equivalent_forms(predicted, gold, ok):
    assert get_dataset("math").check(f"so the answer is $\\boxed{{{predicted}}}$.", gold) == (predicted, ok)


def test_math_without_boxed_answer_is_wrong():
    assert get_dataset("math").check("The answer is 2.", "2") == (None, False)
    assert ds.extract_boxed("\\boxed{\\frac{1}{2}} then \\boxed{x^{2}}") == "x^{2}"


# ---------- arith ----------

def test_arith_train_and_test_are_disjoint_and_correct():
    arith = get_dataset("arith")
    train, test = arith.load("train"), arith.load("test")
    assert len(train) > 2000 and len(test) > 400
    assert not {p.question for p in train} & {p.question for p in test}
    for p in train + test:
        assert arith.check(p.reference, p.answer) == (p.answer, True)
        assert eval(p.question.removeprefix("What is ").rstrip("?")) == int(p.answer)  # noqa: S307
    assert arith.check("#### 1000", test[0].answer)[1] is (test[0].answer == "1000")


@pytest.mark.parametrize("split", ["train", "test"])
def test_arith_prompt_ids_are_unique(split):
    prompts = get_dataset("arith").load(split)
    assert len({p.prompt_id for p in prompts}) == len(prompts)


# ---------- sample_prompts ----------

def test_sample_prompts_is_seeded_and_not_the_head():
    prompts = get_dataset("gsm8k").load("test")
    first = sample_prompts(prompts, 20, seed=0)
    assert [p.prompt_id for p in first] == [p.prompt_id for p in sample_prompts(prompts, 20, seed=0)]
    assert {p.prompt_id for p in first} != {p.prompt_id for p in sample_prompts(prompts, 20, seed=1)}
    assert {p.prompt_id for p in first} != {p.prompt_id for p in prompts[:20]}
    assert len({p.prompt_id for p in first}) == 20
    assert sample_prompts(prompts, None, seed=0) == prompts
    with pytest.raises(SIBenchError, match="positive"):
        sample_prompts(prompts, 0, seed=0)


@pytest.mark.parametrize("limit", [50, 137])
def test_sample_prompts_stratified_by_math_subject(limit):
    prompts = get_dataset("math").load("test")
    share = Counter(p.meta["stratum"] for p in prompts)
    chosen = sample_prompts(prompts, limit, seed=3)
    assert len(chosen) == limit and len({p.prompt_id for p in chosen}) == limit
    got = Counter(p.meta["stratum"] for p in chosen)
    for subject, count in share.items():
        assert abs(got[subject] - limit * count / len(prompts)) <= 1, (subject, got[subject])


# ---------- malformed data ----------

def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_bad_json_line_is_named(tmp_path):
    good = json.dumps({"question": "q", "answer": "#### 1"})
    path = _write(tmp_path / "train.jsonl", [good, good, "{not json", good])
    with pytest.raises(SIBenchError, match=r"line 3 is not valid JSON"):
        read_jsonl(path, ("question", "answer"))


def test_missing_field_is_named(tmp_path):
    path = _write(tmp_path / "train.jsonl", [json.dumps({"question": "q", "answer": "#### 1"}),
                                             json.dumps({"question": "q"})])
    with pytest.raises(SIBenchError, match=r"line 2 lacks field\(s\) answer"):
        read_jsonl(path, ("question", "answer"))


def test_missing_file_through_the_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "DATA_DIR", tmp_path)
    with pytest.raises(SIBenchError, match="gsm8k.*missing"):
        get_dataset("gsm8k").load("train")
    (tmp_path / "gsm8k").mkdir()
    _write(tmp_path / "gsm8k" / "train.jsonl", [json.dumps({"question": "q", "answer": "#### 1"}), "", "[oops"])
    with pytest.raises(SIBenchError, match="line 3"):
        get_dataset("gsm8k").load("train")


def test_unknown_split_and_dataset():
    with pytest.raises(SIBenchError, match="no split 'validation'"):
        get_dataset("math500").load("validation")
    with pytest.raises(SIBenchError, match="unknown dataset"):
        get_dataset("mmlu")


def test_non_object_line_is_a_user_error(tmp_path):
    path = _write(tmp_path / "train.jsonl", [json.dumps({"question": "q", "answer": "#### 1"}), "42"])
    with pytest.raises(SIBenchError, match="line 2"):
        read_jsonl(path, ("question", "answer"))

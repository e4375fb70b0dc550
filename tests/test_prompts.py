"""What the model is actually given: --num-fewshot and --apply-chat-template change the rendered prompt."""

from __future__ import annotations

import pytest

from si_bench import lmeval
from si_bench.backends import load_lm
from si_bench.datasets import get_dataset
from si_bench.evaluation import EvalConfig, fewshot_pool, select_prompts
from si_bench.hf_backend import LogprobHFLM
from si_bench.sampling import SampledText
from si_bench.verify import get_verifier, score_candidates


@pytest.fixture(scope="module")
def setup(tiny_model):
    lm = load_lm("hf", tiny_model.path, None, batch_size=8, max_new_tokens=4, seed_base="prompts")
    dataset = get_dataset("arith")
    prompts = select_prompts(EvalConfig(model="tiny-test", dataset="arith", limit=3))
    return lm, prompts, fewshot_pool(dataset)


@pytest.fixture
def contexts(monkeypatch):
    """Record the contexts reaching the sampler instead of sampling."""
    seen: list[str] = []

    def record(self, batch_contexts, gen_kwargs, seeds, report=None):
        seen.extend(batch_contexts)
        return [SampledText(" 1\n#### 1", -1.0, 3) for _ in batch_contexts]

    monkeypatch.setattr(LogprobHFLM, "_sample_batch", record)
    return seen


def render(setup, contexts, *, shots: int, chat: bool) -> list[str]:
    lm, prompts, fewshot = setup
    contexts.clear()
    texts = lmeval.sample_solutions(lm, "arith", prompts, fewshot, n=2, shots=shots, apply_chat_template=chat)
    assert [len(t) for t in texts] == [2] * len(prompts)
    assert len(contexts) == 2 * len(prompts)
    return list(contexts)


def test_num_fewshot_changes_the_prompt(setup, contexts):
    _, prompts, fewshot = setup
    zero = render(setup, contexts, shots=0, chat=False)
    three = render(setup, contexts, shots=3, chat=False)
    assert zero != three
    for context in zero:
        assert "####" not in context and context.startswith("Question: What is") and context.endswith("\nAnswer:")
    for context in three:
        assert context.count("####") == 3 and context.count("Question:") == 4
        for example in fewshot[:3]:  # the first three of the few-shot pool, worked solutions included
            assert f"Question: {example.question}\nAnswer: {example.reference}" in context
    assert {c.rsplit("\n\n", 1)[-1] for c in three} == {c for c in zero}
    assert {f"Question: {p.question}\nAnswer:" for p in prompts} == set(zero)


def test_chat_template_changes_the_prompt(setup, contexts):
    plain = render(setup, contexts, shots=3, chat=False)
    chat = render(setup, contexts, shots=3, chat=True)
    assert not any("<|im_start|>" in c for c in plain)
    for context in chat:
        assert context.startswith("<|im_start|>user\n") and context.endswith("<|im_start|>assistant\n")
        # few-shot examples become earlier turns (fewshot_as_multiturn): 3 answers from the assistant
        assert context.count("<|im_start|>assistant\n") == 4 and context.count("####") == 3
    assert chat != plain


def test_verifier_prompt_holds_the_candidate_and_the_cue(setup, monkeypatch):
    lm, prompts, fewshot = setup
    seen: list[tuple[str, str]] = []

    def record(self, requests, disable_tqdm=False):
        seen.extend(r.args for r in requests)
        return [(-1.0, False) for _ in requests]

    monkeypatch.setattr(LogprobHFLM, "loglikelihood", record)
    candidates = ["5 + 7 = 12\n#### 12", "I believe it is 99"]
    items = [(prompts[0], candidates[0]), (prompts[1], candidates[1])]
    scores = score_candidates(lm, get_verifier("tf"), items, fewshot, shots=2, apply_chat_template=False)
    assert [s for s, _ in scores] == [0.5, 0.5]
    assert len(seen) == 4  # two choices per candidate
    for (prompt, candidate), pair in zip(items, [seen[0:2], seen[2:4]], strict=True):
        assert {cont for _, cont in pair} == {" False", " True"}
        for context, _ in pair:
            assert context.endswith(f"Question: {prompt.question}\nProposed answer: {candidate}\n"
                                    "Is the proposed answer correct? Answer True or False.\nVerdict:")
            assert context.count("Verdict:") == 3  # two few-shot examples and the candidate's own

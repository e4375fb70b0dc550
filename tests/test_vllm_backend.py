"""The vLLM backend end to end on tiny-test, against a fake `vllm` that really samples from the model."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import table_rows

FAKE = Path(__file__).parent / "fake_vllm"


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE))
    _forget_vllm()
    import vllm

    assert Path(vllm.__file__).is_relative_to(FAKE)
    vllm.CALLS.clear()
    yield vllm
    _forget_vllm()


def _forget_vllm():
    """Drop the fake (and the backend module bound to it) so that nothing else sees it."""
    import si_bench

    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.") or m == "si_bench.vllm_backend"]:
        del sys.modules[name]
    if hasattr(si_bench, "vllm_backend"):
        del si_bench.vllm_backend
    from lm_eval.api.registry import model_registry

    if isinstance(model_registry._objs, dict):  # noqa: SLF001 - so that the next import registers afresh
        model_registry._objs.pop("si-vllm", None)  # noqa: SLF001


def test_vllm_backend_end_to_end(fake_vllm, db, tiny_cfg, tiny_model):
    import dataclasses

    from transformers import AutoModelForCausalLM

    from si_bench.backends import load_lm
    from si_bench.datasets import get_dataset
    from si_bench.evaluation import evaluate, fewshot_pool
    from si_bench.verify import get_verifier, score_candidates

    cfg = dataclasses.replace(tiny_cfg, backend="vllm")
    result = evaluate(cfg, db=db)
    P, N = 6, 2
    samples = table_rows(db, "samples", "prompt_id, sample_idx")
    verdicts = table_rows(db, "verdicts", "prompt_id, sample_idx")
    assert len(samples) == P * N and len(verdicts) == P * N and result.generated == P * N
    assert len(table_rows(db, "picks", "prompt_id")) == P

    # The real code path: one LLM, generate() calls with n=N (one vLLM request per prompt, not N).
    calls = fake_vllm.CALLS
    assert [c["model"] for c in calls if c["call"] == "LLM"] == [tiny_model.path]
    sampling = [c for c in calls if c["call"] == "generate" and c["params"][0].prompt_logprobs is None]
    scoring = [c for c in calls if c["call"] == "generate" and c["params"][0].prompt_logprobs is not None]
    assert sampling and scoring
    requests = [(prompt, p, out) for c in sampling
                for prompt, p, out in zip(c["prompts"], c["params"], c["outputs"], strict=True)]
    assert len(requests) == P
    for _, p, out in requests:
        assert p.n == N and len(out.outputs) == N
        assert p.temperature == 1.0 and p.top_p == 1.0 and p.max_tokens == 8 and p.logprobs == 0
        assert "Question:" in p.stop and "<|endoftext|>" not in p.stop
    assert len({p.seed for _, p, _ in requests}) == P  # one seed per prompt

    # Every stored NLL is the fake's own sum of token log-probabilities, and that sum is the model's:
    # recomputed here with an independent forward pass over prompt + sampled tokens.
    model = AutoModelForCausalLM.from_pretrained(tiny_model.path, dtype=torch.float32).eval()
    completions = {}
    for prompt, _, out in requests:
        for c in out.outputs:
            total = sum(e[t].logprob for t, e in zip(c.token_ids, c.logprobs, strict=True))
            assert math.isclose(c.cumulative_logprob, total)
            ids = prompt["prompt_token_ids"] + c.token_ids
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            start = len(prompt["prompt_token_ids"])
            independent = sum(float(logprobs[start + i - 1, t]) for i, t in enumerate(c.token_ids))
            assert abs(independent - c.cumulative_logprob) < 1e-4
            completions.setdefault(c.text, []).append((c.cumulative_logprob, len(c.token_ids)))
    for _, _, _, text, _, _, nll, n_tokens in samples:
        assert nll > 0 and 1 <= n_tokens <= 8
        assert any(abs(-lp - nll) < 1e-5 and n == n_tokens for lp, n in completions[text])

    # The verifier's log-likelihoods equal the HF backend's on the same candidates.
    dataset = get_dataset(cfg.dataset)
    by_id = {p.prompt_id: p for p in dataset.load(cfg.split)}
    items = [(by_id[row[1]], row[3]) for row in samples]
    hf = load_lm("hf", tiny_model.path, None, batch_size=8, max_new_tokens=8, seed_base="x")
    expected = score_candidates(hf, get_verifier("tf"), items, fewshot_pool(dataset), shots=cfg.verifier_shots,
                                apply_chat_template=False)
    stored = [json.loads(row[5])["choice_logliks"] for row in verdicts]
    assert len(stored) == len(expected)
    for got, (_, want) in zip(stored, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_vllm_backend_rejects_truncated_sampling(fake_vllm, tiny_model):
    from si_bench.backends import load_lm
    from si_bench.errors import SIBenchError

    lm = load_lm("vllm", tiny_model.path, None, batch_size=4, max_new_tokens=4, seed_base="x")
    with pytest.raises(SIBenchError, match="top_k 0 and top_p 1"):
        lm._sampling_params({"until": ["\n"], "temperature": 1.0, "top_k": 50}, 2, 0)  # noqa: SLF001 - its check
    assert lm.tokenizer_name and "<|im_start|>" in lm.apply_chat_template([{"role": "user", "content": "hi"}])


def test_vllm_lora_request(fake_vllm, tiny_model, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32, "base_model_name_or_path": tiny_model.path}))
    from si_bench.backends import load_lm

    lm = load_lm("vllm", tiny_model.path, str(tmp_path), batch_size=4, max_new_tokens=4, seed_base="x")
    init = [c for c in fake_vllm.CALLS if c["call"] == "LLM"][-1]
    assert init["enable_lora"] is True and init["max_lora_rank"] == 32
    assert lm.lora_request.lora_path == str(tmp_path)


ENGINE_ARGS = "enable_prefix_caching=true,gpu_memory_utilization=0.5,max_model_len=512,max_num_seqs=64"


def test_backend_args_reach_the_engine(fake_vllm, tiny_cfg, tiny_model):
    import dataclasses

    from si_bench.evaluation import Evaluation

    cfg = dataclasses.replace(tiny_cfg, backend="vllm", backend_args=ENGINE_ARGS)
    evaluation = Evaluation(cfg)
    assert evaluation.lm.max_length == 512
    [init] = [c for c in fake_vllm.CALLS if c["call"] == "LLM"]
    assert init["enable_prefix_caching"] is True and init["gpu_memory_utilization"] == 0.5
    assert init["max_model_len"] == 512 and init["max_num_seqs"] == 64 and init["dtype"] == "float32"
    # Only what may change the numbers enters the generation id: the context length, not the scheduling.
    assert evaluation.settings["backend_args"] == {"max_model_len": 512}
    plain = Evaluation(dataclasses.replace(cfg, backend_args="enable_prefix_caching=true,max_num_seqs=8"))
    assert plain.gen_id == Evaluation(dataclasses.replace(cfg, backend_args=None)).gen_id != evaluation.gen_id


@pytest.mark.parametrize("args, message", [
    ("tensor_paralel_size=2", "did you mean tensor_parallel_size"),
    ("gpu_memory_utilization=most", "takes a float"),
    ("enforce_eager=1", "takes a bool"),
    ("data_parallel_size=2", "one engine per process"),
    ("dtype=float16", "use --dtype"),
    ("max_model_len", "key=value pairs"),
])
def test_bad_backend_args_are_refused_before_any_work(fake_vllm, args, message):
    from si_bench.errors import SIBenchError
    from si_bench.evaluation import EvalConfig

    with pytest.raises(SIBenchError, match=message):
        EvalConfig(model="tiny-test", backend="vllm", backend_args=args)
    assert fake_vllm.CALLS == []


def test_bad_backend_arg_on_the_command_line_writes_nothing(tmp_path, tiny_model):
    import os

    from conftest import run_cli

    db = tmp_path / "si.duckdb"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAKE), os.environ.get("PYTHONPATH")]))}
    result = run_cli("evaluate", "--model", "tiny-test", "--backend", "vllm", "--backend-args",
                     "max_model_len=512,tensor_paralel_size=2", "--limit", "2", "--db", str(db), env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --backend-args") and "tensor_parallel_size" in lines[0]
    assert not db.exists()


def test_a_run_serves_each_rounds_adapter_on_one_engine(fake_vllm, tmp_path, tiny_model):
    from si_bench import store
    from si_bench.api import run
    from si_bench.trainers.config import SelfImproveConfig

    cfg = SelfImproveConfig(model="tiny-test", backend="vllm", mode="regenerate", rounds=1, samples=1, train_prompts=2,
                            test_limit=1, max_new_tokens=3, n_boot=10, train_batch_size=2, batch_size=8)
    db = str(tmp_path / "si.duckdb")
    [run_id] = run(cfg, db=db, workdir=str(tmp_path / "runs"), log=lambda _: None)
    calls = fake_vllm.CALLS
    engines = [c for c in calls if c["call"] == "LLM"]
    assert len(engines) == 1  # the base model is loaded once for the whole run
    assert engines[0]["enable_lora"] is True and engines[0]["max_lora_rank"] == 16
    assert engines[0]["enable_sleep_mode"] is True
    order = [c["call"] for c in calls]
    slept, woke = order.index("sleep"), order.index("wake_up")
    assert order.count("sleep") == order.count("wake_up") == 1 and slept < woke  # asleep while fine-tuning
    step = store.query(db, "SELECT path, hyperparameters FROM checkpoints WHERE run_id = ?", [run_id])
    assert {c["lora_request"] for c in calls[:slept] if c["call"] == "generate"} == {None}
    served = {c["lora_request"].lora_path for c in calls[woke:] if c["call"] == "generate"}
    assert served == {step.path[0]}  # the round's measurement samples from its adapter
    hyper = json.loads(step.hyperparameters[0])
    assert (hyper["device"], hyper["precision"], hyper["gradient_checkpointing"]) == ("cpu", "float32", False)

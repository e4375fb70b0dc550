"""The vLLM backend end to end on tiny-test, against a fake `vllm` that really samples from the model."""

from __future__ import annotations

import json
import math
import re
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


def _sampling_requests(calls: list[dict]) -> dict:
    """What each sampling request asked for, by prompt tokens (and the calls forgotten)."""
    sent = {}
    for c in calls:
        if c["call"] == "generate" and c["params"][0].prompt_logprobs is None:
            for prompt, p in zip(c["prompts"], c["params"], strict=True):
                sent[tuple(prompt["prompt_token_ids"])] = (p.seed, p.n, p.max_tokens, tuple(p.stop))
    calls.clear()
    return sent


def test_vllm_backend_end_to_end(fake_vllm, db, tiny_cfg, tiny_model, tmp_path, monkeypatch):
    import dataclasses

    from transformers import AutoModelForCausalLM

    from si_bench.backends import load_lm
    from si_bench.datasets import get_dataset
    from si_bench.evaluation import Evaluation, evaluate, fewshot_pool
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

    # Resume, the stated guarantee: a resumed evaluation sends each prompt it lacks the uninterrupted run's request
    # (same tokens, seed, n), so under a batch-invariant engine (the fake; vLLM with VLLM_BATCH_INVARIANT=1) it
    # stores exactly the uninterrupted run's samples.
    from si_bench import faults

    uninterrupted = _sampling_requests(calls)
    monkeypatch.setenv("SI_BENCH_FAIL_AT", "sample_chunk:2")
    faults.reset()
    with pytest.raises(faults.InjectedFault):
        evaluate(cfg, db=str(tmp_path / "resumed.duckdb"))
    first = _sampling_requests(calls)
    monkeypatch.delenv("SI_BENCH_FAIL_AT")
    resumed = Evaluation(cfg, db=str(tmp_path / "resumed.duckdb"))
    generated = resumed._sample()  # noqa: SLF001 - the resumed sampling alone (verifying is backend-independent)
    redrawn = _sampling_requests(calls)
    assert resumed.eval_id == result.eval_id and generated == len(redrawn) * N > 0
    assert {**first, **redrawn} == uninterrupted and len(first) + len(redrawn) == P
    assert table_rows(str(tmp_path / "resumed.duckdb"), "samples", "prompt_id, sample_idx") == samples


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
    ("gpu_memory_utilization=most", "takes float"),
    ("enforce_eager=1", "takes bool"),
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


def test_bad_backend_arg_on_the_command_line_writes_nothing(fake_vllm, tmp_path, tiny_model):
    from conftest import run_cli

    db = tmp_path / "si.duckdb"
    result = run_cli("evaluate", "--model", "tiny-test", "--backend", "vllm", "--backend-args",
                     "max_model_len=512,tensor_paralel_size=2", "--limit", "2", "--db", str(db))
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


# ---- the fake is vLLM 0.33's API (tests/fixtures/vllm_api.json, read from the real wheel) ----

SNAPSHOT = json.loads((Path(__file__).parent / "fixtures" / "vllm_api.json").read_text())


@pytest.mark.parametrize("call", [
    lambda v, m: v.LLM(m, swap_space=4),  # an engine argument 0.33 no longer has
    lambda v, m: v.LLM(m, max_lora_rank=24),  # not one of vLLM's LoRA ranks
    lambda v, m: v.LLM(m, max_model_len="long"),
    lambda v, m: v.SamplingParams(stop_token=[1]),
    lambda v, m: v.LLM(m).generate([{"prompt_token_ids": [1, 2]}], v.SamplingParams(), lora=None),
    lambda v, m: v.LLM(m, enable_sleep_mode=True).sleep(level=1, wait=True),
    lambda v, m: __import__("vllm.lora.request").lora.request.LoRARequest("a", 1, "path", rank=8),
])
def test_the_fake_refuses_what_vllm_refuses(fake_vllm, tiny_model, call):
    with pytest.raises((TypeError, ValueError)):
        call(fake_vllm, tiny_model.path)


def test_every_name_the_backend_uses_is_vllms(fake_vllm):
    from si_bench.backends import BACKENDS
    from si_bench.vllm_backend import REFUSED_ARGS, TOP_K_DISABLED, lora_ranks

    pin = re.search(r"^vllm==([\d.]+)", (Path(__file__).parents[1] / "requirements-vllm.txt").read_text(), re.M)
    assert SNAPSHOT["version"].startswith(pin.group(1).rstrip(".")), "regenerate tests/fixtures/vllm_api.json"
    engine = set(SNAPSHOT["EngineArgs"])
    assert set(BACKENDS["vllm"].scheduling) <= engine  # no `swap_space` (gone in 0.33)
    assert {"tokenizer", "data_parallel_size", "max_model_len", "enable_lora", "max_lora_rank"} <= engine
    assert REFUSED_ARGS.keys() - engine <= {"pretrained", "peft", "lora", "device", "batch_size", "max_new_tokens",
                                            "seed_base"}  # si-bench's own settings
    assert {"model_config", "llm_engine"} <= set(SNAPSHOT["LLM"]["attributes"])
    assert {"outputs", "prompt_logprobs"} <= set(SNAPSHOT["RequestOutput"])
    assert {"text", "token_ids", "cumulative_logprob"} <= set(SNAPSHOT["CompletionOutput"])
    assert list(SNAPSHOT["LoRARequest"])[:3] == ["lora_name", "lora_int_id", "lora_path"]  # built positionally
    assert TOP_K_DISABLED == SNAPSHOT["SamplingParams"]["top_k"]["value"]
    assert lora_ranks() == (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's own Literal, read through the fake
    assert [p["name"] for p in SNAPSHOT["LLM"]["generate"]][:2] == ["prompts", "sampling_params"]


def test_the_snapshot_script_reads_a_wheel(tmp_path, monkeypatch):
    """tests/fixtures/vllm_api.py on a tiny stand-in wheel: aliases expanded, defaults followed to their config."""
    import importlib.util
    import zipfile

    spec = importlib.util.spec_from_file_location("vllm_api", Path(__file__).parent / "fixtures" / "vllm_api.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "vllm_api", script)
    spec.loader.exec_module(script)
    files = {
        "vllm/__init__.py": "MODULE_ATTRS = {'LLM': '.entrypoints.llm:LLM'}\n",
        "vllm/_version.py": "__version__ = version = '9.9.9'\n",
        "vllm/config/lora.py": "from typing import Literal\nRanks = Literal[1, 8]\nclass LoRAConfig:\n"
                               "    max_lora_rank: Ranks = 8\n",
        "vllm/config/cache.py": "from pydantic import Field\nclass CacheConfig:\n"
                                "    gpu_memory_utilization: float = Field(default=0.92, gt=0)\n",
        "vllm/engine/arg_utils.py": "from vllm.config.lora import LoRAConfig, Ranks\n"
                                    "from vllm.config.cache import CacheConfig\nfrom typing import Optional\n"
                                    "class EngineArgs:\n    max_lora_rank: Ranks = LoRAConfig.max_lora_rank\n"
                                    "    gpu_memory_utilization: float = get_field(\n"
                                    "        CacheConfig, 'gpu_memory_utilization')\n"
                                    "    max_num_seqs: Optional[int] = None\n",
    }
    wheel = tmp_path / "vllm.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    w, renderer = script.Wheel(str(wheel)), script.Renderer(script.Wheel(str(wheel)))
    fields = script.fields(renderer, w.class_def("vllm.engine.arg_utils", "EngineArgs"))
    assert fields == {"max_lora_rank": {"type": "Literal[1, 8]", "value": 8},
                      "gpu_memory_utilization": {"type": "float", "value": 0.92},
                      "max_num_seqs": {"type": "int | None", "value": None}}


# ---- the five fixes ----

def _requests(contexts: list[str], gen_kwargs: dict) -> list:
    from types import SimpleNamespace

    return [SimpleNamespace(args=(c, dict(gen_kwargs)), doc={"prompt_id": f"p{i}"}, doc_id=i)
            for i, c in enumerate(contexts)]


def test_hf_and_vllm_stop_at_the_same_tokens(fake_vllm, tiny_model, tmp_path):
    """A checkpoint whose generation_config.json lists an extra eos id: both backends stop at the tokenizer's EOS
    alone (greedy, so the two backends' tokens can be compared one for one)."""
    import shutil

    from si_bench.backends import load_lm

    model = tmp_path / "model"
    shutil.copytree(tiny_model.path, model)
    greedy = {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": 8}
    prompts = ["Question: 3 + 4 =", "Question: 12 + 9 ="]
    hf = load_lm("hf", str(model), None, batch_size=8, max_new_tokens=8, seed_base="x")
    before = hf.generate_until(_requests(prompts, greedy))
    first = hf.tok_encode(prompts[0], add_special_tokens=False)
    extra = int(hf.model(torch.tensor([first])).logits[0, -1].argmax())  # the first greedy token
    assert extra != hf.eot_token_id
    config = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": [hf.eot_token_id, extra]}))
    hf = load_lm("hf", str(model), None, batch_size=8, max_new_tokens=8, seed_base="x")
    vllm_lm = load_lm("vllm", str(model), None, batch_size=8, max_new_tokens=8, seed_base="x")
    on_hf, on_vllm = hf.generate_until(_requests(prompts, greedy)), vllm_lm.generate_until(_requests(prompts, greedy))
    assert [(str(t), t.n_tokens) for t in on_hf] == [(str(t), t.n_tokens) for t in before]  # HF: unchanged
    assert [(str(t), t.n_tokens) for t in on_vllm] == [(str(t), t.n_tokens) for t in on_hf]
    assert on_hf[0].n_tokens > 1  # the extra id (its first token) did not stop it
    for a, b in zip(on_hf, on_vllm, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_prompts_fit_vllms_length_limit(fake_vllm, tiny_model):
    """vLLM refuses a prompt of max_model_len tokens: scoring inputs and sampling prompts stay below it."""
    from si_bench.backends import load_lm

    lm = load_lm("vllm", tiny_model.path, None, batch_size=4, max_new_tokens=4, seed_base="x", max_length=24)
    context = lm.tok_encode("Question: " + "1 + 2 + 3 + " * 20)
    assert len(context) > 30
    [(score, _)] = lm._loglikelihood_tokens([(None, context, lm.tok_encode(" 42"))])  # noqa: SLF001 - the path
    [call] = [c for c in fake_vllm.CALLS if c["call"] == "generate"]
    assert len(call["prompts"][0]["prompt_token_ids"]) == 23 and score < 0
    [text] = lm.generate_until(_requests([lm.tok_decode(context)], {"until": ["\n"], "temperature": 1.0}))
    assert len(fake_vllm.CALLS[-1]["prompts"][0]["prompt_token_ids"]) == 24 - 4 and 1 <= text.n_tokens <= 4


@pytest.mark.parametrize("args, message", [
    ("max_model_len=long", "max_model_len takes int"),
    ("max_num_seqs=many", r"max_num_seqs takes int \| None"),
    ("max_lora_rank=24", "max_lora_rank takes one of 1, 8, 16"),
    ("enable_prefix_caching=2", "takes bool"),
    ("kv_cache_memory_bytes=1.5", "takes int"),
    ("gpu_memory_utilization=nan", "takes float"),
])
def test_backend_args_are_checked_against_vllms_types(fake_vllm, args, message):
    from si_bench.errors import SIBenchError
    from si_bench.evaluation import EvalConfig

    with pytest.raises(SIBenchError, match=message):
        EvalConfig(model="tiny-test", backend="vllm", backend_args=args)
    assert fake_vllm.CALLS == []


def test_backend_args_of_the_right_types_pass(fake_vllm):
    from si_bench.evaluation import EvalConfig

    args = "max_lora_rank=1,quantization=awq,distributed_executor_backend=mp,kv_cache_dtype=fp8,cpu_offload_gb=2"
    assert EvalConfig(model="tiny-test", backend="vllm", backend_args=args).backend_kwargs()["max_lora_rank"] == 1


def test_lora_ranks_and_memory_share_are_vllms(fake_vllm, tiny_model, tmp_path):
    from si_bench.backends import load_lm
    from si_bench.vllm_backend import ENGINE, lora_rank_bound

    assert [lora_rank_bound(r) for r in (1, 2, 8, 24, 300, 512)] == [1, 8, 8, 32, 320, 512]
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 1}))
    load_lm("vllm", tiny_model.path, str(tmp_path), batch_size=4, max_new_tokens=4, seed_base="x")
    [init] = [c for c in fake_vllm.CALLS if c["call"] == "LLM"]
    assert init["max_lora_rank"] == 1
    # No memory share unless the user sets one: the engine keeps vLLM's own (LLM's default, 0.92 in 0.33).
    assert "gpu_memory_utilization" not in init and "tensor_parallel_size" not in init
    default = next(p["value"] for p in SNAPSHOT["LLM"]["__init__"] if p["name"] == "gpu_memory_utilization")
    assert ENGINE.llm.engine_args.gpu_memory_utilization == default


def test_child_k_of_a_seeded_request_samples_with_seed_plus_k(fake_vllm, tiny_model):
    """The fake as vLLM (v1/engine/parallel_sampling.py): what the resume guarantee stands on."""
    llm = fake_vllm.LLM(tiny_model.path)
    prompt = {"prompt_token_ids": llm.tokenizer.encode("Question: 3 + 4 =")}
    params = dict(temperature=1.0, max_tokens=6, logprobs=0)
    [together] = llm.generate([prompt], fake_vllm.SamplingParams(n=3, seed=1000, **params))
    alone = [llm.generate([prompt], fake_vllm.SamplingParams(n=1, seed=1000 + k, **params))[0].outputs[0]
             for k in range(3)]
    assert [c.token_ids for c in together.outputs] == [c.token_ids for c in alone]
    assert len({tuple(c.token_ids) for c in alone}) > 1

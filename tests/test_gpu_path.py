"""The GPU path on the CPU: device and dtype choice (CUDA mocked), the device-generic Gumbel noise, bf16 and
gradient checkpointing in fine-tuning, and bench/gpu_check.py at tiny size."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import ROOT
from scipy.stats import chisquare

from si_bench import hf_backend
from si_bench.errors import SIBenchError
from si_bench.evaluation import EvalConfig, Evaluation
from si_bench.hf_backend import CounterNoise, StreamNoise, noise_for
from si_bench.trainers.config import SelfImproveConfig
from si_bench.trainers.sft import training_precision

SMALL = dict(model="tiny-test", dataset="arith", split="test", limit=4, samples=2, max_new_tokens=6, n_boot=10)


@pytest.fixture
def cuda(monkeypatch):
    """torch sees two CUDA devices that support bfloat16 (flip `bf16` to say they do not)."""
    state = {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    return state


# ---------- device and dtype ----------

def test_auto_on_a_cpu_machine_is_todays_placement():
    cfg = EvalConfig(**SMALL)
    assert (cfg.device, cfg.dtype) == ("cpu", "float32") and cfg.engine_identity() == {}
    assert cfg == EvalConfig(**SMALL, device="cpu", dtype="float32")


def test_auto_picks_cuda_in_bfloat16_where_supported(cuda):
    assert (EvalConfig(**SMALL).device, EvalConfig(**SMALL).dtype) == ("cuda", "bfloat16")
    assert EvalConfig(**SMALL, device="cuda:1", dtype="float32").engine_identity() == {"device": "cuda",
                                                                                        "dtype": "float32"}
    assert EvalConfig(**SMALL, device="cpu").dtype == "float32"  # auto never picks bfloat16 on the CPU
    cuda["bf16"] = False
    assert EvalConfig(**SMALL).dtype == "float32"
    with pytest.raises(SIBenchError, match="does not support it"):
        EvalConfig(**SMALL, dtype="bfloat16")


@pytest.mark.parametrize("settings, message", [
    (dict(device="cuda:2"), "torch sees 2 CUDA device"),
    (dict(device="tpu"), "unknown device 'tpu'"),
    (dict(device="cpu", dtype="float16"), "float16 needs a CUDA device"),
    (dict(dtype="int8"), "unknown dtype 'int8'"),
])
def test_impossible_placements_are_refused(cuda, settings, message):
    with pytest.raises(SIBenchError, match=message):
        EvalConfig(**SMALL, **settings)


def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(SIBenchError, match="no CUDA device"):
        EvalConfig(**SMALL, device="cuda")


def test_placement_enters_generation_and_run_ids_only_off_the_cpu(tiny_model, monkeypatch, cuda):
    on_gpu = EvalConfig(**SMALL)
    run_gpu = SelfImproveConfig(model="tiny-test")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_cpu = EvalConfig(**SMALL)
    gpu, cpu = Evaluation(on_gpu), Evaluation(on_cpu)
    assert gpu.gen_id != cpu.gen_id and gpu.eval_id != cpu.eval_id
    assert gpu.settings == {**cpu.settings, "device": "cuda", "dtype": "bfloat16"}
    assert cpu.gen_id == Evaluation(dataclasses.replace(on_cpu, device="cpu", dtype="float32")).gen_id
    run_cpu = SelfImproveConfig(model="tiny-test")
    assert run_gpu.run_id != run_cpu.run_id and run_gpu.hashed() == {**run_cpu.hashed(), "device": "cuda",
                                                                     "dtype": "bfloat16"}
    # A run recorded on the GPU never continues here with numbers of another placement.
    with pytest.raises(SIBenchError, match="no CUDA device"):
        SelfImproveConfig.from_json(run_gpu.to_json())


def test_runs_stored_before_the_option_resume_on_the_cpu():
    cfg = SelfImproveConfig(model="tiny-test", rounds=2, train_prompts=6)
    stored = {k: v for k, v in json.loads(cfg.to_json()).items() if k not in ("device", "dtype")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)  # even on a GPU machine
        patch.setattr(torch.cuda, "device_count", lambda: 1)
        patch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        loaded = SelfImproveConfig.from_json(json.dumps(stored))
    assert (loaded.device, loaded.dtype) == ("cpu", "float32") and loaded.run_id == cfg.run_id


def test_hf_backend_is_loaded_on_the_chosen_device(tiny_model, cuda, monkeypatch):
    seen = {}

    def record(self, *args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop before loading")

    monkeypatch.setattr(hf_backend.HFLM, "__init__", record)
    with pytest.raises(RuntimeError, match="stop before loading"):
        Evaluation(EvalConfig(**SMALL)).lm  # noqa: B018 - the property loads the model
    assert (seen["device"], seen["dtype"], seen["pretrained"]) == ("cuda", "bfloat16", tiny_model.path)


# ---------- Gumbel noise on the model's device ----------

def test_noise_is_drawn_where_the_logits_are():
    assert isinstance(noise_for([1, 2], "cpu"), StreamNoise)  # today's CPU draws, unchanged
    meta = noise_for([1, 2], torch.device("meta"))  # any other device: the counter-based hash, on that device
    assert isinstance(meta, CounterNoise) and meta.uniform(5).device.type == "meta"


def test_counter_noise_samples_the_softmax():
    """Gumbel-max with the hashed uniforms: frequencies over 6,000 rows x 3 steps match softmax(logits / T)."""
    logits, temperature = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0]), 0.8
    noise = CounterNoise(list(range(10_000, 16_000)), "cpu")
    counts = np.zeros(len(logits))
    for _ in range(3):
        picks = (logits / temperature + noise.gumbel(len(logits))).argmax(-1)
        counts += np.bincount(picks.numpy(), minlength=len(logits))
    weights = np.exp(logits.double().numpy() / temperature)
    expected = weights / weights.sum() * counts.sum()
    assert chisquare(counts, expected).pvalue > 1e-3
    uniform = CounterNoise([7], "cpu").uniform(100_000)[0].numpy()
    assert 0 < uniform.min() and uniform.max() < 1 and len(np.unique(uniform)) == len(uniform)
    assert abs(uniform.mean() - 0.5) < 0.005


def test_counter_noise_of_a_row_does_not_depend_on_its_batch():
    batch, alone = CounterNoise([11, 2**55 + 3, 5], "cpu"), CounterNoise([2**55 + 3], "cpu")
    for _ in range(4):
        together, single = batch.gumbel(50), alone.gumbel(50)
        assert torch.equal(together[1], single[0])
        assert not torch.equal(together[0], together[2])
    first, again = CounterNoise([11], "cpu"), CounterNoise([11], "cpu")
    assert torch.equal(first.gumbel(50), again.gumbel(50))  # reproducible from the seed alone
    assert not torch.equal(first.gumbel(50), CounterNoise([11], "cpu").gumbel(50))  # each step draws afresh


def test_device_generic_sampling_in_the_hf_backend(tiny_model, monkeypatch):
    """The GPU's path, run on the CPU: a prompt's samples are the same whatever shares its batch, and carry their
    log-probabilities under the model."""
    from si_bench.backends import load_lm
    from si_bench.datasets import get_dataset
    from si_bench.evaluation import fewshot_pool, select_prompts
    from si_bench.lmeval import sample_solutions

    monkeypatch.setattr(hf_backend, "STREAM_DEVICES", ())
    lm = load_lm("hf", tiny_model.path, None, batch_size=8, max_new_tokens=6, seed_base="x")
    prompts, fewshot = select_prompts(EvalConfig(**SMALL)), fewshot_pool(get_dataset("arith"))

    def sample(chosen):
        return sample_solutions(lm, "arith", chosen, fewshot, n=2, shots=1, apply_chat_template=False)

    together, alone = sample(prompts[:3]), sample(prompts[1:2])
    assert [str(t) for t in together[1]] == [str(t) for t in alone[0]]
    for a, b in zip(together[1], alone[0], strict=True):
        assert a.n_tokens == b.n_tokens and math.isclose(a.logprob, b.logprob, abs_tol=1e-4)
    flat = [t for row in together for t in row]
    assert all(t.logprob < 0 and 1 <= t.n_tokens <= 6 for t in flat) and len({str(t) for t in flat}) > 1


# ---------- fine-tuning ----------

def test_training_precision_follows_the_placement(cuda):
    lora = training_precision(SelfImproveConfig(model="tiny-test"))
    assert lora == {"use_cpu": False, "bf16": True, "fp16": False, "load_dtype": "bfloat16",
                    "precision": "bfloat16 mixed"}
    full = training_precision(SelfImproveConfig(model="tiny-test", lora=False, dtype="float16"))
    assert (full["fp16"], full["load_dtype"]) == (True, "float32")  # float32 master weights
    cpu = training_precision(SelfImproveConfig(model="tiny-test", device="cpu"))
    assert cpu == {"use_cpu": True, "bf16": False, "fp16": False, "load_dtype": "float32", "precision": "float32"}


def test_training_uses_the_named_cuda_device(monkeypatch):
    from si_bench.trainers.sft import use_device

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for device in ("cpu", "cuda", "cuda:1"):
        use_device(device)
    assert chosen == [1]  # plain "cuda" is the current device already (set_device would refuse it)


def test_gradient_checkpointing_is_recorded_and_keeps_out_of_the_run_id(tiny_model, tmp_path):
    from si_bench.models import ModelRef
    from si_bench.trainers.sft import fine_tune

    cfg = SelfImproveConfig(model="tiny-test", gradient_checkpointing=True, train_batch_size=2)
    assert cfg.run_id == SelfImproveConfig(model="tiny-test", train_batch_size=2).run_id
    rows = [{"prompt": "Question: What is 2 + 3?\nAnswer:", "completion": " 5\n\n"}] * 2
    stats = fine_tune(ModelRef("tiny-test", tiny_model.path), rows, tmp_path / "step", cfg, seed=0, epochs=1.0)
    assert stats["gradient_checkpointing"] is True and stats["precision"] == "float32" and stats["device"] == "cpu"
    assert stats["steps"] == 1 and math.isfinite(stats["train_loss"])
    assert (tmp_path / "step" / "adapter_config.json").exists()


# ---------- the prepared GPU check ----------

def test_gpu_check_at_tiny_size(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu_check.json"
    figures = gpu_check.main(["--size", "tiny", "--device", "cpu", "--dtype", "bfloat16", "--prompts", "4",
                              "--samples", "2", "--batch-size", "8", "--max-new-tokens", "8", "--repeats", "1",
                              "--train-batch-size", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures, default=str))
    sampling, tuning = figures["sampling"], figures["fine_tuning"]
    assert sampling["prompts_identical"] is True and sampling["fixed_length"] is True
    assert sampling["plain_token_slots"] == sampling["si_token_slots"] == [4 * 2 * 8]
    assert sampling["ratio"] > 0 and sampling["si_slots_per_s"] > 0 and sampling["plain_slots_per_s"] > 0
    assert (sampling["device"], sampling["dtype"]) == ("cpu", "bfloat16")
    assert tuning["steps"] == 1 and tuning["precision"] == "bfloat16 mixed" and math.isfinite(tuning["train_loss"])
    assert figures["model"]["vocab_size"] == 1024 and figures["environment"]["packages"]["torch"]
    assert gpu_check.ARCHITECTURES["smollm2-135m"]["hidden_size"] == 576

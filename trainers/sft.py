"""One supervised fine-tuning step with trl's SFTTrainer: prompt-completion rows, loss on the completion only.

LoRA by default (the adapter of the previous round is trained further), full fine-tuning as an
option. The run's device and dtype decide the precision (`training_precision`): mixed bfloat16 (or float16)
where the run samples in it, with the frozen base of a LoRA step held in that dtype and every trained weight
in float32; float32 on the CPU by default. Gradient checkpointing is an option. The result is written to a
scratch folder and moved into place atomically, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from si_bench import faults
from si_bench.models import ModelRef
from si_bench.trainers.config import SelfImproveConfig

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


def _callback(progress: Any = None):
    """A trainer callback that reports each optimiser step to `progress` (a "fine-tuning" phase of max_steps) and
    lets the resume tests crash mid-training at a chosen step."""
    from transformers import TrainerCallback

    class Callback(TrainerCallback):
        task = None

        def on_train_begin(self, args, state, control, **kwargs):
            if progress is not None:
                self.task = progress.add_task("fine-tuning", total=state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            if self.task is not None:
                progress.advance(self.task, 1)
            faults.point("train_step")

    return Callback()


def training_precision(cfg: SelfImproveConfig) -> dict:
    """The trainer's precision flags for the run's placement, and the dtype the weights are loaded in."""
    mixed = cfg.dtype in ("bfloat16", "float16")
    return {
        "use_cpu": cfg.placement.kind == "cpu", "bf16": cfg.dtype == "bfloat16", "fp16": cfg.dtype == "float16",
        # A LoRA step trains float32 adapters (peft casts them) over a frozen base, which can stay in the low
        # precision; full fine-tuning keeps float32 master weights and computes in the mixed precision.
        "load_dtype": cfg.dtype if mixed and cfg.lora else "float32",
        "precision": f"{cfg.dtype} mixed" if mixed else "float32",
    }


def use_device(device: str) -> None:
    """The trainer trains on the current CUDA device: make it the run's when the run names one (cuda:N)."""
    import torch

    index = torch.device(device).index
    if device.startswith("cuda") and index is not None:
        torch.cuda.set_device(index)


def _load(parent: ModelRef, cfg: SelfImproveConfig, load_dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(parent.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: PreTrainedModel | PeftModel = AutoModelForCausalLM.from_pretrained(parent.path,
                                                                              dtype=getattr(torch, load_dtype))
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig, PeftModel

        if parent.adapter:
            model = PeftModel.from_pretrained(model, parent.adapter, is_trainable=True)
        else:
            peft_config = LoraConfig(
                r=cfg.lora_r, lora_alpha=cfg.effective_lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                target_modules="all-linear",
            )
    return model, tokenizer, peft_config


def fine_tune(parent: ModelRef, rows: list[dict], target: Path, cfg: SelfImproveConfig, *, seed: int,
              epochs: float | None = None, progress: Any = None) -> dict:
    """Train `parent` on `rows` ({"prompt", "completion"}) and save the new checkpoint at `target`; each optimiser
    step advances a "fine-tuning" phase of `progress`."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(seed)
    precision = training_precision(cfg)
    use_device(cfg.device)
    model, tokenizer, peft_config = _load(parent, cfg, precision["load_dtype"])
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        args = SFTConfig(
            output_dir=str(scratch / "trainer"),
            per_device_train_batch_size=cfg.train_batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            learning_rate=cfg.learning_rate,
            num_train_epochs=epochs if epochs is not None else cfg.epochs_per_round,
            lr_scheduler_type="constant",
            warmup_steps=0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=seed,
            data_seed=seed,
            max_length=1024,
            completion_only_loss=True,
            use_cpu=precision["use_cpu"],
            bf16=precision["bf16"],
            fp16=precision["fp16"],
            # Not activation_checkpointing (5.23's new name): the GPU environment's transformers 5.17-5.20 lacks it.
            gradient_checkpointing=cfg.gradient_checkpointing,
            # Non-reentrant checkpointing needs no input gradients, which a frozen LoRA base would not have.
            gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
            disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
            peft_config=peft_config, callbacks=[_callback(progress)],
        )
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # losses go to the store, not to stdout
        result = trainer.train()
        faults.point("checkpoint_save")
        # the (peft-wrapped) model the trainer was given; transformers types trainer.model as any nn.Module or None
        trainer.model.save_pretrained(scratch / "model")  # type: ignore[union-attr,operator]
        if not cfg.lora:
            tokenizer.save_pretrained(scratch / "model")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(scratch / "model", target)
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        return {"train_loss": float(result.training_loss), "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None, "steps": int(result.global_step),
                "device": cfg.device, "precision": precision["precision"],
                "gradient_checkpointing": cfg.gradient_checkpointing}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def checkpoint_ref(base: ModelRef, path: Path, cfg: SelfImproveConfig) -> ModelRef:
    """The ModelRef of a saved checkpoint: base plus adapter (LoRA) or a full model directory."""
    if cfg.lora:
        return ModelRef(spec=str(path), path=base.path, adapter=str(path))
    return ModelRef(spec=str(path), path=str(path))

"""The runtime every stage shares: threads, seeds, device, and the Trainer's arguments.

Mixed precision, gradient accumulation and DDP/FSDP (torchrun / accelerate launch) come from the
Trainer; this module only sets them from params.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import TrainingArguments, set_seed

from spt.config import RuntimeConfig, TrainingConfig


def configure_runtime(runtime: RuntimeConfig, seed: int) -> None:
    """Fix what changes numbers on CPU (thread count, seeds) and keep inputs read-only.

    ``datasets`` would otherwise write cache files of every map/cast into the dataset's own
    directory, modifying data/processed (a DVC output) from downstream stages.
    """
    datasets.disable_caching()
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    set_seed(seed)


def is_main_process() -> bool:
    """True in the process that writes outputs and logs: rank 0 under torchrun / accelerate launch.

    For use before a Trainer exists; afterwards ``trainer.is_world_process_zero()`` says the same.
    """
    return int(os.environ.get("RANK", "0")) == 0


def use_bf16() -> bool:
    """bf16 mixed precision on a CUDA device that supports it; CPU trains in fp32."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def training_arguments(cfg: TrainingConfig, output_dir: Path, seed: int, runtime: RuntimeConfig,
                       **overrides: Any) -> TrainingArguments:
    """TrainingArguments from a stage's params section; ``overrides`` for stage-specific settings."""
    arguments = dict(
        output_dir=str(output_dir),
        max_steps=cfg.max_steps or -1,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        weight_decay=cfg.weight_decay,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        seed=seed,
        data_seed=seed,
        bf16=use_bf16(),
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=runtime.dataloader_workers,
        report_to="none",  # tracking goes through HistoryCallback: one pattern for every stage
        # Our losses are per-batch means; token averaging across devices would rescale them under DDP
        # (StageTrainer also tells the Trainer so).
        average_tokens_across_devices=False,
        # Every parameter gets a gradient in every step (pretrain_sup overrides this): skip DDP's search.
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
        disable_tqdm=False,
    )
    arguments.update(overrides)
    return TrainingArguments(**arguments)

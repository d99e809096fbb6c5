"""What the throughput benchmarks share: the prepared data, the model source, one timed Trainer run.

Every benchmark trains our setup and the reference in the same process, on the same model
weights, data, seed and number of steps, and prints both figures and their ratio.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.chdir(REPO)  # spt.paths are relative to the repository root
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import Trainer, set_seed  # noqa: E402

from spt import paths  # noqa: E402
from spt.config import Params, load_params  # noqa: E402
from spt.model.source import resolve_model_source  # noqa: E402


def load_setup() -> tuple[Params, str]:
    """params.yaml and the local path of ``model.source``; exits with a hint when data is missing."""
    params = load_params(paths.PARAMS)
    if not paths.LABELED.is_dir() or not paths.CORPUS.is_dir():
        sys.exit(f"benchmark: {paths.PROCESSED} is missing; build it first with `dvc repro prepare` "
                 "(after `source .venv/bin/activate`)")
    source = resolve_model_source(params.model).name_or_path
    if source is None:
        sys.exit("benchmark: model.source is scratch; these benchmarks compare on the pretrained model "
                 "(builtin:all-minilm-l6-v2 by default)")
    torch.set_num_threads(params.runtime.num_threads or torch.get_num_threads())
    return params, source


@dataclass
class Timed:
    """One training run: steps, examples, tokens batched (with / without padding), seconds, mean loss."""

    name: str
    steps: int
    examples: int
    batches: int
    tokens: int
    real_tokens: int
    seconds: float
    training_loss: float
    trainer: Trainer

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds

    @property
    def tokens_per_second(self) -> float:
        """Tokens that are not padding, per second (MLM blocks are full: every token counts)."""
        return self.real_tokens / self.seconds


class _CountingCollator:
    """Wraps a collator and counts the tokens (with and without padding) it batches (workers: 0)."""

    def __init__(self, collator):
        self.collator = collator
        self.batches = self.tokens = self.real_tokens = 0

    def __call__(self, features):
        batch = self.collator(features)
        self.batches += 1
        self.tokens += batch["input_ids"].numel()
        self.real_tokens += int(batch["attention_mask"].sum())
        return batch


def timed_training(name: str, make_trainer, seed: int) -> Timed:
    """Build a Trainer with ``make_trainer(collator_wrapper)`` and time ``trainer.train()``.

    Seeds are set before the model is built, so every run starts from identical weights.
    """
    set_seed(seed)
    trainer = make_trainer(_CountingCollator)
    counter = trainer.data_collator
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    args = trainer.args
    # Counted from the schedule: with DataLoader workers the collator runs in other processes.
    examples = trainer.state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
    print(f"  {name}: {trainer.state.global_step} steps in {seconds:.1f} s", flush=True)
    return Timed(name, trainer.state.global_step, examples, counter.batches, counter.tokens, counter.real_tokens,
                 seconds, result.training_loss, trainer)

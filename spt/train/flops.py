"""FLOPs of training steps, counted by ``torch.utils.flop_counter.FlopCounterMode``.

Training runs count every real step (StageTrainer). This module answers the question before a run:
how many finetuning steps spend a given FLOP budget (the FLOP-matched baseline)? It counts a step
of the real model on the meta device (shapes only, no arithmetic), once per padded width.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def training_step_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward and backward pass of ``model`` on ``batch`` (its loss must be ``.loss``)."""
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    return counter.get_total_flops()


def classifier_step_flops(config: Any) -> Any:
    """A function (rows, width) -> FLOPs of one finetuning step of a sequence classifier of ``config``.

    Counted on the meta device (shapes only). An architecture whose forward reads tensor values
    (DeBERTa-v2's relative positions) cannot run there: it is counted on CPU with all-zero ids,
    the same FLOPs at the cost of real arithmetic, under a forked RNG so training draws are untouched.
    """
    from transformers import AutoModelForSequenceClassification

    def step(device: str, rows: int, width: int) -> int:
        with torch.device(device):
            ids = torch.zeros((rows, width), dtype=torch.long)
            # no attention mask: padding costs the same FLOPs, and the mask's checks read values
            batch = {"input_ids": ids, "labels": torch.zeros(rows, dtype=torch.long)}
        return training_step_flops(models[device], batch)

    models: dict[str, torch.nn.Module] = {}
    with torch.device("meta"):
        models["meta"] = AutoModelForSequenceClassification.from_config(config).train()
    try:
        step("meta", 1, 2)
        device = "meta"
    except RuntimeError:  # e.g. "Tensor.item() cannot be called on meta tensors"
        device = "cpu"
        with torch.random.fork_rng(devices=[]):
            models["cpu"] = AutoModelForSequenceClassification.from_config(config).train()

    @cache
    def flops(rows: int, width: int) -> int:
        with torch.random.fork_rng(devices=[]):
            return step(device, rows, width)

    return flops


def steps_for_flops(budget: float, lengths: list[int], global_batch: int, step_flops: Any) -> int:
    """Finetuning steps whose FLOPs reach ``budget``, with batches padded as length grouping pads them.

    Length-grouped batches hold texts of similar length: the estimate sorts the training texts by
    length, cuts them into global batches, pads each to its longest text and averages the FLOPs of
    a step over those batches. The run itself counts the FLOPs it really spends.
    """
    if budget <= 0 or not lengths:
        return 0
    ordered = sorted(lengths, reverse=True)
    batches = [ordered[start:start + global_batch] for start in range(0, len(ordered), global_batch)]
    mean = sum(step_flops(len(batch), max(batch)) for batch in batches) / len(batches)
    return math.ceil(budget / mean)

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
    """A function (rows, width) -> FLOPs of one finetuning step of a sequence classifier of ``config``."""
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    model.train()

    @cache
    def flops(rows: int, width: int) -> int:
        with torch.device("meta"):
            ids = torch.zeros((rows, width), dtype=torch.long)
            # no attention mask: padding costs the same FLOPs, and the mask's checks read values
            batch = {"input_ids": ids, "labels": torch.zeros(rows, dtype=torch.long)}
        return training_step_flops(model, batch)

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

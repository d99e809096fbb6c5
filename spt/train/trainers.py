"""The Trainers of the training stages, the joint loss, and the callbacks that record a run's history.

:class:`StageTrainer` makes results independent of how a global batch is split over processes and
accumulation steps; :class:`JointLossTrainer` adds L_mlm and lambda(t) * L_supervised, weighed
by ``pretrain_sup.weighting``.
"""

from __future__ import annotations

import contextlib
import csv
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from spt.config import ConfigError, PretrainSupConfig
from spt.model.encoders import IGNORE_INDEX
from spt.outputs import atomic_output
from spt.train.losses import (
    UncertaintyWeights,
    gradcos_gate,
    gradient_agreement,
    joint_loss,
    lambda_at,
    normalized_lambda,
    uncertainty_loss,
    uncertainty_weights,
)


class EpochCallback(TrainerCallback):
    """Tells the masking collator which epoch it is in (its masks are seeded by epoch)."""

    def __init__(self, collator: Any):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: D102
        self.collator.epoch = int(math.floor((state.epoch or 0.0) + 1e-6))


RUNNING_TOTALS = ("flops",)  # logged with every row by StageTrainer


class HeadWarmup(TrainerCallback):
    """For the first ``steps`` optimizer steps only the heads train: the ``encoder`` is frozen.

    A fresh head on a trained encoder sends near-random gradients into it at first; training the head
    alone first avoids that. A frozen parameter gets no gradient, and AdamW skips parameters without
    one (no update, no weight decay). Freezing follows the step number alone, so a resumed run
    freezes exactly as the uninterrupted one did. Parameters frozen before (e.g. the pooler) stay so.
    """

    def __init__(self, encoder: torch.nn.Module, steps: int):
        self.steps = steps
        self.trainable = [parameter for parameter in encoder.parameters() if parameter.requires_grad]

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: D102
        warming_up = state.global_step < self.steps
        for parameter in self.trainable:
            parameter.requires_grad_(not warming_up)


class HistoryCallback(TrainerCallback):
    """Collects every logged value per step; sends it to the tracker and writes DVC plot files."""

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.rows: list[dict[str, float]] = []
        self.training = True
        self._last_time: float | None = None
        self._last_step = 0

    def on_train_end(self, args, state, control, **kwargs):  # noqa: D102
        self.training = False

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102
        # After training, evaluate() re-scores the best checkpoint at the last step: not a new point.
        if not state.is_world_process_zero or not logs or not self.training:
            return
        if not self.rows:
            # A resumed run: the checkpoint's log history holds what was logged before the
            # interruption (the Trainer has just appended this call's entry), so the plots keep it.
            self.rows = [{"step": entry["step"], **{key: float(value) for key, value in entry.items()
                                                   if key != "step" and isinstance(value, (int, float))}}
                         for entry in state.log_history[:-1]]
        values = {key: float(value) for key, value in logs.items() if isinstance(value, (int, float))}
        now = time.perf_counter()
        if "loss" in values and self._last_time is not None and state.global_step > self._last_step:
            steps = state.global_step - self._last_step
            values["examples_per_second"] = (steps * args.per_device_train_batch_size * args.world_size
                                             * args.gradient_accumulation_steps) / (now - self._last_time)
        if "loss" in values:
            self._last_time, self._last_step = now, state.global_step
        self.rows.append({"step": state.global_step, **values})
        self.tracker.log_metrics(values, step=state.global_step)

    def write_plots(self, directory: Path, groups: dict[str, list[str]]) -> None:
        """One CSV per group of metric names (x = step), for ``dvc plots``."""
        with atomic_output(directory) as staging:
            staging.mkdir()
            for name, keys in groups.items():
                # running totals (flops) ride along on every row: they do not make a row belong to a group
                rows = [row for row in self.rows if any(key in row for key in keys if key not in RUNNING_TOTALS)]
                with open(staging / f"{name}.csv", "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=["step", *keys], extrasaction="ignore")
                    writer.writeheader()
                    for row in rows:
                        writer.writerow({key: _round(row.get(key)) for key in ["step", *keys]})


    def log_figures(self, stage: str, groups: dict[str, list[str]]) -> None:
        """The same groups as PNG learning curves, logged to MLflow (not DVC outputs: PNG bytes vary)."""
        if not self.tracker.active:
            return
        from spt.figures import GROUP_FIGURES, learning_curves

        with tempfile.TemporaryDirectory() as scratch:
            for name, keys in groups.items():
                draw = GROUP_FIGURES.get(name, learning_curves)
                path = draw(self.rows, keys, f"{stage}: {name}", Path(scratch) / f"{stage}_{name}.png")
                self.tracker.log_artifact(path, "plots")


def _round(value: float | None) -> float | str:
    return "" if value is None else round(value, 6)


# --------------------------------------------------------------------------------------------
# The Trainer of every stage, and the joint loss


class StageTrainer(Trainer):
    """A Trainer whose results do not depend on how a global batch is split over processes and steps.

    N processes with ``batch_size`` B/N, or one process with B/k and ``gradient_accumulation_steps``
    k, train like one process with B (tests/test_distributed.py):

    - Our models return a per-batch mean loss and ignore ``num_items_in_batch``. A model whose
      ``forward`` takes ``**kwargs`` is assumed by the Trainer to normalise by that count itself,
      so it would skip the division by the accumulation steps and, with
      ``average_tokens_across_devices``, multiply by the number of processes: loss and gradients
      k or N times too large. ``model_accepts_loss_kwargs = False`` says how our models behave.
    - ``group_by_length`` sorts examples by length within "megabatches" of 50 batches, sized from
      the per-process batch; here they are sized from the global batch, so each optimizer step
      sees the same examples whatever the number of processes.

    FLOPs are counted, not estimated: each training step (forward and backward) runs under
    ``torch.utils.flop_counter.FlopCounterMode`` on its real, padded batch, so a second encoder pass,
    a masked-positions-only MLM projection or a frozen encoder count as what they cost. The Trainer
    sums them into ``state.total_flos`` (over processes too), which checkpoints keep; every log row
    carries the running total as ``flops``. Evaluation is not counted.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self._step_flops = 0
        self._uncounted_flops = 0  # diagnostics inside a step that are not training (see JointLossTrainer)

    def training_step(self, model, inputs, num_items_in_batch=None):  # noqa: D102
        self._uncounted_flops = 0
        with FlopCounterMode(display=False) as counter:
            loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_flops = counter.get_total_flops() - self._uncounted_flops
        return loss

    def floating_point_ops(self, inputs) -> int:  # noqa: D102 - the Trainer adds this after each training_step
        return self._step_flops

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:  # noqa: D102
        self.store_flos()  # the running total, summed over processes (log runs on every process)
        if "loss" in logs or any(key.startswith("eval_") for key in logs):  # a curve point, not the run summary
            logs["flops"] = float(self.state.total_flos)
        super().log(logs, start_time)

    def _get_train_sampler(self, train_dataset=None):  # noqa: D102
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            sampler.batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps * max(
                1, self.args.world_size)
        return sampler


class JointLossTrainer(StageTrainer):
    """Trainer of pretrain_sup: L_mlm and L_supervised weighed by ``joint.weighting`` and lambda(t).

    The modes and what lambda(t) means in each are in spt/train/losses.py. Logged (means since
    the last log): ``loss_mlm``, ``loss_supervised``, ``lambda`` and the effective weights
    ``weight_mlm``, ``weight_supervised`` (for gradcos, ``weight_mlm`` is the gate on the encoder).
    At each logging step, for that optimizer step: ``grad_norm_mlm``, ``grad_norm_supervised`` and
    ``grad_cosine``, the two losses' gradients on the shared encoder (``model.base_model``), taken
    with ``torch.autograd.grad`` and summed over the accumulation steps like the real gradient.
    They cost extra backward passes, which are not counted in the FLOPs (except for gradcos, which
    trains with them), and change nothing in the run: the weights are those of a run that does not
    measure them.

    When lambda(t) is 0 the loss is L_mlm in every mode and the supervised term is left out of the
    graph: the classifier gets no gradient and no optimizer update (not even weight decay), which
    makes lambda = 0 a clean control; no gradients are measured then.

    ``uncertainty`` puts its learned log-variances on the model as ``loss_weighting``, so the
    Trainer's checkpoints save and restore them with the weights (an exact resume). They train in a
    parameter group of their own (``uncertainty_learning_rate``, no weight decay), outside the
    gradient norm and its clipping; DDP is told to leave them alone and their gradient is averaged
    over processes here. After training they are taken off (``learned_log_variance`` keeps them), so the
    saved model loads as a plain classifier or masked-LM. ``gradcos`` measures both gradients at
    every step and, once the step's gradient is complete (after DDP has averaged it), replaces the
    encoder's masked-LM part g_mlm by max(0, cos) * g_mlm. Under FSDP (sharded gradients) only
    ``fixed`` and ``normalized`` work, and no gradients are measured.
    """

    def __init__(self, *args: Any, joint: PretrainSupConfig, **kwargs: Any):
        model = kwargs["model"] if "model" in kwargs else args[0]
        if joint.weighting == "uncertainty" and joint.lambda_ > 0:
            model.loss_weighting = UncertaintyWeights()  # before the Trainer places and wraps the model
            # Used outside forward, so DDP (which looks for unused parameters here) would mark it ready
            # twice; it is left to _average_uncertainty_gradient instead.
            model._ddp_params_and_buffers_to_ignore = ["loss_weighting.log_variance"]
        super().__init__(*args, **kwargs)
        if self.is_fsdp_enabled and joint.weighting in ("uncertainty", "gradcos"):
            raise ConfigError(f"pretrain_sup.weighting = {joint.weighting!r} needs whole gradients on every "
                              "process and does not work under FSDP; use fixed or normalized, or DDP")
        self.joint = joint
        self.learned_log_variance: list[float] | None = None
        self._sums = {"loss_mlm": 0.0, "loss_supervised": 0.0, "lambda": 0.0}
        self._count = 0
        self._labeled_count = 0  # micro-batches with a labeled row: L_supervised is their mean, not the zeros between
        self._weight_sums = {"weight_mlm": 0.0, "weight_supervised": 0.0}
        self._weight_steps = 0
        self._step_weights = (1.0, 0.0)
        self._split: dict[str, list[torch.Tensor]] | None = None  # per-loss encoder gradients of this step
        self._gradient_stats: dict[str, float] = {}

    def current_lambda(self) -> float:
        return lambda_at(self.state.global_step, self.state.max_steps, self.joint.lambda_,
                         self.joint.lambda_min, self.joint.lambda_schedule)

    def _uncertainty(self) -> UncertaintyWeights | None:
        return getattr(self.model, "loss_weighting", None)

    def weighted_loss(self, mlm_loss: torch.Tensor, cls_loss: torch.Tensor, lam: float
                      ) -> tuple[torch.Tensor, tuple[float, float]]:
        """The loss to minimise at lambda(t) = ``lam`` > 0, and the effective weights (mlm, supervised)."""
        weighting = self.joint.weighting
        if weighting == "normalized":
            lam = normalized_lambda(lam, self.model.config.vocab_size, self.model.config.num_labels)
        if weighting == "uncertainty":
            weights = self._uncertainty()
            # after train() the module is gone (it is not part of the saved model): the learned values remain
            log_variance = (weights.log_variance if weights is not None else
                            torch.tensor(self.learned_log_variance, device=mlm_loss.device))
            return (uncertainty_loss(mlm_loss, cls_loss, lam, log_variance),
                    uncertainty_weights(lam, log_variance))
        return joint_loss(mlm_loss, cls_loss, lam), (1.0, lam)  # fixed, normalized; gradcos: gated later

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        lam = self.current_lambda()
        if lam == 0.0 and model.training:
            inputs = {key: value for key, value in inputs.items() if key != "clean_input_ids"}  # no classifier pass
        outputs = model(**inputs)
        if lam == 0.0:
            loss, weights = outputs.mlm_loss, (1.0, 0.0)
        else:
            loss, weights = self.weighted_loss(outputs.mlm_loss, outputs.cls_loss, lam)
        if model.training:
            self._step_weights = weights
            if self._split is not None:
                self._measure_gradients(outputs.mlm_loss, outputs.cls_loss)
            self._sums["loss_mlm"] += float(outputs.mlm_loss.detach())
            # a batch of unlabeled corpus text alone (unlabeled_mix_ratio) has no L_supervised: its zero is no loss
            if bool((inputs["labels"] != IGNORE_INDEX).any()):
                self._sums["loss_supervised"] += float(outputs.cls_loss.detach())
                self._labeled_count += 1
            self._sums["lambda"] += lam
            self._count += 1
        return (loss, {"logits": outputs.logits}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):  # noqa: D102
        if self._split is None and self._measures_this_step():
            encoder = [parameter for parameter in self.model.base_model.parameters() if parameter.requires_grad]
            self._split = {"params": encoder, "mlm": [torch.zeros_like(p) for p in encoder],
                           "supervised": [torch.zeros_like(p) for p in encoder]}
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:  # the last micro-batch: the step's gradient is complete
            if self._split is not None:
                self._finish_split()
            self._average_uncertainty_gradient()
            weight_mlm, weight_supervised = self._step_weights
            self._weight_sums["weight_mlm"] += weight_mlm
            self._weight_sums["weight_supervised"] += weight_supervised
            self._weight_steps += 1
        return loss

    def _average_uncertainty_gradient(self) -> None:
        """Under DDP, average the log-variances' gradient over processes, as DDP does for the model's."""
        weights = self._uncertainty()
        if weights is None or self.args.world_size == 1 or weights.log_variance.grad is None:
            return
        torch.distributed.all_reduce(weights.log_variance.grad)
        weights.log_variance.grad.div_(self.args.world_size)

    @contextlib.contextmanager
    def _without_uncertainty_gradient(self):
        """Hide the log-variances' gradient: they are not part of the model's gradient norm or its clipping
        (their gradient, about L - 1/2 per loss, would otherwise dominate both)."""
        weights = self._uncertainty()
        if weights is None:
            yield
            return
        grad, weights.log_variance.grad = weights.log_variance.grad, None
        try:
            yield
        finally:
            weights.log_variance.grad = grad

    def _clip_grad_norm(self, model):  # noqa: D102
        with self._without_uncertainty_gradient():
            return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):  # noqa: D102
        with self._without_uncertainty_gradient():
            return super()._get_grad_norm(model, grad_norm)

    def _measures_this_step(self) -> bool:
        """gradcos: every step; otherwise at the steps that will be logged; never at lambda(t) = 0 or under FSDP."""
        if self.current_lambda() == 0.0 or self.is_fsdp_enabled:
            return False
        if self.joint.weighting == "gradcos":
            return True
        step = self.state.global_step + 1  # the step these micro-batches make (DefaultFlowCallback's rule)
        return (step == 1 and self.args.logging_first_step) or (
            self.args.logging_strategy == "steps" and step % self.state.logging_steps == 0)

    def _measure_gradients(self, mlm_loss: torch.Tensor, cls_loss: torch.Tensor) -> None:
        # Scaled as the Trainer scales the loss it backpropagates, so the sums match the step's gradient.
        scale = 1.0 / self.current_gradient_accumulation_steps
        params = self._split["params"]
        # gradcos trains with these gradients: they are its compute. Otherwise they are only logged,
        # and counting them would hand the FLOP-matched baseline compute SPT never trained with.
        with FlopCounterMode(display=False) as diagnostics:
            for key, loss in (("mlm", mlm_loss), ("supervised", cls_loss)):
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                for total, grad in zip(self._split[key], grads, strict=True):
                    if grad is not None:
                        total.add_(grad, alpha=scale)
        if self.joint.weighting != "gradcos":
            self._uncounted_flops += diagnostics.get_total_flops()

    def _finish_split(self) -> None:
        split, self._split = self._split, None
        if self.args.world_size > 1:  # the global gradients, as DDP averages the real one
            for total in (*split["mlm"], *split["supervised"]):
                torch.distributed.all_reduce(total)
                total.div_(self.args.world_size)
        mlm_norm, supervised_norm, cosine = gradient_agreement(split["mlm"], split["supervised"])
        if self.joint.weighting == "gradcos":
            gate = gradcos_gate(cosine, supervised_norm)
            if gate != 1.0:  # the encoder's gradient holds g_mlm + lambda g_sup: keep gate * g_mlm of it
                for parameter, mlm in zip(split["params"], split["mlm"], strict=True):
                    if parameter.grad is not None:
                        parameter.grad.sub_(mlm, alpha=1.0 - gate)
            self._step_weights = (gate, self._step_weights[1])
        self._gradient_stats = {"grad_norm_mlm": mlm_norm, "grad_norm_supervised": supervised_norm,
                                "grad_cosine": cosine}

    def create_optimizer(self, model=None):  # noqa: D102
        weights = self._uncertainty()
        if weights is None or self.optimizer is not None:
            return super().create_optimizer(model)
        weights.requires_grad_(False)  # out of the model's groups (weight decay, the encoder's rate) ...
        try:
            optimizer = super().create_optimizer(model)
        finally:
            weights.requires_grad_(True)
        # ... into a group of their own; the learning-rate schedule scales it like the others
        optimizer.add_param_group({"params": list(weights.parameters()), "weight_decay": 0.0,
                                   "lr": self.joint.uncertainty_learning_rate})
        return optimizer

    def train(self, *args: Any, **kwargs: Any):  # noqa: D102
        result = super().train(*args, **kwargs)
        weights = self._uncertainty()
        if weights is not None:
            self.learned_log_variance = [float(value) for value in weights.log_variance.detach().cpu()]
            del self.model.loss_weighting  # not part of the saved model (see the class docstring)
        return result

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:  # noqa: D102
        if "loss" in logs and self._count:
            # Every process logs at the same steps: average the parts over processes, as the Trainer
            # does for the total, so they describe the global batch and not rank 0's share of it.
            counts = {"loss_supervised": self._labeled_count}
            means = torch.tensor([value / counts.get(key, self._count) if counts.get(key, self._count) else math.nan
                                  for key, value in self._sums.items()], device=self.args.device)
            logs.update((key, value) for key, value in zip(self._sums, self.accelerator.reduce(
                means, reduction="mean").tolist(), strict=True)
                        if not math.isnan(value))  # no labeled batch: not logged
            self._sums = dict.fromkeys(self._sums, 0.0)
            self._count = self._labeled_count = 0
            # the same on every process: weights follow lambda(t) and the (averaged) gradients
            logs.update({key: value / max(self._weight_steps, 1) for key, value in self._weight_sums.items()})
            self._weight_sums = dict.fromkeys(self._weight_sums, 0.0)
            self._weight_steps = 0
            logs.update(self._gradient_stats)
            self._gradient_stats = {}
        super().log(logs, start_time)


def gathered_weights(trainer: Trainer) -> tuple[Any, dict[str, Any] | None]:
    """The trained model to save and, under FSDP, its full weights; every process must call this.

    FSDP leaves each process a shard of every weight: the full state dict is gathered here (a
    collective, so no process may skip it) and is complete on rank 0, which saves it
    (``save_checkpoint(model, ..., state_dict=...)``). Otherwise: the model, and None (its own weights).
    """
    if not trainer.is_fsdp_enabled:
        return trainer.model, None
    return trainer.accelerator.unwrap_model(trainer.model), trainer.accelerator.get_state_dict(trainer.model)


def last_logged(history: list[dict[str, float]], key: str) -> float | None:
    """The most recent logged value of ``key`` (e.g. the training loss at the last logging step)."""
    return next((row[key] for row in reversed(history) if key in row), None)

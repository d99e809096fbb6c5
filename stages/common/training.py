"""Training with ``transformers.Trainer``: arguments, resumable checkpoints, history, joint loss.

Mixed precision, gradient accumulation, DDP/FSDP (torchrun / accelerate launch) and resuming all
come from the Trainer; this module only sets it up and subclasses it where our losses need
(:class:`StageTrainer`, :class:`JointLossTrainer`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from stages.common.checkpoints import atomic_output
from stages.common.config import PretrainSupConfig, RuntimeConfig, TrainingConfig
from stages.common.losses import joint_loss, lambda_at

FINGERPRINT_FILE = "fingerprint"
COMPLETE_FILE = "checkpoint_complete.json"  # see mark_complete
EPOCH_RNG_FILE = "epoch_rng_state.pt"  # see ReplayEpochOrder


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


# --------------------------------------------------------------------------------------------
# Resumable checkpoints


def resumable_checkpoint(checkpoint_dir: Path, fingerprint: str) -> str | None:
    """The newest complete Trainer checkpoint of a run with this ``fingerprint``, else None.

    A directory left by a run with other params or inputs (another fingerprint) is wiped, so it is
    never resumed; incomplete checkpoints (see :func:`is_complete_checkpoint`) are removed.
    """
    marker = checkpoint_dir / FINGERPRINT_FILE
    if not marker.is_file() or marker.read_text().strip() != fingerprint:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        checkpoint_dir.mkdir(parents=True)
        marker.write_text(fingerprint + "\n")
        return None
    complete = []
    for candidate in checkpoint_dir.glob("checkpoint-*"):
        if is_complete_checkpoint(candidate):
            complete.append(candidate)
        else:
            shutil.rmtree(candidate, ignore_errors=True)
    if not complete:
        return None
    return str(max(complete, key=lambda path: int(path.name.split("-")[1])))


def mark_complete(checkpoint: Path) -> None:
    """Record every file of a finished checkpoint with its size in COMPLETE_FILE (written atomically).

    The Trainer writes model, optimizer, scheduler, RNG state and trainer_state.json one after
    another straight into the checkpoint directory, and deletes old checkpoints file by file: a
    kill can leave a directory that holds trainer_state.json but lacks, or has a truncated, weight
    or optimizer file. Only this record, written once the Trainer has finished, makes it complete.
    """
    checkpoint = Path(checkpoint)
    files = {str(path.relative_to(checkpoint)): path.stat().st_size for path in sorted(checkpoint.rglob("*"))
             if path.is_file() and not path.name.startswith(COMPLETE_FILE)}
    staging = checkpoint / f"{COMPLETE_FILE}.partial"
    staging.write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")
    os.replace(staging, checkpoint / COMPLETE_FILE)


def is_complete_checkpoint(checkpoint: Path) -> bool:
    """True when the Trainer finished saving ``checkpoint`` and every file it wrote is still whole.

    That is: COMPLETE_FILE parses, lists trainer_state.json, and each file it lists exists with the
    recorded size (a checkpoint partly deleted, or truncated, is not complete).
    """
    try:
        files = json.loads((Path(checkpoint) / COMPLETE_FILE).read_text())
        return "trainer_state.json" in files and all(
            (Path(checkpoint) / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, AttributeError):
        return False


def clear_checkpoints(checkpoint_dir: Path) -> None:
    """After a successful run keep only the fingerprint: a rerun must train, not resume the end."""
    for candidate in checkpoint_dir.glob("checkpoint-*"):
        shutil.rmtree(candidate)


# --------------------------------------------------------------------------------------------
# Callbacks


class StageInterrupted(RuntimeError):
    """Training stopped on SIGINT after saving a checkpoint; the next run resumes from it."""


class GracefulInterrupt(TrainerCallback):
    """On SIGINT (Ctrl-C): finish the current step, save a checkpoint, stop; a second SIGINT kills."""

    def __init__(self) -> None:
        self.interrupted_at: int | None = None
        self._requested = False
        self._previous: Any = None

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102
        self._previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum, frame) -> None:
        self._requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        if self._requested and self.interrupted_at is None:
            self.interrupted_at = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):  # noqa: D102
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class MarkCompleteCheckpoints(TrainerCallback):
    """Marks each checkpoint complete (:func:`mark_complete`) once the Trainer has finished saving it."""

    def on_save(self, args, state, control, **kwargs):  # noqa: D102
        # Under DDP every process writes its own RNG state file: list the files once all have.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            mark_complete(checkpoint)


class ReplayEpochOrder(TrainerCallback):
    """A run resumed mid-epoch draws that epoch's data order exactly as the uninterrupted run did.

    Samplers without a seeded generator of their own (``group_by_length``'s LengthGroupedSampler)
    draw an epoch's order from the global torch RNG when the epoch starts. The Trainer restores the
    RNG state saved with a checkpoint only after fast-forwarding the dataloader, so a run resumed
    after the first epoch would draw a new order, skip the wrong batches and train on other data.
    This keeps the RNG state at the start of each epoch in every checkpoint (EPOCH_RNG_FILE) and
    puts it back when the resumed run begins that epoch again. Uninterrupted runs are unchanged.
    """

    def __init__(self, resume_from: str | None):
        self.resume_from = resume_from
        self.epoch_start: dict[str, Any] | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: D102
        epoch = int(math.floor((state.epoch or 0.0) + 1e-6))
        saved = Path(self.resume_from) / EPOCH_RNG_FILE if self.resume_from else None
        self.resume_from = None  # only the first epoch of a resumed run
        if saved is not None and saved.is_file():
            start = torch.load(saved, weights_only=True)
            if start["epoch"] == epoch:  # at an epoch boundary the Trainer's own RNG restore is right
                torch.random.set_rng_state(start["cpu"])
        self.epoch_start = {"epoch": epoch, "cpu": torch.random.get_rng_state()}

    def on_save(self, args, state, control, **kwargs):  # noqa: D102
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir() and self.epoch_start is not None:
            torch.save(self.epoch_start, checkpoint / EPOCH_RNG_FILE)


class EpochCallback(TrainerCallback):
    """Tells the masking collator which epoch it is in (its masks are seeded by epoch)."""

    def __init__(self, collator: Any):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: D102
        self.collator.epoch = int(math.floor((state.epoch or 0.0) + 1e-6))


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
                rows = [row for row in self.rows if any(key in row for key in keys)]
                with open(staging / f"{name}.csv", "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=["step", *keys], extrasaction="ignore")
                    writer.writeheader()
                    for row in rows:
                        writer.writerow({key: _round(row.get(key)) for key in ["step", *keys]})


    def log_figures(self, stage: str, groups: dict[str, list[str]]) -> None:
        """The same groups as PNG learning curves, logged to MLflow (not DVC outputs: PNG bytes vary)."""
        if not self.tracker.active:
            return
        from stages.common.figures import learning_curves

        with tempfile.TemporaryDirectory() as scratch:
            for name, keys in groups.items():
                path = learning_curves(self.rows, keys, f"{stage}: {name}", Path(scratch) / f"{stage}_{name}.png")
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
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False

    def _get_train_sampler(self, train_dataset=None):  # noqa: D102
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            sampler.batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps * max(
                1, self.args.world_size)
        return sampler


class JointLossTrainer(StageTrainer):
    """Trainer whose loss is L = L_mlm + lambda(t) * L_supervised, with lambda(t) from the schedule.

    Logs ``loss_mlm``, ``loss_supervised``, ``lambda`` (means since the last log) beside the total.
    When lambda(t) is 0 the supervised term is left out of the graph: the classifier gets no
    gradient and no optimizer update (not even weight decay), which makes lambda = 0 a clean control.
    """

    def __init__(self, *args: Any, joint: PretrainSupConfig, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.joint = joint
        self._sums = {"loss_mlm": 0.0, "loss_supervised": 0.0, "lambda": 0.0}
        self._count = 0

    def current_lambda(self) -> float:
        return lambda_at(self.state.global_step, self.state.max_steps, self.joint.lambda_,
                         self.joint.lambda_min, self.joint.lambda_schedule)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        outputs = model(**inputs)
        lam = self.current_lambda()
        if lam == 0.0:
            loss = outputs.mlm_loss
        else:
            loss = joint_loss(outputs.mlm_loss, outputs.cls_loss, lam)
        if model.training:
            self._sums["loss_mlm"] += float(outputs.mlm_loss.detach())
            self._sums["loss_supervised"] += float(outputs.cls_loss.detach())
            self._sums["lambda"] += lam
            self._count += 1
        return (loss, {"logits": outputs.logits}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:  # noqa: D102
        if "loss" in logs and self._count:
            # Every process logs at the same steps: average the parts over processes, as the Trainer
            # does for the total, so they describe the global batch and not rank 0's share of it.
            means = torch.tensor([value / self._count for value in self._sums.values()], device=self.args.device)
            logs.update(zip(self._sums, self.accelerator.reduce(means, reduction="mean").tolist()))
            self._sums = dict.fromkeys(self._sums, 0.0)
            self._count = 0
        super().log(logs, start_time)


# --------------------------------------------------------------------------------------------
# The shape every training stage shares


def fingerprint(stage_params: dict[str, Any], input_hashes: dict[str, str]) -> str:
    """Identity of a training run: its params and the hashes of its inputs."""
    payload = json.dumps({"params": stage_params, "inputs": input_hashes}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def train_resumably(trainer: Trainer, checkpoint_dir: Path, run_fingerprint: str) -> dict[str, float]:
    """Train, resuming from this run's last complete checkpoint when there is one.

    Returns the Trainer's run metrics (runtime, throughput: for MLflow, not for DVC files, which
    must be identical from run to run) plus ``resumed_from_step`` and ``world_size`` (processes).
    """
    # Rank 0 alone cleans up the directory (another run's checkpoints, incomplete ones); the other
    # processes look only once it is done, and before training (and so saving) can start without
    # them. With one process wait_for_everyone does nothing.
    resume = resumable_checkpoint(checkpoint_dir, run_fingerprint) if trainer.is_world_process_zero() else None
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        resume = resumable_checkpoint(checkpoint_dir, run_fingerprint)
    if resume:
        logging.getLogger(__name__).info("resuming from %s", resume)
    interrupt = GracefulInterrupt()
    trainer.add_callback(interrupt)
    trainer.add_callback(ReplayEpochOrder(resume))
    trainer.add_callback(MarkCompleteCheckpoints())  # last: lists every file the others saved
    result = trainer.train(resume_from_checkpoint=resume)
    if interrupt.interrupted_at is not None:
        raise StageInterrupted(f"interrupted at step {interrupt.interrupted_at}; checkpoint saved in "
                               f"{checkpoint_dir}. Run `dvc repro` again to resume from it")
    return {**result.metrics, "resumed_from_step": int(resume.rsplit("-", 1)[1]) if resume else 0,
            "world_size": trainer.args.world_size}


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

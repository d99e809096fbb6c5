"""Resumable training: complete checkpoints only, the run's fingerprint, Ctrl-C, replayed epoch order.

A killed or interrupted run resumes from its last complete checkpoint to the same weights as an
uninterrupted run (tests/test_resume.py, tools/kill_trials.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from spt.errors import DiskFullError, StageInterrupted
from spt.hashing import content_sha256
from spt.outputs import (
    disk_full_error,
    format_bytes,
    fsync_directory,
    fsync_tree,
    is_disk_full,
    publish,
)

FINGERPRINT_FILE = "fingerprint"
COMPLETE_FILE = "checkpoint_complete.json"  # see mark_complete
EPOCH_RNG_FILE = "epoch_rng_state.pt"  # see ReplayEpochOrder


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
        problem = checkpoint_problem(candidate)
        if problem is None:
            complete.append(candidate)
        else:
            logging.getLogger(__name__).warning("not resuming %s: %s; removed it", candidate, problem)
            shutil.rmtree(candidate, ignore_errors=True)
    if not complete:
        return None
    return str(max(complete, key=lambda path: int(path.name.split("-")[1])))


def mark_complete(checkpoint: Path) -> None:
    """Record every file of a finished checkpoint with its size and sha256 in COMPLETE_FILE, durably.

    The Trainer writes model, optimizer, scheduler, RNG state and trainer_state.json one after
    another straight into the checkpoint directory, and deletes old checkpoints file by file: a
    kill can leave a directory that holds trainer_state.json but lacks, or has a truncated, weight
    or optimizer file. Only this record, written once the Trainer has finished, makes it complete.
    The Trainer does not fsync: the files are fsynced before they are hashed, and the record is
    published like an output (fsync, rename, fsync the directory; outputs.publish), so after a power
    cut no record vouches for blocks that never reached the disk; the content hashes catch a file
    that did not (right size, wrong bytes), where sizes alone would not.
    """
    checkpoint = Path(checkpoint)
    fsync_tree(checkpoint)
    files = {str(path.relative_to(checkpoint)): {"size": path.stat().st_size, "sha256": content_sha256(path)}
             for path in sorted(checkpoint.rglob("*")) if path.is_file() and not path.name.startswith(COMPLETE_FILE)}
    staging = checkpoint / f"{COMPLETE_FILE}.partial"
    staging.write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")
    publish(staging, checkpoint / COMPLETE_FILE)
    fsync_directory(checkpoint.parent)  # the checkpoint's own name


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` must not be resumed, or None when it is complete and whole.

    Complete and whole: COMPLETE_FILE parses, lists trainer_state.json, and every file it lists exists
    with the recorded size and sha256 (sizes are compared first: cheap, and they catch most faults). A
    record without hashes (written before they were recorded) cannot vouch for the content: not resumed.
    """
    checkpoint = Path(checkpoint)
    try:
        files = json.loads((checkpoint / COMPLETE_FILE).read_text())
    except OSError:
        return f"no {COMPLETE_FILE} (the Trainer had not finished saving it)"
    except ValueError:
        return f"{COMPLETE_FILE} is cut short"
    if not isinstance(files, dict) or "trainer_state.json" not in files:
        return f"{COMPLETE_FILE} lists no trainer_state.json"
    if not all(isinstance(entry, dict) and {"size", "sha256"} <= entry.keys() for entry in files.values()):
        return f"{COMPLETE_FILE} records no content hashes (an older format)"
    for name, entry in sorted(files.items()):
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} holds {path.stat().st_size} bytes, {entry['size']} recorded"
    for name, entry in sorted(files.items()):
        if content_sha256(checkpoint / name) != entry["sha256"]:
            return f"{name} has the recorded size but not the recorded content (sha256): corrupt"
    return None


def is_complete_checkpoint(checkpoint: Path) -> bool:
    """True when the Trainer finished saving ``checkpoint`` and every file it wrote is still whole
    (:func:`checkpoint_problem` finds nothing)."""
    return checkpoint_problem(checkpoint) is None


def clear_checkpoints(checkpoint_dir: Path) -> None:
    """After a successful run keep only the fingerprint: a rerun must train, not resume the end."""
    for candidate in checkpoint_dir.glob("checkpoint-*"):
        shutil.rmtree(candidate)


# --------------------------------------------------------------------------------------------
# Callbacks


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


def checkpoint_bytes(model: Any) -> int:
    """About what a Trainer checkpoint of ``model`` takes on disk: the weights, and AdamW's two moments of the
    same size in the optimizer state (3x the weights; scheduler, RNG and trainer state are small)."""
    return 3 * sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())


def checkpoints_disk_full(trainer: Trainer, checkpoint_dir: Path, error: BaseException) -> DiskFullError:
    """Training stopped on a full disk: remove the checkpoints left half-written (rank 0; they hold the space
    the user must free), keep the complete ones, and say what a checkpoint of this model takes."""
    removed, kept = [], []
    if trainer.is_world_process_zero():
        candidates = checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        for candidate in sorted(candidates, key=lambda path: int(path.name.rsplit("-", 1)[1])):
            if is_complete_checkpoint(candidate):
                kept.append(candidate.name)
            else:
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(candidate.name)
    weights = checkpoint_bytes(trainer.model) // 3
    needed = (f"a checkpoint of this model takes about {format_bytes(3 * weights)} (weights {format_bytes(weights)} "
              "+ optimizer state, about 3x the weights)")
    if removed:
        needed += f"; removed the partial {', '.join(removed)}"
    needed += (f"; {kept[-1]} is complete and kept: the rerun resumes from it" if kept
               else "; no complete checkpoint yet: the rerun starts over")
    return disk_full_error(checkpoint_dir, error, needed)


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
    # A resumed run has validated at step 0 already: once more would add a point the uninterrupted run lacks.
    trainer.args.eval_on_start = trainer.args.eval_on_start and resume is None
    interrupt = GracefulInterrupt()
    trainer.add_callback(interrupt)
    trainer.add_callback(ReplayEpochOrder(resume))
    trainer.add_callback(MarkCompleteCheckpoints())  # last: lists every file the others saved
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except Exception as err:
        if not is_disk_full(err, checkpoint_dir):
            raise
        raise checkpoints_disk_full(trainer, checkpoint_dir, err) from None
    if interrupt.interrupted_at is not None:
        raise StageInterrupted(f"interrupted at step {interrupt.interrupted_at}; checkpoint saved in "
                               f"{checkpoint_dir}. Run `dvc repro` again to resume from it")
    return {**result.metrics, "resumed_from_step": int(resume.rsplit("-", 1)[1]) if resume else 0,
            "world_size": trainer.args.world_size}

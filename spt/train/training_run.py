"""The start and the finish every training stage shares (pretrain_unsup, pretrain_sup, finetune).

Start: the run's identity (params and input hashes -> fingerprint), lineage tags, the history
callback. Finish: on every process, gather the weights (FSDP needs all of them); then on rank 0
alone, in this order: the checkpoint, metrics, plots, figures, clearing the Trainer checkpoints,
the output hash tag. Other processes must not read the outputs while rank 0 writes them. Last,
the metrics go to MLflow.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spt import paths
from spt.hashing import content_sha256
from spt.outputs import atomic_output, write_json
from spt.train.checkpoints import PROVENANCE_FILE, save_checkpoint
from spt.train.resume import (
    clear_checkpoints,
    fingerprint,
    resumable_checkpoint,
    train_resumably,
)
from spt.train.runtime import is_main_process
from spt.train.trainers import HistoryCallback, gathered_weights


@dataclass
class TrainingRun:
    """One run of a training stage: where it writes, what it read, and who it is."""

    stage: str
    study_run: str | None  # a study run's name (study/run.py), None for the main chain
    tracker: Any
    inputs: dict[str, str]  # "data" and "init": the sha256 of data/processed and of the starting checkpoint
    fingerprint: str
    history: HistoryCallback

    @property
    def checkpoints(self) -> Path:
        return paths.checkpoint_dir(self.stage, self.study_run)

    def train(self, trainer: Any) -> dict[str, float]:
        """Train (resuming this run's last complete checkpoint, if any); the Trainer's run metrics."""
        return train_resumably(trainer, self.checkpoints, self.fingerprint)


def begin_training(stage: str, tracker: Any, identity: dict[str, Any], inputs: dict[str, str],
                   data_rows: dict[str, int], study_run: str | None = None,
                   tags: dict[str, str] | None = None, labeled: Path = paths.LABELED) -> TrainingRun:
    """Fingerprint the run from ``identity`` (its params) and ``inputs``, and record its lineage in MLflow:
    tags, and the parts of the data it reads (``data_rows``: part -> rows; labeled parts from ``labeled``)
    as dataset inputs."""
    run_fingerprint = fingerprint(identity, inputs)
    tracker.set_tags({"input_data_sha256": inputs["data"], "input_checkpoint_sha256": inputs["init"],
                      **(tags or {})})
    tracker.log_datasets(paths.dataset_name(), inputs["data"], data_rows, labeled)
    return TrainingRun(stage, study_run, tracker, inputs, run_fingerprint, HistoryCallback(tracker))


def finish_training(run: TrainingRun, trainer: Any, tokenizer: Any, metrics: dict[str, Any],
                    run_metrics: dict[str, Any], plots: dict[str, list[str]], provenance: dict[str, Any]) -> None:
    """Save the model, metrics and plots (rank 0), clear the Trainer checkpoints, log to MLflow."""
    model, weights = gathered_weights(trainer)  # on every process: FSDP gathers the shards
    if trainer.is_world_process_zero():
        output = paths.model_dir(run.stage, run.study_run)
        save_checkpoint(model, tokenizer, output,
                        {"stage": run.stage, **provenance, "fingerprint": run.fingerprint,
                         "data_sha256": run.inputs["data"]},
                        state_dict=weights)
        run.tracker.write_metrics(paths.metrics_file(run.stage, run.study_run), metrics)
        run.history.write_plots(paths.plots_dir(run.stage, run.study_run), plots)
        run.history.log_figures(run.stage, plots)
        clear_checkpoints(run.checkpoints)
        run.tracker.set_tags({"output_checkpoint_sha256": content_sha256(output)})
        write_json(paths.timing_file(run.stage, run.study_run),
                   {key: run_metrics[key] for key in ("train_runtime", "train_samples_per_second", "world_size")
                    if key in run_metrics})
    run.tracker.log_metrics(scalar_metrics({**metrics, **{key: value for key, value in run_metrics.items()
                                                          if isinstance(value, (int, float))}}))


def scalar_metrics(values: dict) -> dict:
    """MLflow takes numbers only: a list (e.g. learned_log_variance) becomes one metric per element,
    key_0, key_1, ...; anything else that is no number is left out."""
    scalars = {}
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            scalars.update({f"{key}_{i}": item for i, item in enumerate(value) if isinstance(item, (int, float))})
        elif isinstance(value, (int, float)):
            scalars[key] = value
    return scalars


def reuse_identical_run(run: TrainingRun, twins: tuple[str, ...] = ()) -> bool:
    """A study run identical to the main chain's run of its stage (same params, seed and inputs, so the
    same fingerprint) copies the main chain's outputs instead of training again; so does one identical to
    a study run named in ``twins`` that is already there (a setting of the sweep equal to the spt arm's
    own is the spt arm's run). True if it copied. Its MLflow run logs the copied metrics, tagged ``reused_from``.

    Under torchrun every process decides the same; only rank 0 copies.
    """
    if run.study_run is None:
        return False
    for source in (None, *twins):  # None: the main chain
        if _fingerprint(paths.model_dir(run.stage, source)) == run.fingerprint:
            break
    else:
        return False
    if is_main_process():
        for kind in (paths.model_dir, paths.plots_dir):
            with atomic_output(kind(run.stage, run.study_run)) as staging:
                shutil.copytree(kind(run.stage, source), staging)
        with atomic_output(paths.metrics_file(run.stage, run.study_run)) as staging:
            shutil.copyfile(paths.metrics_file(run.stage, source), staging)
        if paths.timing_file(run.stage, source).is_file():  # what the copied run took
            with atomic_output(paths.timing_file(run.stage, run.study_run)) as staging:
                shutil.copyfile(paths.timing_file(run.stage, source), staging)
        resumable_checkpoint(run.checkpoints, run.fingerprint)  # as a trained run leaves it
        copied = paths.metrics_file(run.stage, run.study_run)
        run.tracker.set_tags({"reused_from": str(paths.model_dir(run.stage, source))})
        run.tracker.wrote_metrics(copied)
        run.tracker.log_metrics(scalar_metrics(json.loads(copied.read_text())))
    return True


def _fingerprint(model_dir: Path) -> str | None:
    """The fingerprint a training stage recorded in its checkpoint's provenance; None if there is none."""
    provenance = model_dir / PROVENANCE_FILE
    return json.loads(provenance.read_text()).get("fingerprint") if provenance.is_file() else None

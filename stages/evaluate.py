"""evaluate: the finetuned classifier on the held-out test split (the only stage that reads it).

Reads:  models/finetune/ (loaded with plain transformers), data/processed/labeled (test split).
Writes: metrics/evaluate.json (accuracy, macro_f1, ece, per-class precision/recall/F1, confusion
        matrix), plots/evaluate/ (confusion.csv: one row per test example, actual vs predicted;
        per_class.csv: per-class scores).
Params: seed, runtime, evaluate.

As a study run (`--arm A --seed N`, the study_evaluate and study_evaluate_matched stages) it reads
models/study/<A>-<N>/ and writes metrics/study/<A>-<N>/evaluate.json and
plots/study/<A>-<N>/evaluate/ instead; only the main chain's classifier is registered in MLflow.
A setting of the sweep (`--arm spt --seed N --weighting W --lambda L`, the study_sweep_evaluate
stage) is run spt-W-lL-N likewise; compare reads its test scores only if it chose that setting on
validation.

As a floor (`--arm tfidf` or `--arm embeddings`, no seed: the study_floors stage) it trains
no network: logistic regression on TF-IDF features of the texts, or on model.source's frozen
mean-pooled embeddings, with C chosen on the validation split (study/floors.py), then scores
the test split the same way and writes metrics/study/<A>/evaluate.json and plots/study/<A>/evaluate/.
Params: model, runtime, evaluate, floors. With model.source scratch there is no pretrained encoder to
embed with, so the embeddings floor is skipped: its evaluate.json says why and its CSVs hold no rows.

On the label-budget curve (`--arm A --seed N --labels-per-class B`: study_budget_evaluate,
study_budget_evaluate_matched, study_budget_floors) run A-nB-N is scored on the same test split; a floor
fits on data/budgets/nB-N's labels and chooses C on its validation split.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np

from spt import paths
from spt.outputs import atomic_output
from stages.cli import run_stage

STAGE = "evaluate"
MODEL = "finetune"


def predict(model_dir: Path, test, batch_size: int) -> np.ndarray:
    """Logits of the test examples, in order, from the checkpoint as plain transformers loads it.

    Batches of ``batch_size`` texts of similar lengths (``length_order``), padded to their longest
    text; the logits come back in the split's order. No Trainer (its import alone takes seconds),
    as a user's own inference loop would run it.
    """
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
    )

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(str(model_dir)))
    from spt.data.tokenization import length_order

    rows = test.select_columns(["input_ids"])
    order = length_order(rows)
    logits = np.zeros((len(rows), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            indices = order[start:start + batch_size]
            logits[indices] = model(**collate([rows[int(i)] for i in indices])).logits.float().numpy()
    return logits


def write_plots(report: dict, labels: np.ndarray, predictions: np.ndarray, label_names: list[str],
                directory: Path) -> None:
    with atomic_output(directory) as staging:
        staging.mkdir()
        with open(staging / "confusion.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["actual", "predicted"])
            writer.writerows((label_names[a], label_names[p]) for a, p in zip(labels, predictions, strict=True))
        with open(staging / "per_class.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["label", "metric", "value"])
            for name, scores in report["per_class"].items():
                for metric in ("precision", "recall", "f1"):
                    writer.writerow([name, metric, round(scores[metric], 6)])


def main(params, run=None) -> None:
    """Score the main chain's classifier (``run`` None) or a study run's (a :class:`study.run.Run`), or fit a floor."""
    from study.arms import FLOOR_ARMS
    from study.run import name_of, study_tags

    if run is not None and run.arm in FLOOR_ARMS:
        evaluate_floor(params, run)
        return
    import datasets
    from transformers import AutoConfig

    from spt.hashing import content_sha256
    from spt.metrics import classification_report
    from spt.tracking import tracked_run
    from spt.train.checkpoints import verify_checkpoint
    from spt.train.runtime import configure_runtime

    name = name_of(run)
    configure_runtime(params.runtime, params.seed)
    model_dir = paths.model_dir(MODEL, name)
    with tracked_run(STAGE, params, study_run=name) as tracker:
        model_hash = verify_checkpoint(model_dir, MODEL if run is None else None)
        tracker.set_tags({"input_checkpoint_sha256": model_hash, **study_tags(run)})
        test = datasets.load_from_disk(str(paths.LABELED))["test"]
        tracker.log_datasets(paths.dataset_name(), content_sha256(paths.PROCESSED), {"test": len(test)})
        logits = predict(model_dir, test, params.evaluate.batch_size)
        id2label = AutoConfig.from_pretrained(str(model_dir)).id2label
        label_names = [id2label[i] for i in range(logits.shape[1])]
        labels = np.asarray(test["label"])
        report = classification_report(labels, logits, label_names, params.evaluate.ece_bins)
        report["test_examples"] = len(test)
        tracker.write_metrics(paths.metrics_file(STAGE, name), report)
        write_plots(report, labels, logits.argmax(axis=1), label_names, paths.plots_dir(STAGE, name))
        headline = {key: report[key] for key in ("accuracy", "macro_f1", "ece")}
        tracker.log_metrics(headline)
        tracker.log_dict(report, "evaluate.json")
        if run is None:  # the main chain is the pipeline's result: compare it, register it
            tracker.log_to_parent({f"test_{key}": value for key, value in headline.items()})
            log_figures_and_model(tracker, report, label_names, model_dir, params)


SCRATCH_SKIP = ("model.source is scratch: there is no pretrained encoder whose frozen embeddings could be a "
                "floor (a randomly initialised one is none); set model.source to a pretrained model to run it")


def floor_features(params, floor: str, labeled) -> tuple[dict | None, dict]:
    """The floor's feature matrices per split and what they came from; None when the floor is skipped."""
    from study import floors

    if floor == "tfidf":
        return floors.tfidf_features({split: list(labeled[split]["text"]) for split in labeled}), {}
    from transformers import AutoModel, AutoTokenizer

    from spt.errors import ModelError
    from spt.model.source import resolve_model_source
    from spt.train.runtime import configure_runtime

    source = resolve_model_source(params.model)
    if source.name_or_path is None:
        return None, {"skipped": SCRATCH_SKIP}
    configure_runtime(params.runtime, seed=0)  # threads; nothing here is random (inference only)
    tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
    encoder = AutoModel.from_pretrained(source.name_or_path)
    if len(tokenizer) > encoder.config.vocab_size:
        raise ModelError(f"the tokenizer in {paths.TOKENIZER} has {len(tokenizer)} tokens but model.source "
                         f"'{params.model.source}' has vocab_size {encoder.config.vocab_size}; rerun "
                         "`dvc repro prepare` so both come from the same model.source")
    # the texts as prepare tokenized them for every arm (model.source's tokenizer, prepare.max_length)
    features = {split: floors.embed(encoder, list(labeled[split]["input_ids"]), tokenizer.pad_token_id,
                                    params.evaluate.batch_size) for split in labeled}
    return features, {"model": source.provenance}


def evaluate_floor(params, run) -> None:
    """A floor without pretraining (``--arm tfidf|embeddings``): fit, choose C on validation, score test
    (on the labels-per-class curve: fit on that point's labels)."""
    from spt.data.tokenization import load_labeled
    from spt.hashing import data_sha256
    from spt.metrics import classification_report
    from spt.tracking import tracked_run
    from study.floors import choose_and_predict

    floor, name = run.arm, run.name
    with tracked_run(STAGE, params, study_run=name) as tracker:
        tracker.set_tags(run.tags())
        labeled = load_labeled(run.labeled)
        test = labeled["test"]
        tracker.log_datasets(paths.dataset_name(), data_sha256(run.labeled),
                             {split: len(labeled[split]) for split in labeled}, run.labeled)
        label_names = paths.label_names()
        features, provenance = floor_features(params, floor, labeled)
        if features is None:
            tracker.write_metrics(paths.metrics_file(STAGE, name), {"floor": floor, **provenance})
            write_plots({"per_class": {}}, np.zeros(0, dtype=int), np.zeros(0, dtype=int), label_names,
                        paths.plots_dir(STAGE, name))
            tracker.set_tags({"skipped": provenance["skipped"]})
            return
        grid = params.floors.c_grid
        fit = choose_and_predict(features, list(labeled["train"]["label"]), list(labeled["validation"]["label"]),
                                 grid, len(label_names), standardize=floor == "embeddings")
        labels = np.asarray(test["label"])
        report = classification_report(labels, fit.test_log_probabilities, label_names, params.evaluate.ece_bins)
        report["test_examples"] = len(test)
        report.update(floor=floor, c=fit.c, c_grid=list(grid), features=int(features["train"].shape[1]),
                      validation_macro_f1={f"{c:g}": score for c, score in fit.validation_macro_f1.items()},
                      **provenance)
        tracker.write_metrics(paths.metrics_file(STAGE, name), report)
        write_plots(report, labels, fit.test_log_probabilities.argmax(axis=1), label_names,
                    paths.plots_dir(STAGE, name))
        tracker.log_metrics({**{key: report[key] for key in ("accuracy", "macro_f1", "ece")}, "c": fit.c})
        tracker.log_dict(report, "evaluate.json")


def log_figures_and_model(tracker, report: dict, label_names: list[str], model_dir: Path, params) -> None:
    """Confusion-matrix PNG, and the classifier in MLflow's transformers flavour, registered as a new
    version of ``tracking.registered_model`` (``mlflow.pyfunc.load_model`` then predicts)."""
    if not tracker.active:
        return
    from spt.figures import confusion_matrix
    from spt.tracking import log_classifier

    with tempfile.TemporaryDirectory() as scratch:
        tracker.log_artifact(confusion_matrix(report["confusion_matrix"], label_names, "test set",
                                              Path(scratch) / "confusion_matrix.png"), "plots")

    tracker.guard("log_model", lambda: log_classifier(model_dir, params.tracking.registered_model))


if __name__ == "__main__":
    run_stage(__doc__, main, STAGE, study=True)

"""finetune: sequence-classification finetuning with early stopping on validation macro-F1.

Reads:  models/<finetune.init_from>/ (pretrain_sup by default; pretrain_unsup is the standard
        recipe), data/processed (labeled train and validation splits, label map).
Writes: models/finetune/ (the architecture's ...ForSequenceClassification; `pipeline("text-classification",
        model="models/finetune")` loads it), metrics/finetune.json (best validation scores),
        plots/finetune/ (training loss, validation curves), checkpoints/finetune/ (resume).
Params: seed, runtime, finetune.

As a study run (`--arm spt|tapt|baseline|baseline_matched|baseline_flops --seed N`: the
study_finetune, study_baseline and study_matched stages) it writes to models/study/<arm>-<seed>/,
metrics/study/<arm>-<seed>/finetune.json and plots/study/<arm>-<seed>/finetune/ instead;
see stages/compare.py. spt and tapt start from models/study/<arm>-<seed>/pretrain_sup. The matched
baselines also read metrics/study/spt-<seed>/pretrain_sup.json: the examples (or FLOPs) SPT's
pretraining spent are added to their finetuning budget.
As a setting of the sweep (`--arm spt --seed N --weighting W --lambda L`, the study_sweep_finetune
stage) it finetunes models/study/spt-W-lL-N/pretrain_sup and writes under spt-W-lL-N likewise;
metrics/study/spt-W-lL-N/finetune.json holds the best validation macro-F1 that compare chooses by.
As a run of the label-budget curve (`--arm A --seed N --labels-per-class B`: study_budget_finetune,
study_budget_baseline, study_budget_matched) it trains on data/budgets/nB-N's labels and validates on its
validation split, starting from models/study/A-nB-N/pretrain_sup for spt and tapt, and writes under A-nB-N.

The classifier head trained in pretrain_sup is carried over when its label map matches and it was
trained (lambda > 0 at some step); from pretrain_unsup it starts fresh. Batches are padded
dynamically and grouped by length.
"""

from __future__ import annotations

import json
from pathlib import Path

from spt import paths
from stages.cli import run_stage

STAGE = "finetune"
PLOTS = {"loss": ["loss", "learning_rate", "flops"],
         "validation": ["eval_accuracy", "eval_macro_f1", "eval_loss", "flops"]}


def load_classifier(init_dir: str, label_map: dict) -> tuple[object, bool]:
    """The model to finetune, and whether a trained classifier head came with it."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from spt.train.checkpoints import PROVENANCE_FILE

    id2label = {int(k): v for k, v in label_map["id2label"].items()}
    init_config = AutoConfig.from_pretrained(init_dir)
    provenance = json.loads((Path(init_dir) / PROVENANCE_FILE).read_text())
    carried = ((init_config.architectures or [""])[0].endswith("ForSequenceClassification")
               and init_config.label2id == label_map["label2id"] and bool(provenance.get("classifier_trained")))
    model = AutoModelForSequenceClassification.from_pretrained(
        init_dir, num_labels=len(id2label), id2label=id2label, label2id=label_map["label2id"])
    return model, carried


def best_validation(log_history: list[dict], best_step: int) -> dict:
    """The validation scores logged at ``best_step``, the checkpoint that training ends with.

    ``load_best_model_at_end`` reloads the best checkpoint; its scores are already in the log, so
    they are read there instead of validating it a second time.
    """
    return next(entry for entry in log_history if "eval_macro_f1" in entry and entry["step"] == best_step)


def main(params, run=None) -> None:
    """Finetune the main chain's model (``run`` None) or a study run's (a :class:`study.run.Run`)."""
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
    )

    from spt.config import section_dict
    from spt.data.tokenization import by_length, load_labeled
    from spt.hashing import data_sha256
    from spt.metrics import classification_scores
    from spt.tracking import tracked_run
    from spt.train.checkpoints import verify_checkpoint
    from spt.train.runtime import configure_runtime, training_arguments
    from spt.train.trainers import StageTrainer
    from spt.train.training_run import (
        begin_training,
        finish_training,
        reuse_identical_run,
    )
    from study.arms import PRETRAINED_ARMS, finetune_settings
    from study.run import name_of, study_tags, twins

    labeled = paths.LABELED if run is None else run.labeled
    seed = params.seed if run is None else run.seed
    cfg, init_dir = finetune_settings(params, run, lambda: [len(ids) for ids in load_labeled(labeled)["train"]
                                                            ["input_ids"]])
    configure_runtime(params.runtime, seed)
    with tracked_run(STAGE, params, system_metrics=True, study_run=name_of(run)) as tracker:
        # spt's and tapt's own pretraining is a matrix stage's output: plain `dvc repro` reruns it when it changed
        init_hash = verify_checkpoint(init_dir, None if run is not None and run.arm in PRETRAINED_ARMS
                                      else cfg.init_from)
        label_map = json.loads(paths.LABEL_MAP.read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
        splits = load_labeled(labeled)
        train = splits["train"].select_columns(["input_ids", "label"])
        validation = by_length(splits["validation"]).select_columns(["input_ids", "label"])  # pads little
        training = begin_training(STAGE, tracker, {"seed": seed, "runtime": section_dict(params.runtime),
                                                   STAGE: section_dict(cfg)},
                                  {"data": data_sha256(labeled), "init": init_hash},
                                  {"train": len(train), "validation": len(validation)}, name_of(run),
                                  tags={"init_from": cfg.init_from, **study_tags(run)}, labeled=labeled)
        tracker.log_params({"study.arm": "main" if run is None else run.arm, "study.seed": seed,
                            "finetune.effective_max_steps": cfg.max_steps})
        # identical to the main chain's run: copied; a setting of the sweep equal to the spt arm's own setting
        # also copies the spt arm's run of its seed, when that is there already
        if reuse_identical_run(training, twins(run)):
            return

        model, carried = load_classifier(str(init_dir), label_map)
        callbacks = [training.history]
        if cfg.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        trainer = StageTrainer(
            model=model,
            args=training_arguments(
                cfg, training.checkpoints, seed, params.runtime,
                eval_strategy="steps", eval_steps=cfg.save_steps, eval_on_start=True, load_best_model_at_end=True,
                metric_for_best_model="macro_f1", greater_is_better=True,
                train_sampling_strategy="group_by_length", remove_unused_columns=True),
            train_dataset=train, eval_dataset=validation,
            data_collator=DataCollatorWithPadding(tokenizer),
            callbacks=callbacks,
            compute_metrics=lambda p: classification_scores(p.label_ids, p.predictions.argmax(axis=-1)),
        )
        # Step 0 is validated but has no checkpoint, and the Trainer ranks only the validations it
        # checkpointed: keep the starting weights, and take them back if no step beats them (a
        # classifier pretrain_sup trained may already be the best there is).
        initial = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        run_metrics = training.train(trainer)
        best_step = trainer.state.best_global_step
        if best_step is None or best_validation(trainer.state.log_history, 0)["eval_macro_f1"] >= \
                trainer.state.best_metric:
            model.load_state_dict(initial)
            best_step = 0
        del initial
        evaluation = best_validation(trainer.state.log_history, best_step)  # the weights now loaded
        metrics = {
            "val_accuracy": evaluation["eval_accuracy"],
            "val_macro_f1": evaluation["eval_macro_f1"],
            "val_loss": evaluation["eval_loss"],
            "best_step": best_step,
            "steps": trainer.state.global_step,
            "flops": trainer.state.total_flos,  # counted on the real batches (StageTrainer)
            "max_steps": trainer.state.max_steps,
            "classifier_carried_over": carried,
        }
        finish_training(training, trainer, tokenizer, metrics, run_metrics, PLOTS,
                        # no study-run name: a study run copied from the main chain has the same bytes
                        {"init": str(init_dir), "init_sha256": init_hash})


if __name__ == "__main__":
    run_stage(__doc__, main, STAGE, study=True)

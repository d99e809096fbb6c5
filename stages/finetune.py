"""finetune: sequence-classification finetuning with early stopping on validation macro-F1.

Reads:  models/<finetune.init_from>/ (pretrain_sup by default; pretrain_unsup is the standard
        recipe), data/processed (labeled train and validation splits, label map).
Writes: models/finetune/ (BertForSequenceClassification; `pipeline("text-classification",
        model="models/finetune")` loads it), metrics/finetune.json (best validation scores),
        plots/finetune/ (training loss, validation curves), checkpoints/finetune/ (resume).
Params: seed, runtime, finetune.

The classifier head trained in pretrain_sup is carried over when its label map matches; from
pretrain_unsup it starts fresh. Batches are padded dynamically and grouped by length.
"""

from __future__ import annotations

import json

import datasets
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          EarlyStoppingCallback, Trainer)

from stages.common import paths
from stages.common.checkpoints import save_checkpoint, verify_checkpoint, write_json
from stages.common.cli import run_stage
from stages.common.config import Params, section_dict
from stages.common.data import content_sha256
from stages.common.metrics import classification_scores
from stages.common.tracking import stage_run
from stages.common.training import (HistoryCallback, clear_checkpoints, configure_runtime, fingerprint,
                                    train_resumably, training_arguments)

STAGE = "finetune"
PLOTS = {"loss": ["loss", "learning_rate"], "validation": ["eval_accuracy", "eval_macro_f1", "eval_loss"]}


def load_classifier(init_dir: str, label_map: dict) -> tuple[object, bool]:
    """The model to finetune, and whether a trained classifier head came with it."""
    id2label = {int(k): v for k, v in label_map["id2label"].items()}
    init_config = AutoConfig.from_pretrained(init_dir)
    carried = (init_config.architectures or [""])[0].endswith("ForSequenceClassification") and \
        init_config.label2id == label_map["label2id"]
    model = AutoModelForSequenceClassification.from_pretrained(
        init_dir, num_labels=len(id2label), id2label=id2label, label2id=label_map["label2id"])
    return model, carried


def main(params: Params) -> None:
    cfg = params.finetune
    configure_runtime(params.runtime, params.seed)
    init_dir = paths.model_dir(cfg.init_from)
    with stage_run(STAGE, params, ["seed", "runtime", STAGE], system_metrics=True) as tracker:
        init_hash = verify_checkpoint(init_dir, cfg.init_from)
        label_map = json.loads(paths.LABEL_MAP.read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
        splits = datasets.load_from_disk(str(paths.LABELED))
        train, validation = (splits[name].select_columns(["input_ids", "label"]) for name in ("train", "validation"))
        inputs = {"data": content_sha256(paths.PROCESSED), "init": init_hash}
        run_fingerprint = fingerprint({"seed": params.seed, "runtime": section_dict(params.runtime),
                                       STAGE: section_dict(cfg)}, inputs)
        tracker.set_tags({"input_data_sha256": inputs["data"], "input_checkpoint_sha256": init_hash,
                          "init_from": cfg.init_from})

        model, carried = load_classifier(str(init_dir), label_map)
        history = HistoryCallback(tracker)
        callbacks = [history]
        if cfg.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        trainer = Trainer(
            model=model,
            args=training_arguments(
                cfg, paths.checkpoint_dir(STAGE), params.seed, params.runtime,
                eval_strategy="steps", eval_steps=cfg.save_steps, load_best_model_at_end=True,
                metric_for_best_model="macro_f1", greater_is_better=True,
                train_sampling_strategy="group_by_length", remove_unused_columns=True),
            train_dataset=train, eval_dataset=validation,
            data_collator=DataCollatorWithPadding(tokenizer),
            callbacks=callbacks,
            compute_metrics=lambda p: classification_scores(p.label_ids, p.predictions.argmax(axis=-1)),
        )
        run_metrics = train_resumably(trainer, paths.checkpoint_dir(STAGE), run_fingerprint)
        evaluation = trainer.evaluate()  # the best checkpoint, reloaded at the end of training
        best_step = int(trainer.state.best_global_step or trainer.state.global_step)
        metrics = {
            "val_accuracy": evaluation["eval_accuracy"],
            "val_macro_f1": evaluation["eval_macro_f1"],
            "val_loss": evaluation["eval_loss"],
            "best_step": best_step,
            "steps": trainer.state.global_step,
            "classifier_carried_over": carried,
        }
        if trainer.is_world_process_zero():
            save_checkpoint(trainer.model, tokenizer, paths.model_dir(STAGE),
                            {"stage": STAGE, "init": str(init_dir), "init_sha256": init_hash,
                             "fingerprint": run_fingerprint, "data_sha256": inputs["data"]})
            write_json(paths.metrics_file(STAGE), metrics)
            history.write_plots(paths.plots_dir(STAGE), PLOTS)
            history.log_figures(STAGE, PLOTS)
            clear_checkpoints(paths.checkpoint_dir(STAGE))
        tracker.set_tags({"output_checkpoint_sha256": content_sha256(paths.model_dir(STAGE))})
        tracker.log_metrics({**metrics, **{k: v for k, v in run_metrics.items() if isinstance(v, (int, float))}})


if __name__ == "__main__":
    run_stage(__doc__, main)

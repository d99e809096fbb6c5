"""pretrain_sup: supervised pretraining, L = L_mlm + lambda(t) * L_supervised.

Reads:  models/pretrain_unsup/ (the encoder and its MLM head), data/processed (labeled train
        texts, packed unlabeled corpus, tokenizer, label map).
Writes: models/pretrain_sup/ (one encoder, two heads: loads as BertForSequenceClassification or
        BertForMaskedLM with plain transformers), metrics/pretrain_sup.json (validation accuracy
        and macro-F1 of the classifier head, final losses), plots/pretrain_sup/ (L_mlm,
        L_supervised, lambda(t) and their sum per step), checkpoints/pretrain_sup/ (resume).
Params: seed, runtime, pretrain_sup.

Every training example is masked for the MLM loss; labeled train texts also carry their class
(the supervised loss), unlabeled corpus blocks, drawn with probability unlabeled_mix_ratio, do
not. With lambda = 0 the classifier head gets no gradient and learns nothing: the control run.
"""

from __future__ import annotations

import dataclasses
import json

import datasets
from transformers import AutoTokenizer

from stages.common import paths
from stages.common.checkpoints import save_checkpoint, verify_checkpoint, write_json
from stages.common.cli import run_stage
from stages.common.collators import MaskingCollator
from stages.common.config import Params, section_dict
from stages.common.data import content_sha256
from stages.common.metrics import classification_scores
from stages.common.model import IGNORE_INDEX, BertForSupervisedPretraining
from stages.common.tracking import stage_run
from stages.common.training import (EpochCallback, HistoryCallback, JointLossTrainer, clear_checkpoints,
                                    configure_runtime, fingerprint, gathered_weights, last_logged,
                                    train_resumably, training_arguments)

STAGE = "pretrain_sup"
PLOTS = {"loss": ["loss", "loss_mlm", "loss_supervised", "learning_rate"], "lambda": ["lambda"]}
INIT = "pretrain_unsup"


def training_mixture(labeled: datasets.Dataset, corpus: datasets.Dataset, mix_ratio: float, seed: int
                     ) -> datasets.Dataset:
    """Labeled train texts mixed with unlabeled blocks (label -100) at ``mix_ratio``, with example ids.

    The mixture ends when the labeled texts are used up, so one epoch is one pass over the labels.
    """
    labeled = labeled.select_columns(["input_ids", "label"])
    if mix_ratio > 0:
        unlabeled = corpus.select_columns(["input_ids"])
        unlabeled = unlabeled.add_column("label", [IGNORE_INDEX] * len(unlabeled)).cast(labeled.features)
        labeled = datasets.interleave_datasets([labeled, unlabeled], probabilities=[1 - mix_ratio, mix_ratio],
                                               seed=seed, stopping_strategy="first_exhausted")
    return labeled.add_column("example_id", list(range(len(labeled))))


def main(params: Params) -> None:
    cfg = params.pretrain_sup
    configure_runtime(params.runtime, params.seed)
    with stage_run(STAGE, params, ["seed", "runtime", STAGE], system_metrics=True) as tracker:
        init_hash = verify_checkpoint(paths.model_dir(INIT), INIT)
        label_map = json.loads(paths.LABEL_MAP.read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
        splits = datasets.load_from_disk(str(paths.LABELED))
        train = training_mixture(splits["train"], datasets.load_from_disk(str(paths.CORPUS)),
                                 cfg.unlabeled_mix_ratio, params.seed)
        validation = splits["validation"].select_columns(["input_ids", "label"])
        validation = validation.add_column("example_id", list(range(len(validation))))
        inputs = {"data": content_sha256(paths.PROCESSED), "init": init_hash}
        run_fingerprint = fingerprint({"seed": params.seed, "runtime": section_dict(params.runtime),
                                       STAGE: section_dict(cfg)}, inputs)
        tracker.set_tags({"input_data_sha256": inputs["data"], "input_checkpoint_sha256": init_hash})

        model = BertForSupervisedPretraining.from_pretrained(
            str(paths.model_dir(INIT)), num_labels=len(label_map["label2id"]),
            id2label={int(k): v for k, v in label_map["id2label"].items()}, label2id=label_map["label2id"])
        collator = MaskingCollator(tokenizer, cfg.mlm_probability, params.seed, cfg.whole_word_masking,
                                   mlm_key="mlm_labels")
        history = HistoryCallback(tracker)
        trainer = JointLossTrainer(
            model=model, joint=cfg,
            args=training_arguments(cfg, paths.checkpoint_dir(STAGE), params.seed, params.runtime,
                                    label_names=["labels"],
                                    # with lambda(t) = 0 the classifier is outside the graph
                                    ddp_find_unused_parameters=True),
            train_dataset=train, eval_dataset=validation, data_collator=collator,
            callbacks=[EpochCallback(collator), history],
            compute_metrics=lambda p: classification_scores(p.label_ids, p.predictions.argmax(axis=-1)),
        )
        run_metrics = train_resumably(trainer, paths.checkpoint_dir(STAGE), run_fingerprint)
        # Judge the classifier head on clean (unmasked) validation text, as finetuning will see it.
        trainer.data_collator = dataclasses.replace(collator, mlm_probability=0.0, epoch=0)
        evaluation = trainer.evaluate()
        metrics = {
            "val_accuracy": evaluation["eval_accuracy"],
            "val_macro_f1": evaluation["eval_macro_f1"],
            **{f"{key}_last": last_logged(history.rows, key)
               for key in ("loss", "loss_mlm", "loss_supervised", "lambda")},
            "train_examples": len(train),
            "steps": trainer.state.global_step,
        }
        model, weights = gathered_weights(trainer)  # on every process: FSDP gathers the shards
        if trainer.is_world_process_zero():
            save_checkpoint(model, tokenizer, paths.model_dir(STAGE),
                            {"stage": STAGE, "init": str(paths.model_dir(INIT)), "init_sha256": init_hash,
                             "fingerprint": run_fingerprint, "data_sha256": inputs["data"]},
                            state_dict=weights)
            write_json(paths.metrics_file(STAGE), metrics)
            history.write_plots(paths.plots_dir(STAGE), PLOTS)
            history.log_figures(STAGE, PLOTS)
            clear_checkpoints(paths.checkpoint_dir(STAGE))
            # Only here: another process would read the directory while rank 0 writes it.
            tracker.set_tags({"output_checkpoint_sha256": content_sha256(paths.model_dir(STAGE))})
        tracker.log_metrics({**metrics, **{k: v for k, v in run_metrics.items() if isinstance(v, (int, float))}})


if __name__ == "__main__":
    run_stage(__doc__, main)

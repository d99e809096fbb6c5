"""pretrain_sup: supervised pretraining, L = L_mlm + lambda(t) * L_supervised (weighed as ``weighting`` says).

Reads:  models/pretrain_unsup/ (the encoder, its pooler and MLM head), data/processed (labeled
        train texts, packed unlabeled corpus, tokenizer, label map).
Writes: models/pretrain_sup/ (one encoder, two heads: loads as the architecture's
        ...ForSequenceClassification or ...ForMaskedLM with plain transformers),
        metrics/pretrain_sup.json (validation accuracy and macro-F1 of the classifier head, final
        losses and weights, plateau_exit_step: the first logging step at which L_supervised fell below
        90% of the class entropy, i.e. the classifier left the majority-class plateau),
        plots/pretrain_sup/ (L_mlm, L_supervised, lambda(t) and their sum per step; the gradients
        of both losses on the encoder, their cosine and the effective weights),
        checkpoints/pretrain_sup/ (resume).
Params: seed, runtime, pretrain_sup.

As a study run (`--arm spt|tapt --seed N`, the study_pretrain stage) it writes to
models/study/<arm>-<seed>/pretrain_sup/ and the matching metrics and plots; tapt is the same
budget and schedule with lambda = 0: masked-LM on the same texts without their labels (task-adaptive
pretraining), the arm that separates what the labels add from what more masked-LM adds.
As a setting of the sweep (`--arm spt --seed N --weighting W --lambda L`, the study_sweep_pretrain
stage) it is the spt arm's run with pretrain_sup.weighting and pretrain_sup.lambda replaced by W and L,
everything else equal, and writes to models/study/spt-W-lL-N/pretrain_sup/ (metrics and plots alike).
As a run of the label-budget curve (`--arm spt|tapt --seed N --labels-per-class B`, study_budget_pretrain)
it trains on the task's train texts as the full set's run does, but only data/budgets/nB-N's B per class
carry their labels: they make up study.labeled_share of the examples (cycled), the other train texts the
rest, masked-LM only (task_mixture); it writes to models/study/<arm>-nB-N/pretrain_sup/.

Every training example is masked for L_mlm; labeled train texts also carry their class for
L_supervised, which by default (``supervised_input: clean``) reads the unmasked text, as finetuning
and the test set will. Unlabeled corpus blocks, drawn with probability unlabeled_mix_ratio, count
for L_mlm only. With lambda = 0 the classifier head gets no gradient and learns nothing: the control.
"""

from __future__ import annotations

import json

from spt import paths
from stages.cli import run_stage

STAGE = "pretrain_sup"
PLOTS = {"loss": ["loss", "loss_mlm", "loss_supervised", "learning_rate", "flops"], "lambda": ["lambda"],
         # why a lambda works or fails: the two gradients on the encoder and the weights applied
         "weighting": ["grad_norm_mlm", "grad_norm_supervised", "grad_cosine", "weight_mlm", "weight_supervised"]}
INIT = "pretrain_unsup"
# The classifier has left the majority-class plateau once L_supervised is below this share of the class entropy
PLATEAU_FRACTION = 0.9


def training_mixture(labeled, corpus, mix_ratio: float, seed: int):
    """Labeled train texts mixed with unlabeled blocks (label -100) at ``mix_ratio``, with example ids.

    The mixture ends when the labeled texts are used up, so one epoch is one pass over the labels.
    """
    labeled = labeled.select_columns(["input_ids", "label"])
    if mix_ratio > 0:
        labeled = mix_unlabeled(labeled, corpus, mix_ratio, seed, "first_exhausted")
    return labeled.add_column("example_id", list(range(len(labeled))))


def task_mixture(labeled, unlabeled, labeled_share: float, seed: int):
    """A budget's train texts for pretrain_sup: its few labeled texts, cycled, as ``labeled_share`` of the examples,
    and the other train texts without their labels (label -100: masked-LM only) as the rest. The mixture ends when
    both have been read, so every other train text is read once per epoch, as in the full set's run, and the
    labeled texts sit in most batches (the texts are alike in length: length grouping does not part them)."""
    labeled = labeled.select_columns(["input_ids", "label"])
    if labeled_share == 1 or len(unlabeled) == 0:
        return labeled
    return mix_unlabeled(labeled, unlabeled, 1 - labeled_share, seed, "all_exhausted")


def mix_unlabeled(labeled, unlabeled, unlabeled_share: float, seed: int, stopping_strategy: str):
    """``labeled`` (input_ids, label) interleaved with ``unlabeled``'s input_ids, labeled -100 (masked-LM only), as
    ``unlabeled_share`` of the examples; ``stopping_strategy`` as datasets.interleave_datasets takes it."""
    import datasets

    from spt.model.encoders import IGNORE_INDEX

    unlabeled = unlabeled.select_columns(["input_ids"])
    unlabeled = unlabeled.add_column("label", [IGNORE_INDEX] * len(unlabeled)).cast(labeled.features)
    return datasets.interleave_datasets([labeled, unlabeled], probabilities=[1 - unlabeled_share, unlabeled_share],
                                        seed=seed, stopping_strategy=stopping_strategy)


def plateau_exit_step(rows: list[dict], labels: list[int], fraction: float = PLATEAU_FRACTION) -> int | None:
    """The first logging step at which L_supervised (its mean over the logging window) fell below ``fraction`` of
    the entropy of the training labels' class distribution: the cross-entropy of always predicting that
    distribution, the majority-class plateau a classifier sits on before it learns anything from the text.
    None when it never did within the run (or the classifier did not train: lambda = 0)."""
    import numpy as np

    counts = np.bincount(np.asarray(labels, dtype=int))
    shares = counts[counts > 0] / counts.sum()
    threshold = fraction * float(-(shares * np.log(shares)).sum())
    return next((int(row["step"]) for row in rows if row.get("loss_supervised") is not None
                 and row.get("lambda", 1.0) > 0 and row["loss_supervised"] < threshold), None)


def main(params, run=None) -> None:
    """Pretrain the main chain (``run`` None) or a study run's arm (a :class:`study.run.Run`: spt or tapt)."""
    import dataclasses

    import datasets
    from transformers import AutoTokenizer

    from spt.config import section_dict
    from spt.data.tokenization import by_length, load_labeled
    from spt.hashing import data_sha256
    from spt.metrics import classification_scores
    from spt.model.encoders import EncoderForSupervisedPretraining
    from spt.tracking import tracked_run
    from spt.train.checkpoints import verify_checkpoint
    from spt.train.collators import MaskingCollator
    from spt.train.runtime import configure_runtime, training_arguments
    from spt.train.trainers import EpochCallback, JointLossTrainer, last_logged
    from spt.train.training_run import (
        begin_training,
        finish_training,
        reuse_identical_run,
    )
    from study.arms import pretrain_sup_settings
    from study.run import name_of, study_tags, twins

    cfg = pretrain_sup_settings(params.pretrain_sup, run)
    seed = params.seed if run is None else run.seed
    labeled_dir = paths.LABELED if run is None else run.labeled
    curve_point = run is not None and run.labels_per_class is not None
    configure_runtime(params.runtime, seed)
    with tracked_run(STAGE, params, system_metrics=True, study_run=name_of(run)) as tracker:
        init_hash = verify_checkpoint(paths.model_dir(INIT), INIT)
        label_map = json.loads(paths.LABEL_MAP.read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
        splits = load_labeled(labeled_dir)
        labeled = splits["train"] if not curve_point else \
            task_mixture(splits["train"], splits["unlabeled"], params.study.labeled_share, seed)
        train = training_mixture(labeled, datasets.load_from_disk(str(paths.CORPUS)), cfg.unlabeled_mix_ratio, seed)
        validation = by_length(splits["validation"]).select_columns(["input_ids", "label"])  # pads little
        validation = validation.add_column("example_id", list(range(len(validation))))
        training = begin_training(STAGE, tracker, {"seed": seed, "runtime": section_dict(params.runtime),
                                                   STAGE: section_dict(cfg)},
                                  {"data": data_sha256(labeled_dir), "init": init_hash},
                                  {"train": len(splits["train"]), "validation": len(validation),
                                   **({"unlabeled": len(splits["unlabeled"])} if curve_point else {}),
                                   **({"corpus": len(train) - len(labeled)} if cfg.unlabeled_mix_ratio else {})},
                                  name_of(run),
                                  # the setting this run trained with (a sweep's or tapt's, not params.yaml's)
                                  tags={**study_tags(run), "weighting": cfg.weighting, "lambda": str(cfg.lambda_)},
                                  labeled=labeled_dir)
        tracker.log_params({"study.arm": "main" if run is None else run.arm, "study.seed": seed,
                            "pretrain_sup.effective_lambda": cfg.lambda_,
                            "pretrain_sup.effective_weighting": cfg.weighting})
        # identical to the main chain's run: copied; a setting of the sweep equal to the spt arm's own setting
        # also copies the spt arm's run of its seed, when that is there already
        if reuse_identical_run(training, twins(run)):
            return

        model = EncoderForSupervisedPretraining.from_pretrained(
            str(paths.model_dir(INIT)), num_labels=len(label_map["label2id"]),
            id2label={int(k): v for k, v in label_map["id2label"].items()}, label2id=label_map["label2id"])
        collator = MaskingCollator(tokenizer, cfg.mlm_probability, seed, cfg.whole_word_masking,
                                   mlm_key="mlm_labels",
                                   clean_key="clean_input_ids" if cfg.supervised_input == "clean" else None)
        trainer = JointLossTrainer(
            model=model, joint=cfg,
            args=training_arguments(cfg, training.checkpoints, seed, params.runtime, label_names=["labels"],
                                    # with lambda(t) = 0 the classifier is outside the graph
                                    ddp_find_unused_parameters=True,
                                    # batches of similar lengths pad little: each encoder pass costs less
                                    train_sampling_strategy="group_by_length"),
            train_dataset=train, eval_dataset=validation, data_collator=collator,
            callbacks=[EpochCallback(collator), training.history],
            compute_metrics=lambda p: classification_scores(p.label_ids, p.predictions.argmax(axis=-1)),
        )
        run_metrics = training.train(trainer)
        # Judge the classifier head on clean (unmasked) validation text, as finetuning will see it.
        trainer.data_collator = dataclasses.replace(collator, mlm_probability=0.0, epoch=0, clean_key=None)
        evaluation = trainer.evaluate()
        metrics = {
            "val_accuracy": evaluation["eval_accuracy"],
            "val_macro_f1": evaluation["eval_macro_f1"],
            **{f"{key}_last": last_logged(training.history.rows, key)
               for key in ("loss", "loss_mlm", "loss_supervised", "lambda", "weight_mlm", "weight_supervised")},
            **({"learned_log_variance": trainer.learned_log_variance} if trainer.learned_log_variance else {}),
            # how soon the classifier learned anything: the first logging step below the plateau (null: never)
            "plateau_exit_step": plateau_exit_step(training.history.rows, splits["train"]["label"]) if cfg.lambda_ > 0
            else None,
            "train_examples": len(train),
            "steps": trainer.state.global_step,
            "flops": trainer.state.total_flos,  # counted on the real batches (StageTrainer)
            # what a compute-matched baseline matches: steps x examples per optimizer step
            "global_batch_size": trainer.args.train_batch_size * trainer.args.gradient_accumulation_steps
            * trainer.args.world_size,
        }
        finish_training(training, trainer, tokenizer, metrics, run_metrics, PLOTS,
                        {"init": str(paths.model_dir(INIT)), "init_sha256": init_hash,
                         # lambda(t) starts at lambda: with lambda = 0 the classifier never trained
                         "classifier_trained": cfg.lambda_ > 0})


if __name__ == "__main__":
    run_stage(__doc__, main, STAGE, study=True)

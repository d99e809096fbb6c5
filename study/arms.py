"""The study's arms and what each changes in a stage's settings.

Every arm starts from the shared pretrain_unsup checkpoint:
  spt: pretrain_sup (lambda > 0) then finetune;  tapt: pretrain_sup's budget with lambda = 0 (masked-LM
  on the same texts, no labels) then finetune;  baseline: finetune alone, the same steps;
  baseline_matched: finetune given as many extra examples as SPT's pretrain_sup trained on;
  baseline_flops: finetune given as many extra FLOPs as SPT's pretrain_sup spent.
Floors need no pretraining and no training seed (study/floors.py), and evaluate scores them:
  tfidf: TF-IDF + logistic regression;  embeddings: logistic regression on the source model's frozen
  mean-pooled embeddings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from spt import paths

PRETRAINED_ARMS = ("spt", "tapt")
BASELINE_ARMS = ("baseline", "baseline_matched", "baseline_flops")
ARMS = PRETRAINED_ARMS + BASELINE_ARMS
MATCHED_ARMS = BASELINE_ARMS[1:]  # optional: study.matched_baselines lists the ones that run
CONTROL_ARMS = ("tapt", *MATCHED_ARMS)  # optional (study.pretrained_controls, study.matched_baselines)
FLOOR_ARMS = ("tfidf", "embeddings")
# the arms each stage module runs as (``--arm``)
ARMS_OF = {"pretrain_sup": PRETRAINED_ARMS, "finetune": ARMS, "evaluate": ARMS + FLOOR_ARMS}


def study_arms(study) -> list[str]:
    """The arms a study runs, in report order: spt, tapt (when ``study.pretrained_controls`` lists it), baseline,
    then ``study.matched_baselines``."""
    return ["spt", *study.pretrained_controls, "baseline",
            *(arm for arm in MATCHED_ARMS if arm in study.matched_baselines)]


# The pretrain_sup keys tapt reads (dvc.yaml's study_tapt declares exactly these): at lambda = 0 the loss is L_mlm
# whatever the weighting, and the classifier is left out of the graph, so lambda, its schedule, the weighting and
# the classifier's input are moot; tapt fixes them (TAPT_FIXED) and does not rerun when they change.
TAPT_KEYS = ("max_steps", "epochs", "batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_ratio",
             "weight_decay", "save_steps", "logging_steps", "mlm_probability", "whole_word_masking",
             "unlabeled_mix_ratio")
TAPT_FIXED = {"lambda": 0.0, "lambda_min": 0.0, "lambda_schedule": "constant", "weighting": "fixed",
              "supervised_input": "clean"}


def pretrain_sup_settings(cfg, run):
    """pretrain_sup's section for ``run`` (None: the main chain, as params.yaml says): tapt reads :data:`TAPT_KEYS`
    and has lambda = 0 (:data:`TAPT_FIXED`); a setting of the sweep replaces the weighting and lambda."""
    from spt.config import PretrainSupConfig

    if run is None:
        return cfg
    if run.arm == "tapt":
        return PretrainSupConfig.model_validate({**{key: getattr(cfg, key) for key in TAPT_KEYS}, **TAPT_FIXED})
    if run.setting is not None:
        cfg = cfg.swept(run.setting.weighting, run.setting.lambda_)
    return cfg


def finetune_settings(params, run, train_lengths=None):
    """The finetune section and starting checkpoint of the main chain (``run`` None) or a study run.

    spt and tapt start from their own pretraining run (same seed, setting and labels per class), the
    baselines from pretrain_unsup: baseline with the same steps, baseline_matched with as many extra examples
    as SPT's pretrain_sup trained on, baseline_flops with as many extra FLOPs as it spent (same seed and labels
    per class). ``train_lengths``: a callable giving the train split's token lengths (the matched baselines).
    """
    cfg = params.finetune
    if run is None:
        return cfg, paths.model_dir(cfg.init_from)
    if run.arm in PRETRAINED_ARMS:
        return cfg.model_copy(update={"init_from": "pretrain_sup"}), paths.model_dir("pretrain_sup", run.name)
    cfg = cfg.model_copy(update={"init_from": "pretrain_unsup"})
    if run.arm != "baseline":
        lengths = train_lengths()
        spt_pretraining = json.loads(paths.metrics_file("pretrain_sup", run.with_arm("spt").name).read_text())
        if run.arm == "baseline_matched":
            extra = matched_extra_steps(spt_pretraining, cfg)
        else:
            extra = flops_matched_extra_steps(spt_pretraining, cfg, paths.model_dir("pretrain_unsup"), lengths,
                                              len(paths.label_names()))
        cfg = cfg.model_copy(update={"max_steps": training_steps(cfg, len(lengths)) + extra})
    return cfg, paths.model_dir("pretrain_unsup")


def training_steps(cfg, train_rows: int) -> int:
    """Optimizer steps a stage takes: max_steps, or epochs over ``train_rows`` examples."""
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = math.ceil(train_rows / (cfg.batch_size * cfg.gradient_accumulation_steps))
    return math.ceil(cfg.epochs * per_epoch)


def flops_matched_extra_steps(pretrain_sup_metrics: dict, cfg, init_dir: Path, lengths: list[int],
                              num_labels: int) -> int:
    """Finetuning steps that spend as many FLOPs as pretrain_sup did (its counted total)."""
    from transformers import AutoConfig

    from spt.train.flops import classifier_step_flops, steps_for_flops

    config = AutoConfig.from_pretrained(str(init_dir), num_labels=num_labels)
    return steps_for_flops(pretrain_sup_metrics["flops"], lengths, cfg.batch_size * cfg.gradient_accumulation_steps,
                           classifier_step_flops(config))


def matched_extra_steps(pretrain_sup_metrics: dict, cfg) -> int:
    """Finetuning steps that see as many examples as pretrain_sup trained on (steps x its global batch)."""
    examples = pretrain_sup_metrics["steps"] * pretrain_sup_metrics["global_batch_size"]
    return math.ceil(examples / (cfg.batch_size * cfg.gradient_accumulation_steps))

"""pretrain_unsup: masked-LM pretraining on the prepared, packed corpus.

Reads:  data/processed (corpus, tokenizer, validation texts), model.source (unless scratch).
Writes: models/pretrain_unsup/ (the architecture's masked-LM checkpoint, e.g. BertForMaskedLM or
        RobertaForMaskedLM, with the encoder as its classifier builds it, BERT's pooler kept:
        safetensors, config, tokenizer, provenance.json), metrics/pretrain_unsup.json (held-out
        masked-token accuracy, perplexity), plots/pretrain_unsup/ (learning curves),
        checkpoints/pretrain_unsup/ (resume).
Params: seed, model, runtime, pretrain_unsup.

Masking is dynamic and seeded per example, so a killed run resumes to the same weights. Held-out
metrics are measured on the validation texts, which never enter the corpus. The MLM head of a
pretrained encoder without one starts fresh: ``head_warmup_steps`` trains it alone first, with the
encoder frozen, so its near-random gradients do not rewrite the encoder.
"""

from __future__ import annotations

import math

from spt import paths
from spt.errors import ModelError
from stages.cli import run_stage

STAGE = "pretrain_unsup"
PLOTS = {"loss": ["loss", "learning_rate", "grad_norm", "flops"]}  # plot file -> logged keys


def with_example_ids(dataset, keep: tuple[str, ...] = ("input_ids",)):
    """Keep only the ``keep`` columns and add the row index as ``example_id`` (the masking seed)."""
    return dataset.select_columns(list(keep)).add_column("example_id", list(range(len(dataset))))


def build_model(params, tokenizer):
    """The masked-LM model to train, and the provenance of where it came from."""
    from spt.model.encoders import EncoderForPackedMaskedLM, scratch_config
    from spt.model.source import resolve_model_source

    source = resolve_model_source(params.model)
    if source.name_or_path is None:
        return EncoderForPackedMaskedLM(scratch_config(params.model.scratch, tokenizer, tokenizer.model_max_length)
                                        ), source.provenance
    model = EncoderForPackedMaskedLM.from_pretrained(source.name_or_path)
    if len(tokenizer) > model.config.vocab_size:
        raise ModelError(f"the tokenizer in {paths.TOKENIZER} has {len(tokenizer)} tokens but model.source "
                         f"'{params.model.source}' has vocab_size {model.config.vocab_size}; rerun "
                         "`dvc repro prepare` so both come from the same model.source")
    return model, source.provenance


def mlm_metrics(prediction) -> dict[str, float]:
    from spt.metrics import masked_token_accuracy

    return {"masked_token_accuracy": masked_token_accuracy(prediction.predictions, prediction.label_ids)}


def main(params) -> None:
    import datasets
    from transformers import AutoTokenizer

    from spt.config import section_dict
    from spt.hashing import content_sha256
    from spt.model.encoders import masked_predictions
    from spt.tracking import tracked_run
    from spt.train.collators import MaskingCollator
    from spt.train.runtime import configure_runtime, training_arguments
    from spt.train.trainers import (
        EpochCallback,
        HeadWarmup,
        StageTrainer,
        last_logged,
    )
    from spt.train.training_run import begin_training, finish_training

    cfg = params.pretrain_unsup
    configure_runtime(params.runtime, params.seed)
    with tracked_run(STAGE, params, system_metrics=True) as tracker:
        tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
        corpus = with_example_ids(datasets.load_from_disk(str(paths.CORPUS)))
        held_out = with_example_ids(datasets.load_from_disk(str(paths.LABELED))["validation"])
        model, source_provenance = build_model(params, tokenizer)  # BERT's pooler frozen: the MLM loss never reaches it
        run = begin_training(STAGE, tracker, {name: section_dict(getattr(params, name))
                                              for name in ("model", "runtime", STAGE)} | {"seed": params.seed},
                             {"data": content_sha256(paths.PROCESSED),
                              "init": source_provenance.get("sha256", "scratch")},
                             {"corpus": len(corpus), "validation": len(held_out)},
                             tags={f"model_{key}": source_provenance[key] for key in ("revision", "commit")
                                   if key in source_provenance})
        collator = MaskingCollator(tokenizer, cfg.mlm_probability, params.seed, cfg.whole_word_masking)
        callbacks = [EpochCallback(collator), run.history]
        if cfg.head_warmup_steps:
            callbacks.append(HeadWarmup(model.base_model, cfg.head_warmup_steps))
        trainer = StageTrainer(
            model=model,
            args=training_arguments(cfg, run.checkpoints, params.seed, params.runtime,
                                    ddp_find_unused_parameters=bool(cfg.head_warmup_steps)),
            train_dataset=corpus, eval_dataset=held_out, data_collator=collator, callbacks=callbacks,
            compute_metrics=mlm_metrics, preprocess_logits_for_metrics=masked_predictions,
        )
        run_metrics = run.train(trainer)
        collator.epoch = 0  # the held-out masks do not depend on how long training ran
        evaluation = trainer.evaluate()
        metrics = {
            "train_loss_last": last_logged(run.history.rows, "loss"),
            "eval_loss": evaluation["eval_loss"],
            "perplexity": math.exp(min(evaluation["eval_loss"], 50.0)),
            "masked_token_accuracy": evaluation["eval_masked_token_accuracy"],
            "steps": trainer.state.global_step,
            "flops": trainer.state.total_flos,  # counted on the real batches (StageTrainer)
        }
        finish_training(run, trainer, tokenizer, metrics, run_metrics, PLOTS, {"init": source_provenance})


if __name__ == "__main__":
    run_stage(__doc__, main, STAGE)

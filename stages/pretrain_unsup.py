"""pretrain_unsup: masked-LM pretraining on the prepared, packed corpus.

Reads:  data/processed (corpus, tokenizer, validation texts), model.source (unless scratch).
Writes: models/pretrain_unsup/ (BertForMaskedLM checkpoint: safetensors, config, tokenizer,
        provenance.json), metrics/pretrain_unsup.json (held-out masked-token accuracy,
        perplexity), plots/pretrain_unsup/ (learning curves), checkpoints/pretrain_unsup/ (resume).
Params: seed, model, runtime, pretrain_unsup.

Masking is dynamic and seeded per example, so a killed run resumes to the same weights. Held-out
metrics are measured on the validation texts, which never enter the corpus.
"""

from __future__ import annotations

import math

import datasets
from transformers import AutoTokenizer

from stages.common import paths
from stages.common.checkpoints import save_checkpoint, write_json
from stages.common.cli import run_stage
from stages.common.collators import MaskingCollator
from stages.common.config import Params, section_dict
from stages.common.data import DataError, content_sha256
from stages.common.metrics import masked_token_accuracy
from stages.common.model import BertForPackedMaskedLM, masked_predictions, resolve_model_source, scratch_config
from stages.common.tracking import stage_run
from stages.common.training import (EpochCallback, HistoryCallback, StageTrainer, clear_checkpoints,
                                    configure_runtime, fingerprint, gathered_weights, last_logged,
                                    train_resumably, training_arguments)

STAGE = "pretrain_unsup"
PLOTS = {"loss": ["loss", "learning_rate", "grad_norm"]}  # plot file -> logged keys


def with_example_ids(dataset: datasets.Dataset, keep: tuple[str, ...] = ("input_ids",)) -> datasets.Dataset:
    """Keep only the ``keep`` columns and add the row index as ``example_id`` (the masking seed)."""
    return dataset.select_columns(list(keep)).add_column("example_id", list(range(len(dataset))))


def build_model(params: Params, tokenizer) -> tuple[BertForPackedMaskedLM, dict]:
    source = resolve_model_source(params.model)
    if source.name_or_path is None:
        config = scratch_config(params.model.scratch, len(tokenizer), params.prepare.max_length,
                                tokenizer.pad_token_id)
        return BertForPackedMaskedLM(config), source.provenance
    model = BertForPackedMaskedLM.from_pretrained(source.name_or_path)
    if len(tokenizer) > model.config.vocab_size:
        raise DataError(f"the tokenizer in {paths.TOKENIZER} has {len(tokenizer)} tokens but model.source "
                        f"'{params.model.source}' has vocab_size {model.config.vocab_size}; rerun "
                        "`dvc repro prepare` so both come from the same model.source")
    return model, source.provenance


def mlm_metrics(prediction) -> dict[str, float]:
    return {"masked_token_accuracy": masked_token_accuracy(prediction.predictions, prediction.label_ids)}


def main(params: Params) -> None:
    cfg = params.pretrain_unsup
    configure_runtime(params.runtime, params.seed)
    with stage_run(STAGE, params, ["seed", "model", "runtime", STAGE], system_metrics=True) as tracker:
        tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
        corpus = with_example_ids(datasets.load_from_disk(str(paths.CORPUS)))
        held_out = with_example_ids(datasets.load_from_disk(str(paths.LABELED))["validation"])
        model, source_provenance = build_model(params, tokenizer)
        inputs = {"data": content_sha256(paths.PROCESSED), "model": source_provenance.get("sha256", "scratch")}
        run_fingerprint = fingerprint({name: section_dict(getattr(params, name)) for name in
                                       ("model", "runtime", STAGE)} | {"seed": params.seed}, inputs)
        tracker.set_tags({"input_data_sha256": inputs["data"], "input_checkpoint_sha256": inputs["model"]})

        collator = MaskingCollator(tokenizer, cfg.mlm_probability, params.seed, cfg.whole_word_masking)
        history = HistoryCallback(tracker)
        trainer = StageTrainer(
            model=model,
            args=training_arguments(cfg, paths.checkpoint_dir(STAGE), params.seed, params.runtime),
            train_dataset=corpus, eval_dataset=held_out, data_collator=collator,
            callbacks=[EpochCallback(collator), history],
            compute_metrics=mlm_metrics,
            preprocess_logits_for_metrics=masked_predictions,
        )
        run_metrics = train_resumably(trainer, paths.checkpoint_dir(STAGE), run_fingerprint)
        collator.epoch = 0  # the held-out masks do not depend on how long training ran
        evaluation = trainer.evaluate()
        metrics = {
            "train_loss_last": last_logged(history.rows, "loss"),
            "eval_loss": evaluation["eval_loss"],
            "perplexity": math.exp(min(evaluation["eval_loss"], 50.0)),
            "masked_token_accuracy": evaluation["eval_masked_token_accuracy"],
            "steps": trainer.state.global_step,
        }
        model, weights = gathered_weights(trainer)  # on every process: FSDP gathers the shards
        if trainer.is_world_process_zero():
            save_checkpoint(model, tokenizer, paths.model_dir(STAGE),
                            {"stage": STAGE, "init": source_provenance, "fingerprint": run_fingerprint,
                             "data_sha256": inputs["data"]},
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

"""Masked-LM throughput: our pretrain_unsup setup vs Hugging Face's run_mlm.py defaults.

Both train the same model (``model.source``, identical initial weights) on the same packed
corpus from data/processed, for the same steps, batch size, learning rate and schedule
(params.yaml's pretrain_unsup section), in this one process. The corpus is packed the way
run_mlm.py's ``group_texts`` packs it (documents concatenated, cut into ``prepare.max_length``
token blocks, the tail dropped: spt/data/tokenization.py), so the blocks are identical:

- reference: ``BertForMaskedLM`` (vocabulary projection of every position) and
  ``DataCollatorForLanguageModeling`` (mlm_probability 0.15), as run_mlm.py sets them up;
- ours: ``EncoderForPackedMaskedLM`` (projection of the masked positions only: spt/model/encoders.py)
  and the per-example seeded ``MaskingCollator``.

Prints tokens/s, the mean training loss of each (the same quantity: cross-entropy over masked
tokens) and the ratio.

    .venv/bin/python benchmarks/mlm_throughput.py [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from harness import load_setup, timed_training

import datasets
from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

from spt import paths
from spt.model.encoders import EncoderForPackedMaskedLM
from spt.train.collators import MaskingCollator
from spt.train.runtime import training_arguments
from stages.pretrain_unsup import with_example_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="optimizer steps (default: pretrain_unsup.max_steps)")
    args = parser.parse_args()
    params, source = load_setup()
    cfg = params.pretrain_unsup.model_copy(update={"max_steps": args.steps or params.pretrain_unsup.max_steps})
    scratch = tempfile.mkdtemp(prefix="benchmark-")  # Trainer output_dir; nothing is saved there
    tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
    corpus = datasets.load_from_disk(str(paths.CORPUS))

    def reference(counting):
        arguments = TrainingArguments(
            output_dir=str(Path(scratch) / "reference"), max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, seed=params.seed, save_strategy="no",
            report_to="none", use_cpu=True, disable_tqdm=True, logging_steps=cfg.logging_steps)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability)
        return Trainer(model=BertForMaskedLM.from_pretrained(source), args=arguments,
                       train_dataset=corpus.select_columns(["input_ids"]), data_collator=counting(collator))

    def ours(counting):
        arguments = training_arguments(cfg, Path(scratch) / "ours", params.seed, params.runtime,
                                       save_strategy="no", disable_tqdm=True)
        collator = MaskingCollator(tokenizer, cfg.mlm_probability, params.seed, cfg.whole_word_masking)
        return Trainer(model=EncoderForPackedMaskedLM.from_pretrained(source), args=arguments,
                       train_dataset=with_example_ids(corpus), data_collator=counting(collator))

    print(f"masked-LM throughput: {source}, {len(corpus)} blocks of {params.prepare.max_length} tokens, "
          f"{cfg.max_steps} steps of {cfg.batch_size}")
    runs = [timed_training("reference (run_mlm.py)", reference, params.seed),
            timed_training("ours (pretrain_unsup)", ours, params.seed)]
    print(f"\n{'setup':<24} {'steps':>5} {'tokens/s':>9} {'mean loss':>9} {'ratio':>6}")
    for run in runs:
        print(f"{run.name:<24} {run.steps:>5} {run.tokens_per_second:>9.0f} {run.training_loss:>9.3f} "
              f"{run.tokens_per_second / runs[0].tokens_per_second:>5.2f}x")
    print(f"\nours / reference: {runs[1].tokens_per_second / runs[0].tokens_per_second:.2f}x tokens/s (target >= 1.2x)")


if __name__ == "__main__":
    main()

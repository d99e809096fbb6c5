"""Finetuning throughput: our finetune setup vs Hugging Face's run_classification.py defaults.

Both train the same model (``model.source``, a fresh classifier head, identical initial weights),
on the same prepared rotten_tomatoes train split, for the same steps, batch size, learning rate
and schedule (params.yaml's finetune section), in this one process:

- reference: what `run_classification.py` does by default: every example padded to
  ``max_seq_length`` = 128 (``pad_to_max_length``), ``default_data_collator``, random batches;
- ours: the finetune stage's settings (spt/train/runtime.py, trainers.py): dynamic padding
  (``DataCollatorWithPadding``) and length-grouped batches.

Prints examples/s, padded tokens per batch, test accuracy of each, and the ratio. ``--ablations``
also times ours with one setting changed each (attention, optimizer, grouping, workers,
torch.compile), to show which settings earn their place.

    .venv/bin/python benchmarks/finetune_throughput.py [--steps N] [--ablations]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from harness import load_setup, timed_training

import datasets
import numpy as np
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from spt import paths
from spt.train.runtime import training_arguments

REFERENCE_LENGTH = 128  # run_classification.py's max_seq_length default
ABLATIONS = {  # name -> (changes to our TrainingArguments, attention implementation)
    "ours, no length grouping": ({"train_sampling_strategy": "random"}, None),
    "ours, eager attention": ({}, "eager"),
    "ours, unfused AdamW": ({"optim": "adamw_torch"}, None),
    "ours, 2 DataLoader workers": ({"dataloader_num_workers": 2}, None),
    "ours, torch.compile": ({"torch_compile": True}, None),
}


def pad_to(length: int, pad_id: int):
    def pad(batch: dict) -> dict:
        ids = [row[:length] + [pad_id] * (length - len(row[:length])) for row in batch["input_ids"]]
        return {"input_ids": ids, "attention_mask": [[int(t != pad_id) for t in row] for row in ids]}
    return pad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="optimizer steps (default: finetune.max_steps)")
    parser.add_argument("--ablations", action="store_true", help="also time ours with one setting changed each")
    parser.add_argument("--ablation-steps", type=int, default=40, help="steps of each ablation run (default 40)")
    args = parser.parse_args()
    params, source = load_setup()
    scratch = tempfile.mkdtemp(prefix="benchmark-")  # Trainer output_dir; nothing is saved there
    cfg = params.finetune.model_copy(update={"max_steps": args.steps or params.finetune.max_steps})
    tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
    label_map = json.loads(paths.LABEL_MAP.read_text())
    splits = datasets.load_from_disk(str(paths.LABELED))
    ours_data = {name: splits[name].select_columns(["input_ids", "label"]) for name in ("train", "test")}
    padded = {name: data.map(pad_to(REFERENCE_LENGTH, tokenizer.pad_token_id), batched=True)
              for name, data in ours_data.items()}

    def model(attention: str | None = None):
        return AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(label_map["id2label"]), attn_implementation=attention,
            id2label={int(k): v for k, v in label_map["id2label"].items()}, label2id=label_map["label2id"])

    def ours(changes: dict, attention: str | None = None):
        def make(counting):
            stage = {"save_strategy": "no", "train_sampling_strategy": "group_by_length",
                     "remove_unused_columns": True, "disable_tqdm": True}
            arguments = training_arguments(cfg, Path(scratch) / "ours", params.seed, params.runtime,
                                           **(stage | changes))
            return Trainer(model=model(attention), args=arguments, train_dataset=ours_data["train"],
                           data_collator=counting(DataCollatorWithPadding(tokenizer)))
        return make

    def reference(counting):
        arguments = TrainingArguments(
            output_dir=str(Path(scratch) / "reference"), max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, seed=params.seed, save_strategy="no",
            report_to="none", use_cpu=True, disable_tqdm=True)
        return Trainer(model=model(), args=arguments, train_dataset=padded["train"],
                       data_collator=counting(default_data_collator))

    print(f"finetune throughput: {source}, rotten_tomatoes train ({len(ours_data['train'])} rows), "
          f"{cfg.max_steps} steps of {cfg.batch_size}")
    runs = [timed_training("reference (pad to 128)", reference, params.seed),
            timed_training("ours", ours({}), params.seed)]
    accuracy = {}
    for run, test in zip(runs, (padded["test"], ours_data["test"]), strict=True):
        run.trainer.data_collator = run.trainer.data_collator.collator  # count training batches only
        prediction = run.trainer.predict(test)
        accuracy[run.name] = float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))
    if args.ablations:  # shorter runs, compared with ours over the same number of steps
        cfg = cfg.model_copy(update={"max_steps": args.ablation_steps})
        runs += [timed_training(f"ours, {args.ablation_steps} steps", ours({}), params.seed)]
        runs += [timed_training(name, ours(changes, attention), params.seed)
                 for name, (changes, attention) in ABLATIONS.items()]

    reference_run = runs[0]
    print(f"\n{'setup':<28} {'steps':>5} {'examples/s':>10} {'tokens/batch':>12} {'test acc':>9} {'ratio':>7}")
    for index, run in enumerate(runs):
        base = runs[0] if index < 2 else runs[2]  # ablations: against ours over the same steps
        per_batch = f"{run.tokens / run.batches:.0f}" if run.batches else "-"
        acc = f"{100 * accuracy[run.name]:.2f}%" if run.name in accuracy else "-"
        print(f"{run.name:<28} {run.steps:>5} {run.examples_per_second:>10.1f} {per_batch:>12} {acc:>9} "
              f"{run.examples_per_second / base.examples_per_second:>6.2f}x")
    print("(ratio: against the reference; ablation rows against ours over the same steps)")
    ours_run = runs[1]
    print(f"\nours / reference: {ours_run.examples_per_second / reference_run.examples_per_second:.2f}x examples/s "
          f"(target >= 3x); test accuracy {100 * accuracy['ours']:.2f}% vs {100 * accuracy[reference_run.name]:.2f}% "
          f"({100 * (accuracy['ours'] - accuracy[reference_run.name]):+.2f} points, target within 0.5)")


if __name__ == "__main__":
    main()

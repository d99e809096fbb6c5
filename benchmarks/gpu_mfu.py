"""Model FLOPs utilisation of masked-LM pretraining of a BERT-base-sized model in bf16 (one GPU).

Trains our pretrain_unsup setup (``EncoderForPackedMaskedLM``, ``MaskingCollator``, the stage's
TrainingArguments: bf16 on a GPU that supports it, fused AdamW) on real text: the built-in
unlabeled corpora, tokenized with the built-in model's uncased 30,522-token vocabulary and packed
into ``--seq-len`` blocks. The model is BERT-base sized (12 layers, hidden 768, 12 heads,
intermediate 3072), from scratch.

Model FLOPs per step are counted from the batches actually seen: the encoder's matrix products and
attention for every token, the MLM head for the masked tokens only (that is all it computes), times
3 for forward + backward. MFU = FLOPs per second / ``--peak-tflops`` (989: the H200's / H100
SXM's dense bf16 peak). Steps before ``--warmup`` are not timed (CUDA start-up, torch.compile).

    .venv/bin/python benchmarks/gpu_mfu.py [--compile] [--batch-size 128] [--seq-len 512]
    .venv/bin/python benchmarks/gpu_mfu.py --smoke      # a tiny model on CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import REPO  # noqa: F401 - sets the offline environment and the working directory

import datasets
import torch
from transformers import AutoTokenizer, BertConfig, Trainer, TrainerCallback

from spt.config import PretrainUnsupConfig, RuntimeConfig
from spt.data.sources import BUILTINS, iter_unlabeled
from spt.data.tokenization import tokenize_and_pack
from spt.model.encoders import EncoderForPackedMaskedLM
from spt.train.collators import IGNORE_INDEX, MaskingCollator
from spt.train.runtime import training_arguments
from stages.pretrain_unsup import with_example_ids

BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
SMOKE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


def model_flops(config: BertConfig, tokens: int, masked: int, seq_len: int) -> float:
    """Training FLOPs (forward + backward = 3 x forward) of one step over ``tokens`` tokens."""
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = layers * (2 * (4 * hidden * hidden + 2 * hidden * inner) + 4 * seq_len * hidden)
    per_masked = 2 * (hidden * hidden + hidden * config.vocab_size)
    return 3.0 * (per_token * tokens + per_masked * masked)


class CountingCollator(MaskingCollator):
    """The stage's collator, also counting tokens and masked tokens per batch (workers: 0)."""

    def __call__(self, examples):
        batch = super().__call__(examples)
        self.seen.append((batch["input_ids"].numel(), int((batch["labels"] != IGNORE_INDEX).sum())))
        return batch


class StepTimer(TrainerCallback):
    """Wall time from the end of step ``warmup`` to the end of training, GPU work included."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start = self.end = 0.0

    def _sync(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        if state.global_step == self.warmup:
            self.start = self._sync()
        self.end = self._sync() if state.global_step > self.warmup else self.end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=60, help="steps in all (default 60)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed first steps (default 10)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (Trainer torch_compile)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense bf16 peak")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 4 steps: check the script on CPU")
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.seq_len, args.steps, args.warmup = 4, 64, 4, 1

    tokenizer = AutoTokenizer.from_pretrained(str(BUILTINS["all-minilm-l6-v2"].locate()))
    texts = [text for source in ("builtin:rotten_tomatoes", "builtin:bbc_news")
             for text in iter_unlabeled(source, "text")]
    corpus, _ = tokenize_and_pack(datasets.Dataset.from_dict({"text": texts}), tokenizer, args.seq_len)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, args.seq_len),
                        pad_token_id=tokenizer.pad_token_id, **(SMOKE if args.smoke else BERT_BASE))
    model = EncoderForPackedMaskedLM(config)
    cfg = PretrainUnsupConfig(max_steps=args.steps, batch_size=args.batch_size, learning_rate=1e-4,
                              save_steps=args.steps, logging_steps=max(1, args.steps // 4))
    collator = CountingCollator(tokenizer, cfg.mlm_probability, seed=0)
    collator.seen = []
    timer = StepTimer(args.warmup)
    with tempfile.TemporaryDirectory() as scratch:
        arguments = training_arguments(cfg, Path(scratch), 0, RuntimeConfig(num_threads=0, dataloader_workers=0),
                                       save_strategy="no", disable_tqdm=True, torch_compile=args.compile)
        trainer = Trainer(model=model, args=arguments, train_dataset=with_example_ids(corpus),
                          data_collator=collator, callbacks=[timer])
        trainer.train()

    timed = collator.seen[args.warmup:args.steps]  # the batches of the timed steps
    flops = sum(model_flops(config, tokens, masked, args.seq_len) for tokens, masked in timed)
    seconds = timer.end - timer.start
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    parameters = sum(p.numel() for p in model.parameters())
    print(f"\nmasked-LM, {parameters / 1e6:.0f}M parameters, {args.batch_size} x {args.seq_len} tokens per step, "
          f"bf16: {arguments.bf16}, torch.compile: {args.compile}, {device}")
    print(f"timed steps {len(timed)}, {seconds:.2f} s, {sum(t for t, _ in timed) / seconds:,.0f} tokens/s, "
          f"{flops / seconds / 1e12:.1f} TFLOP/s")
    print(f"MFU: {100 * flops / seconds / (args.peak_tflops * 1e12):.1f}% of {args.peak_tflops:.0f} TFLOP/s "
          "(target >= 45%)")


if __name__ == "__main__":
    main()

"""Tokenizers and tokenized datasets: WordPiece trained from scratch or the model's own, fast
batched tokenization into memory-mapped Arrow datasets, and packing for masked-LM."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import datasets
import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}
BATCH = 1000


def train_wordpiece(batches: Callable[[], Iterable[list[str]]], vocab_size: int, max_length: int,
                    alphabet_size: int = 1000) -> PreTrainedTokenizerFast:
    """An uncased BERT WordPiece tokenizer trained with HF ``tokenizers`` on the text batches that
    ``batches()`` yields (called twice: once for the alphabet, once to train).

    The trainer creates the '##x'
    continuation tokens in hash-map order, which changes their ids and so the merge tie-breaks
    from run to run (huggingface/tokenizers#1794). Registering them up front, sorted, makes the
    vocabulary identical on every run; the final tokenizer is rebuilt from that vocabulary so
    they are ordinary tokens, not special ones.
    """
    from tokenizers.implementations import BertWordPieceTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True, strip_accents=True, clean_text=True)
    normalize = trainer._tokenizer.normalizer.normalize_str
    characters: Counter[str] = Counter()
    for batch in batches():
        for text in batch:
            characters.update(ch for ch in normalize(text) if not ch.isspace())
    alphabet = sorted(sorted(characters), key=lambda ch: -characters[ch])[:alphabet_size]
    continuations = [f"##{ch}" for ch in sorted(alphabet)]
    trainer.train_from_iterator(batches(), vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                special_tokens=[*SPECIAL_TOKENS.values(), *continuations],
                                limit_alphabet=alphabet_size, initial_alphabet=alphabet)
    wordpiece = BertWordPieceTokenizer(trainer.get_vocab(), lowercase=True, strip_accents=True, clean_text=True)
    return PreTrainedTokenizerFast(tokenizer_object=wordpiece._tokenizer, model_max_length=max_length,
                                   **SPECIAL_TOKENS)


def load_tokenizer(name_or_path: str, max_length: int) -> PreTrainedTokenizerBase:
    """The model's own tokenizer (fast), capped at ``max_length``."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    tokenizer.model_max_length = max_length
    return tokenizer


def tokenize_labeled(split: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int
                     ) -> datasets.Dataset:
    """Add ``input_ids``, ``length`` (after truncation) and ``truncated`` to a text/label dataset.

    Texts are tokenized in full once, then cut to ``max_length`` keeping the final [SEP], so the
    report can count how many were truncated without tokenizing twice.
    """

    def encode(batch: dict) -> dict:
        ids = tokenizer(batch["text"], add_special_tokens=True, verbose=False)["input_ids"]
        truncated = [len(x) > max_length for x in ids]
        ids = [x[: max_length - 1] + x[-1:] if cut else x for x, cut in zip(ids, truncated)]
        return {"input_ids": ids, "length": [len(x) for x in ids], "truncated": truncated}

    return split.map(encode, batched=True, batch_size=BATCH, desc="tokenize labeled")


def tokenize_and_pack(corpus: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, block_size: int
                      ) -> tuple[datasets.Dataset, np.ndarray]:
    """Tokenize documents and pack them into ``block_size`` token blocks (no padding).

    Documents keep their [CLS] ... [SEP] markers and are concatenated within each batch of
    documents; the tail of a batch that does not fill a block is dropped, as run_mlm.py does.
    Returns the packed dataset and every document's token length (for the data report).
    """
    tokenized = corpus.map(
        lambda batch: {"input_ids": tokenizer(batch["text"], add_special_tokens=True, verbose=False)["input_ids"]},
        batched=True, batch_size=BATCH, remove_columns=corpus.column_names, desc="tokenize corpus")
    lengths = np.fromiter((len(ids) for ids in _iter_column(tokenized, "input_ids")), dtype=np.int64,
                          count=len(tokenized))

    def pack(batch: dict) -> dict:
        flat = [token for ids in batch["input_ids"] for token in ids]
        usable = len(flat) - len(flat) % block_size
        return {"input_ids": [flat[i:i + block_size] for i in range(0, usable, block_size)]}

    packed = tokenized.map(pack, batched=True, batch_size=BATCH, desc="pack blocks")
    return packed, lengths


def _iter_column(dataset: datasets.Dataset, column: str) -> Iterator[list[int]]:
    for batch in dataset.iter(batch_size=BATCH):
        yield from batch[column]

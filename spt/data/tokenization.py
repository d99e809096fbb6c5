"""Tokenizers and tokenized datasets: a tokenizer trained from scratch (WordPiece, byte-level BPE
or SentencePiece-style, the kind the architecture has) or the model's own, fast batched tokenization into
memory-mapped Arrow datasets, packing for masked-LM, and saving both so that the saved bytes
depend on their content only."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import datasets
import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}
# RoBERTa's and XLM-R's: <s> opens a text and </s> closes it
SENTENCE_TOKENS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                   "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
# model.scratch.architecture -> the kind of tokenizer that architecture's own checkpoints use
SCRATCH_TOKENIZERS = {"bert": "wordpiece", "electra": "wordpiece", "distilbert": "wordpiece", "roberta": "bpe",
                      "modernbert": "bpe", "xlm-roberta": "sentencepiece", "deberta-v2": "sentencepiece"}
# Texts are classified one at a time: no token type ids (zeros anyway), which several
# architectures' classifiers (DistilBERT, ModernBERT) do not take.
MODEL_INPUTS = ["input_ids", "attention_mask"]
BATCH = 1000
# Keys that from_pretrained adds to a tokenizer's init_kwargs about how it was loaded, not what it
# is: is_local (a directory or the Hub) and local_files_only (follows HF_HUB_OFFLINE).
# save_pretrained writes them into tokenizer_config.json.
LOADING_KEYS = ("is_local", "local_files_only")


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


def train_tokenizer(kind: str, batches: Callable[[], Iterable[list[str]]], vocab_size: int, max_length: int
                    ) -> PreTrainedTokenizerFast:
    """A tokenizer of ``kind`` (a value of :data:`SCRATCH_TOKENIZERS`) trained on ``batches()``."""
    if kind == "wordpiece":
        tokenizer = train_wordpiece(batches, vocab_size, max_length)
    elif kind == "bpe":
        tokenizer = train_byte_level_bpe(batches, vocab_size, max_length)
    else:
        tokenizer = train_sentencepiece_bpe(batches, vocab_size, max_length)
    tokenizer.model_input_names = MODEL_INPUTS
    return tokenizer


def train_byte_level_bpe(batches: Callable[[], Iterable[list[str]]], vocab_size: int, max_length: int
                         ) -> PreTrainedTokenizerFast:
    """A RoBERTa-style byte-level BPE tokenizer (``<s> text </s>``, a space before a word is part of it)."""
    from tokenizers import processors
    from tokenizers.implementations import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    specials = list(dict.fromkeys(SENTENCE_TOKENS.values()))
    bpe.train_from_iterator(batches(), vocab_size=vocab_size, min_frequency=2, show_progress=False,
                            special_tokens=specials)
    bpe._tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")), add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=max_length, **SENTENCE_TOKENS)


def train_sentencepiece_bpe(batches: Callable[[], Iterable[list[str]]], vocab_size: int, max_length: int
                            ) -> PreTrainedTokenizerFast:
    """An XLM-R-style SentencePiece tokenizer (``<s> text </s>``, '▁' starts a word), BPE-trained.

    XLM-R and DeBERTa-v2 ship Unigram models, but the Unigram trainer of HF tokenizers (0.23)
    gives another vocabulary on every run (measured: three runs, three vocabularies), which would
    break byte-identical prepare outputs; BPE training is deterministic. Loading, tokenizing and
    masking are the same for both: only how the vocabulary was chosen differs.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    sentencepiece = Tokenizer(models.BPE(unk_token="<unk>"))
    sentencepiece.normalizer = normalizers.NFKC()
    sentencepiece.pre_tokenizer = pre_tokenizers.Metaspace()
    sentencepiece.decoder = decoders.Metaspace()
    specials = list(dict.fromkeys(SENTENCE_TOKENS.values()))
    sentencepiece.train_from_iterator(batches(), trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=specials, show_progress=False))
    sentencepiece.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[(token, sentencepiece.token_to_id(token)) for token in ("<s>", "</s>")])
    return PreTrainedTokenizerFast(tokenizer_object=sentencepiece, model_max_length=max_length, **SENTENCE_TOKENS)


def load_tokenizer(name_or_path: str, max_length: int) -> PreTrainedTokenizerBase:
    """The model's own tokenizer (fast), capped at ``max_length``."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    tokenizer.model_max_length = max_length
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """``save_pretrained`` without :data:`LOADING_KEYS`, so the files do not depend on how (or in
    which environment) the tokenizer was loaded. Loading ignores their absence."""
    for key in LOADING_KEYS:
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(str(directory))


def save_dataset(dataset: datasets.Dataset | datasets.DatasetDict, directory: str | Path) -> None:
    """``save_to_disk``, each dataset's fingerprint first set to :func:`content_fingerprint`.

    datasets fingerprints a transformed dataset by hashing the transform with what it closes over,
    and a tokenizer loaded from a directory carries that directory's absolute path and its loading
    options. save_to_disk writes the fingerprint into state.json, so the hash DVC records for
    data/processed followed the clone's location and HF_HUB_OFFLINE. A hash of the content does
    not, and still changes whenever the content does (datasets keys its caches on it).
    """
    parts = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    for part in parts:
        part._fingerprint = content_fingerprint(part)  # no public setter; datasets' transforms do the same
    dataset.save_to_disk(str(directory))


def content_fingerprint(dataset: datasets.Dataset) -> str:
    """A fingerprint (16 hex digits, like datasets' own) of the features and rows, in order."""
    digest = hashlib.sha256(json.dumps(dataset.features.to_dict(), sort_keys=True).encode())
    for table in dataset.with_format("arrow").iter(batch_size=BATCH):
        for batch in table.combine_chunks().to_batches():  # one layout for the same rows
            digest.update(batch.serialize())
    return digest.hexdigest()[:16]


def tokenize_labeled(split: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int
                     ) -> datasets.Dataset:
    """Add ``input_ids``, ``length`` (after truncation) and ``truncated`` to a text/label dataset.

    Texts are tokenized in full once, then cut to ``max_length`` keeping the final [SEP], so the
    report can count how many were truncated without tokenizing twice.
    """

    def encode(batch: dict) -> dict:
        ids = tokenizer(batch["text"], add_special_tokens=True, verbose=False)["input_ids"]
        truncated = [len(x) > max_length for x in ids]
        ids = [x[: max_length - 1] + x[-1:] if cut else x for x, cut in zip(ids, truncated, strict=True)]
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


def length_order(dataset: datasets.Dataset) -> np.ndarray:
    """Row indices sorted by token count (stable): batches taken in this order pad little.

    Evaluation scores do not depend on row order, and padding is most of its cost: the 1,277
    validation reviews of rotten_tomatoes take 4.3 s in this order against 8.2 s in split order.
    """
    return np.argsort(np.fromiter((len(ids) for ids in _iter_column(dataset, "input_ids")), dtype=np.int64,
                                  count=len(dataset)), kind="stable")


def by_length(dataset: datasets.Dataset) -> datasets.Dataset:
    """The rows in ``length_order``, selected in memory (nothing written beside the saved dataset)."""
    return dataset.select(length_order(dataset), keep_in_memory=True)


def load_labeled(labeled: Path | None = None) -> dict[str, datasets.Dataset]:
    """The tokenized train, validation and test splits a run reads: data/processed's, or with ``labeled`` another
    directory's train and validation (a point of the labels-per-class curve, data/budgets/n<N>-<seed>/labeled)
    beside data/processed's test split, the same test examples for every run."""
    from spt import paths

    splits = dict(datasets.load_from_disk(str(paths.LABELED)))
    if labeled is not None and Path(labeled) != paths.LABELED:
        if not Path(labeled).is_dir():
            from spt.errors import DataError

            raise DataError(f"{labeled} is missing: prepare draws these labels (`python -m stages.prepare "
                            "--labels-per-class N --seed S`, a stage of the labels-per-class curve); run `dvc repro`")
        splits.update(datasets.load_from_disk(str(labeled)))
    return splits

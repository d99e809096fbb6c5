"""Batching with dynamic padding and reproducible masked-LM masking.

The masks of an example depend only on (seed, epoch, example id), never on the global torch RNG.
That is what makes a resumed run byte-identical to an uninterrupted one: on resume the Trainer
draws the first batch before it restores the saved RNG state, so RNG-based masking diverges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass
class MaskingCollator:
    """Pads a batch and masks it for masked-LM, BERT style (80% [MASK], 10% random, 10% kept).

    Examples carry ``input_ids``, ``example_id`` and optionally ``label`` (class id, -100 when
    unlabeled). Output: ``input_ids``, ``attention_mask``, the MLM targets under ``mlm_key`` and,
    when examples have a ``label``, ``labels``. With ``clean_key`` the unmasked ids are returned too,
    under that key (same padding), for a classifier that reads clean text while L_mlm reads the
    masked copy. ``epoch`` is set by :class:`EpochCallback`.
    """

    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float
    seed: int
    whole_word_masking: bool = False
    mlm_key: str = "labels"
    clean_key: str | None = None
    epoch: int = 0
    _continuation: np.ndarray = field(init=False, repr=False)
    _special: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self._continuation = continuation_tokens(vocab)
        self._special = np.zeros(len(vocab), dtype=bool)
        self._special[self.tokenizer.all_special_ids] = True

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(example["input_ids"]) for example in examples)
        pad_id = self.tokenizer.pad_token_id
        input_ids = np.full((len(examples), width), pad_id, dtype=np.int64)
        targets = np.full((len(examples), width), IGNORE_INDEX, dtype=np.int64)
        attention = np.zeros((len(examples), width), dtype=np.int64)
        clean = np.full((len(examples), width), pad_id, dtype=np.int64)
        for row, example in enumerate(examples):
            ids = np.asarray(example["input_ids"], dtype=np.int64)
            masked, target = self.mask(ids, int(example["example_id"]))
            clean[row, : len(ids)] = ids
            input_ids[row, : len(ids)] = masked
            targets[row, : len(ids)] = target
            attention[row, : len(ids)] = 1
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention),
                 self.mlm_key: torch.from_numpy(targets)}
        if self.clean_key:
            batch[self.clean_key] = torch.from_numpy(clean)
        if "label" in examples[0]:
            if self.mlm_key == "labels":
                raise ValueError("examples carry a class 'label' but the MLM targets use the key 'labels'; "
                                 "set mlm_key='mlm_labels' for supervised batches")
            batch["labels"] = torch.tensor([int(example["label"]) for example in examples], dtype=torch.long)
        return batch

    def mask(self, ids: np.ndarray, example_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Masked copy of ``ids`` and its targets (-100 where not masked), seeded per example."""
        rng = np.random.default_rng([self.seed, self.epoch, example_id])
        maskable = ~self._special[ids]
        if self.whole_word_masking:
            # Draw once per word and spread to its pieces (see continuation_tokens).
            # a word starts at a piece that is no continuation, or right after a special token
            # (the first word of a byte-level BPE text carries no 'Ġ')
            after_special = np.concatenate([[True], self._special[ids[:-1]]])
            starts = maskable & (~self._continuation[ids] | after_special)
            word_of_token = np.cumsum(starts) - 1
            chosen_words = rng.random(int(starts.sum())) < self.mlm_probability
            selected = maskable & (word_of_token >= 0) & chosen_words[np.maximum(word_of_token, 0)]
        else:
            selected = maskable & (rng.random(len(ids)) < self.mlm_probability)
        target = np.where(selected, ids, IGNORE_INDEX)
        roll = rng.random(len(ids))
        masked = ids.copy()
        masked[selected & (roll < 0.8)] = self.tokenizer.mask_token_id
        random_tokens = selected & (roll >= 0.8) & (roll < 0.9)
        masked[random_tokens] = rng.integers(0, len(self.tokenizer), int(random_tokens.sum()))
        return masked, target


WORD_START_MARKERS = ("\u0120", "\u2581")  # byte-level BPE's 'Ġ', SentencePiece's '▁'


def continuation_tokens(vocab: list[str]) -> np.ndarray:
    """Which tokens continue a word rather than start one, per token id.

    WordPiece marks continuations with '##'; byte-level BPE and SentencePiece instead mark a word's
    first piece ('Ġ', '▁'), so there every piece without that mark continues a word.
    """
    if any(token.startswith("##") for token in vocab):
        return np.array([token.startswith("##") for token in vocab])
    marker = max(WORD_START_MARKERS, key=lambda mark: sum(token.startswith(mark) for token in vocab))
    return np.array([not token.startswith(marker) for token in vocab])

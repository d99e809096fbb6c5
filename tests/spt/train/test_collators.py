"""Masking is seeded per (seed, epoch, example) and never touches special tokens."""

import numpy as np
import pytest

from spt.data.tokenization import train_tokenizer, train_wordpiece
from spt.train.collators import IGNORE_INDEX, MaskingCollator


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["the quick brown fox jumps over the lazy dog", "unbelievable performances everywhere"] * 50
    return train_wordpiece(lambda: [texts], vocab_size=120, max_length=32)


def batch_of(tokenizer, texts, with_labels=False):
    examples = [{"input_ids": tokenizer(t)["input_ids"], "example_id": i} for i, t in enumerate(texts)]
    return [{**e, "label": i % 2} for i, e in enumerate(examples)] if with_labels else examples


def test_same_seed_epoch_and_id_give_the_same_mask(tokenizer):
    collator = MaskingCollator(tokenizer, mlm_probability=0.5, seed=1)
    examples = batch_of(tokenizer, ["the quick brown fox jumps over the lazy dog"] * 2)
    first = collator(examples)
    again = collator(examples)
    assert (first["input_ids"] == again["input_ids"]).all()
    # Same text, different example id -> a different mask.
    assert not (first["labels"][0] == first["labels"][1]).all()
    collator.epoch = 1
    assert not (collator(examples)["labels"] == first["labels"]).all()


def test_special_tokens_and_padding_are_never_masked(tokenizer):
    collator = MaskingCollator(tokenizer, mlm_probability=0.99, seed=0)
    batch = collator(batch_of(tokenizer, ["the fox", "the quick brown fox jumps"]))
    ids, targets = batch["input_ids"], batch["labels"]
    assert targets[0, 0] == IGNORE_INDEX  # [CLS]
    padded = batch["attention_mask"] == 0
    assert padded.any() and (targets[padded] == IGNORE_INDEX).all()
    assert (ids[padded] == tokenizer.pad_token_id).all()
    assert batch["labels"].shape == ids.shape


def test_mask_rate_and_80_10_10(tokenizer):
    collator = MaskingCollator(tokenizer, mlm_probability=0.15, seed=0)
    ids = np.array(tokenizer("the quick brown fox jumps over the lazy dog " * 60)["input_ids"][:400])
    masked_share, mask_token_share = [], []
    for example_id in range(50):
        masked, target = collator.mask(ids, example_id)
        selected = target != IGNORE_INDEX
        masked_share.append(selected.mean())
        mask_token_share.append((masked[selected] == tokenizer.mask_token_id).mean())
    assert np.mean(masked_share) == pytest.approx(0.15, abs=0.02)
    assert np.mean(mask_token_share) == pytest.approx(0.8, abs=0.05)


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer):
    collator = MaskingCollator(tokenizer, mlm_probability=0.5, seed=0, whole_word_masking=True)
    ids = np.array(tokenizer("quickest foxes jumped overly lazily")["input_ids"])
    pieces = tokenizer.convert_ids_to_tokens(ids.tolist())
    assert any(p.startswith("##") for p in pieces)
    for example_id in range(20):
        _, target = collator.mask(ids, example_id)
        selected = target != IGNORE_INDEX
        for i, piece in enumerate(pieces):
            if piece.startswith("##"):
                assert selected[i] == selected[i - 1]


@pytest.mark.parametrize("kind, marker", [("bpe", "\u0120"), ("sentencepiece", "\u2581")])
def test_whole_word_masking_with_word_start_markers(kind, marker):
    """Byte-level BPE and SentencePiece mark a word's first piece; the rest of the word follows it,
    and the first word of a text (no 'Ġ' in byte-level BPE) starts after the special token."""
    texts = ["the quick brown fox jumps over the lazy dog", "unbelievable performances everywhere"] * 50
    bpe_tokenizer = train_tokenizer(kind, lambda: [texts], vocab_size=300, max_length=32)
    collator = MaskingCollator(bpe_tokenizer, mlm_probability=0.5, seed=0, whole_word_masking=True)
    ids = np.array(bpe_tokenizer("quickest foxes jumped overly lazily")["input_ids"])
    pieces = bpe_tokenizer.convert_ids_to_tokens(ids.tolist())
    words = np.cumsum([piece.startswith(marker) or i == 1 for i, piece in enumerate(pieces)])
    assert len(set(words[1:-1])) == 5 and len(pieces) > 7  # five words, some in several pieces
    ever_masked = set()
    for example_id in range(20):
        _, target = collator.mask(ids, example_id)
        selected = target != IGNORE_INDEX
        for word in set(words[1:-1]):
            in_word = selected[1:-1][words[1:-1] == word]
            assert in_word.all() or not in_word.any()
            if in_word.all():
                ever_masked.add(word)
    assert ever_masked == set(words[1:-1])  # the first word too


def test_supervised_batches_carry_class_labels(tokenizer):
    collator = MaskingCollator(tokenizer, mlm_probability=0.15, seed=0, mlm_key="mlm_labels")
    batch = collator(batch_of(tokenizer, ["the fox", "the dog"], with_labels=True))
    assert batch["labels"].tolist() == [0, 1]
    assert batch["mlm_labels"].shape == batch["input_ids"].shape
    with pytest.raises(ValueError, match="mlm_key"):
        MaskingCollator(tokenizer, 0.15, seed=0)(batch_of(tokenizer, ["the fox"], with_labels=True))


def test_wordpiece_tokenizer_is_bert_shaped(tokenizer):
    encoded = tokenizer("the fox")["input_ids"]
    assert encoded[0] == tokenizer.cls_token_id and encoded[-1] == tokenizer.sep_token_id

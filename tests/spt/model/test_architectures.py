"""Every tested architecture through the generic two-head model, from a user's own checkpoint.

A fixture writes a tiny random masked-LM checkpoint of each architecture with save_pretrained,
beside a tokenizer of its kind trained on the tiny data (tools.sandbox.write_tiny_encoder).
The tests run in seconds; tests/e2e/test_architectures_pipeline.py runs the tiny pipeline up to evaluate on each
architecture.
"""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from spt.data.tokenization import SCRATCH_TOKENIZERS
from spt.model.encoders import MLM_HEADS, EncoderForPackedMaskedLM, EncoderForSupervisedPretraining
from spt.model.source import TESTED_ARCHITECTURES
from spt.train.checkpoints import save_checkpoint
from tools.sandbox import write_tiny_encoder

LABELS = {"id2label": {0: "fresh", 1: "rotten"}, "label2id": {"fresh": 0, "rotten": 1}}


@pytest.fixture(scope="module", params=TESTED_ARCHITECTURES)
def source(request, tmp_path_factory, tiny_data):
    """(architecture, directory of its tiny checkpoint and tokenizer)."""
    texts = pd.read_csv(tiny_data / "labeled.csv")["text"].tolist()
    directory = tmp_path_factory.mktemp(request.param) / "model"
    return request.param, write_tiny_encoder(directory, request.param, texts)


def batch(tokenizer, clean=False):
    encoded = tokenizer(["a warm and funny film", "dull, far too long and tired"], padding=True,
                        return_tensors="pt")
    ids = encoded["input_ids"]
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[:, 1:4] = ids[:, 1:4]
    masked = ids.clone()
    masked[:, 1:4] = tokenizer.mask_token_id
    return {"input_ids": masked, "attention_mask": encoded["attention_mask"], "mlm_labels": mlm_labels,
            "labels": torch.tensor([0, 1]), **({"clean_input_ids": ids} if clean else {})}


def test_every_tested_architecture_has_a_masked_only_head():
    assert set(TESTED_ARCHITECTURES) == set(MLM_HEADS)


def test_scratch_tokenizer_is_of_the_architectures_kind(source):
    """write_tiny_encoder builds what model.source: scratch builds: scratch_config and train_tokenizer."""
    architecture, directory = source
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    pieces = tokenizer.tokenize("unremarkably overlong")
    marker = {"wordpiece": "##", "bpe": "\u0120", "sentencepiece": "\u2581"}[SCRATCH_TOKENIZERS[architecture]]
    assert any(marker in piece for piece in pieces + tokenizer.tokenize("a film about films")), pieces
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == architecture and config["vocab_size"] == len(tokenizer)
    assert config["pad_token_id"] == tokenizer.pad_token_id


def test_two_head_checkpoint_loads_with_both_auto_classes(source, tmp_path):
    architecture, directory = source
    model = EncoderForSupervisedPretraining.from_pretrained(str(directory), num_labels=2, **LABELS).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    save_checkpoint(model, tokenizer, tmp_path / "ckpt", {"stage": "test"})
    saved = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ckpt").eval()
    masked_lm = AutoModelForMaskedLM.from_pretrained(tmp_path / "ckpt").eval()
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["architectures"] == [type(classifier).__name__] and config["model_type"] == architecture
    ours = model.state_dict()
    for loaded in (classifier, masked_lm):  # every weight of both Auto models is the two-head model's
        for name, tensor in loaded.state_dict().items():
            assert torch.equal(tensor, ours[name]), f"{type(loaded).__name__}: {name}"
    assert set(saved) <= set(ours)
    inputs = batch(tokenizer, clean=True)
    out = model(**inputs)
    plain = classifier(input_ids=inputs["clean_input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert torch.allclose(out.logits, plain, atol=1e-5)  # the architecture's own classifier head
    assert out.cls_loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(plain, inputs["labels"]).item(), rel=1e-5)


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "masked"])
def test_masked_only_mlm_loss_equals_the_full_head(source, clean):
    architecture, directory = source
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    inputs = batch(tokenizer, clean=clean)
    reference_model = AutoModelForMaskedLM.from_pretrained(str(directory)).eval()
    full = reference_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    selected = inputs["mlm_labels"] != -100
    reference = torch.nn.functional.cross_entropy(full[selected], inputs["mlm_labels"][selected])
    two_heads = EncoderForSupervisedPretraining.from_pretrained(str(directory), num_labels=2).eval()
    masked_lm = EncoderForPackedMaskedLM.from_pretrained(str(directory)).eval()
    joint = two_heads(**inputs)
    packed = masked_lm(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       labels=inputs["mlm_labels"])
    for loss, logits in ((joint.mlm_loss, joint.mlm_logits), (packed.loss, packed.logits)):
        assert logits.shape == (int(selected.sum()), full.shape[-1])  # only the masked positions
        assert torch.allclose(logits, full[selected], atol=1e-5)
        assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_nothing_the_source_learned_is_dropped(source, tmp_path):
    """pretrain_unsup's checkpoint holds every source tensor; a classifier built from it reads them."""
    architecture, directory = source
    model = EncoderForPackedMaskedLM.from_pretrained(str(directory))
    save_checkpoint(model, AutoTokenizer.from_pretrained(str(directory)), tmp_path / "ckpt", {})
    before = load_file(str(directory / "model.safetensors"))
    after = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert set(before) <= set(after)
    assert before and all(torch.equal(before[name], after[name]) for name in before)
    classifier_state = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ckpt", num_labels=2).state_dict()
    shared = set(before) & set(classifier_state)
    assert shared and all(torch.equal(before[name], classifier_state[name]) for name in shared)
    assert bool(model.unreached_by_mlm) == (architecture == "bert")  # BERT's pooler, kept and frozen
    assert all(not p.requires_grad for p in model.unreached_by_mlm)


def test_flop_matched_budget_counts_every_architecture(source):
    """baseline_flops counts a finetuning step of the architecture (DeBERTa-v2: on CPU, not meta),
    and counting draws nothing from the training RNG."""
    from transformers import AutoConfig

    from spt.train.flops import classifier_step_flops

    architecture, directory = source
    before = torch.random.get_rng_state()
    step_flops = classifier_step_flops(AutoConfig.from_pretrained(str(directory), num_labels=2))
    assert 0 < step_flops(2, 8) < step_flops(2, 16) < step_flops(4, 16)
    assert torch.equal(torch.random.get_rng_state(), before)



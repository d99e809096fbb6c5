"""The two-head model: shapes, gradients under the joint loss, and plain-transformers checkpoints."""

import huggingface_hub.constants
import pytest
import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    PreTrainedTokenizerFast,
    TrainingArguments,
)

from spt.config import PretrainSupConfig
from spt.data.tokenization import train_wordpiece
from spt.errors import ModelError
from spt.model.encoders import EncoderForPackedMaskedLM, EncoderForSupervisedPretraining
from spt.model.source import check_encoder_config
from spt.train.checkpoints import save_checkpoint, verify_checkpoint
from spt.train.trainers import JointLossTrainer

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            num_labels=3)


def batch(mask_every=3):
    torch.manual_seed(0)
    input_ids = torch.randint(5, 60, (4, 10))
    mlm_labels = torch.full_like(input_ids, -100)
    mlm_labels[:, ::mask_every] = input_ids[:, ::mask_every]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "mlm_labels": mlm_labels,
            "labels": torch.tensor([0, 1, 2, -100])}


def test_shapes_and_both_losses():
    model = EncoderForSupervisedPretraining(BertConfig(**TINY))
    out = model(**batch())
    assert out.logits.shape == (4, 3)
    assert out.mlm_logits.shape == (4 * 4, 60)  # 4 masked positions per row, vocab 60
    assert out.mlm_loss.ndim == 0 and out.cls_loss.ndim == 0


def trainer_loss(model, lam, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = JointLossTrainer(model=model, args=args, joint=PretrainSupConfig(**{"lambda": lam}))
    trainer.state.max_steps = 10
    return trainer.compute_loss(model, batch())


def grads(model, prefix):
    """The gradients of the parameters named ``prefix...`` (there are some: an all() over none proves nothing)."""
    found = [p.grad for name, p in model.named_parameters() if name.startswith(prefix)]
    assert found, f"no parameter named {prefix}*"
    return found


def test_both_heads_get_gradients_when_lambda_positive(tmp_path):
    model = EncoderForSupervisedPretraining(BertConfig(**TINY))
    trainer_loss(model, 1.0, tmp_path).backward()
    assert all(g is not None and g.abs().sum() > 0 for g in grads(model, "classifier"))
    assert all(g is not None and g.abs().sum() > 0 for g in grads(model, "cls.predictions.transform"))


def test_classifier_gets_no_gradient_when_lambda_zero(tmp_path):
    model = EncoderForSupervisedPretraining(BertConfig(**TINY))
    loss = trainer_loss(model, 0.0, tmp_path)
    loss.backward()
    assert all(g is None for g in grads(model, "classifier"))
    assert all(g is not None for g in grads(model, "cls.predictions.transform"))
    assert loss.item() == pytest.approx(model(**batch()).mlm_loss.item(), rel=1e-4)


def test_unlabeled_batch_gives_zero_supervised_loss():
    model = EncoderForSupervisedPretraining(BertConfig(**TINY))
    data = batch()
    data["labels"] = torch.full((4,), -100)
    assert model(**data).cls_loss.item() == 0.0


def test_masked_only_mlm_loss_matches_full_projection():
    model = EncoderForPackedMaskedLM(BertConfig(**TINY)).eval()
    data = batch()
    ours = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"], labels=data["mlm_labels"])
    full = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"])
    reference = torch.nn.functional.cross_entropy(full.logits.view(-1, 60), data["mlm_labels"].view(-1))
    assert ours.loss.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(lambda: [["some words for a tiny vocabulary"] * 20], vocab_size=60, max_length=16)


def test_checkpoint_loads_with_plain_transformers(tmp_path, tokenizer):
    model = EncoderForSupervisedPretraining(BertConfig(**{**TINY, "vocab_size": len(tokenizer)},
                                                    id2label={0: "a", 1: "b", 2: "c"}))
    save_checkpoint(model, tokenizer, tmp_path / "ckpt", {"stage": "test"})
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ckpt")
    assert type(classifier).__name__ == "BertForSequenceClassification"
    assert torch.equal(classifier.classifier.weight, model.classifier.weight)
    masked_lm = AutoModelForMaskedLM.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(masked_lm.cls.predictions.transform.dense.weight, model.cls.predictions.transform.dense.weight)
    assert isinstance(PreTrainedTokenizerFast.from_pretrained(tmp_path / "ckpt"), PreTrainedTokenizerFast)
    assert len(verify_checkpoint(tmp_path / "ckpt", "pretrain_sup")) == 64
    assert not list(tmp_path.glob(".ckpt.partial-*"))


def test_checkpoint_does_not_depend_on_hub_offline(tmp_path, tokenizer, monkeypatch):
    # A tokenizer loaded under HF_HUB_OFFLINE carries local_files_only=True; the checkpoint must not.
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    model = EncoderForPackedMaskedLM(BertConfig(**{**TINY, "vocab_size": len(tokenizer)}))
    saved = {}
    for offline in (True, False):
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
        save_checkpoint(model, AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer")),
                        tmp_path / f"offline-{offline}", {})
        saved[offline] = {p.name: p.read_bytes() for p in (tmp_path / f"offline-{offline}").iterdir()}
    assert saved[True] == saved[False]
    assert b"local_files_only" not in saved[True]["tokenizer_config.json"]


def test_corrupt_checkpoint_is_refused(tmp_path, tokenizer):
    model = EncoderForPackedMaskedLM(BertConfig(**{**TINY, "vocab_size": len(tokenizer)}))
    save_checkpoint(model, tokenizer, tmp_path / "ckpt", {})
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelError, match="truncated or corrupt.*dvc repro --force pretrain_unsup"):
        verify_checkpoint(tmp_path / "ckpt", "pretrain_unsup")


def test_model_source_checks(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        check_encoder_config(tmp_path, "my-model")
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ModelError, match="model_type is 'gpt2', and transformers has no AutoModelForMaskedLM class"):
        check_encoder_config(tmp_path, "my-model")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="pickled weights"):
        check_encoder_config(tmp_path, "my-model")

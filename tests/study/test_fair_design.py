"""Fair to SPT: nothing the source model learned is lost, the classifier reads clean text, a fresh MLM
head warms up alone, and the compute-matched baseline matches what pretrain_sup really trained."""

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
)

from spt.config import FinetuneConfig, PretrainSupConfig
from spt.data.tokenization import train_wordpiece
from spt.model.encoders import EncoderForPackedMaskedLM, EncoderForSupervisedPretraining
from spt.train.checkpoints import PROVENANCE_FILE
from spt.train.collators import MaskingCollator
from spt.train.trainers import HeadWarmup
from stages.finetune import load_classifier
from study.arms import finetune_settings, matched_extra_steps, pretrain_sup_settings
from study.run import Run
from study.sweep import Setting

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)


def test_the_source_pooler_survives_pretrain_unsup(tmp_path):
    """A BertModel source (no MLM head) keeps its trained pooler through the MLM model and its checkpoint,
    and a classifier loaded from that checkpoint starts from it (before: a random pooler)."""
    torch.manual_seed(0)
    source = BertModel(BertConfig(**TINY))
    with torch.no_grad():
        source.pooler.dense.weight.normal_(0, 1)  # unmistakably not an initialisation
    source.save_pretrained(tmp_path / "source")
    mlm = EncoderForPackedMaskedLM.from_pretrained(tmp_path / "source")
    assert torch.equal(mlm.bert.pooler.dense.weight, source.pooler.dense.weight)
    mlm.bert.pooler.requires_grad_(False)  # as pretrain_unsup does: its loss never reaches the pooler
    optimizer = torch.optim.AdamW([p for p in mlm.parameters() if p.requires_grad], lr=0.1, weight_decay=0.1)
    ids = torch.randint(5, 60, (2, 8))
    mlm(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    optimizer.step()
    mlm.save_pretrained(tmp_path / "pretrain_unsup")
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pretrain_unsup", num_labels=2)
    assert torch.equal(classifier.bert.pooler.dense.weight, source.pooler.dense.weight)
    two_heads = EncoderForSupervisedPretraining.from_pretrained(tmp_path / "pretrain_unsup", num_labels=2)
    assert torch.equal(two_heads.bert.pooler.dense.weight, source.pooler.dense.weight)


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["a warm funny film", "a dull and tired story", "the cast is great", "nothing works here"] * 5
    return train_wordpiece(lambda: iter([texts]), 60, 32)


def test_the_collator_hands_the_classifier_the_unmasked_text(tokenizer):
    collator = MaskingCollator(tokenizer, 0.5, seed=1, mlm_key="mlm_labels", clean_key="clean_input_ids")
    examples = [{"input_ids": tokenizer("a warm funny film")["input_ids"], "example_id": 0, "label": 1},
                {"input_ids": tokenizer("nothing works")["input_ids"], "example_id": 1, "label": 0}]
    batch = collator(examples)
    masked = batch["mlm_labels"] != -100
    assert masked.any()
    assert not torch.equal(batch["input_ids"], batch["clean_input_ids"])
    for row, example in enumerate(examples):
        ids = example["input_ids"]
        assert batch["clean_input_ids"][row, : len(ids)].tolist() == ids
    assert (batch["clean_input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()


def test_the_classifier_reads_the_clean_pass(tokenizer):
    """With clean_input_ids the classifier's logits are those of the clean text; L_mlm still reads the masked copy."""
    torch.manual_seed(0)
    model = EncoderForSupervisedPretraining(BertConfig(**{**TINY, "vocab_size": len(tokenizer)}, num_labels=2)).eval()
    collator = MaskingCollator(tokenizer, 0.5, seed=1, mlm_key="mlm_labels", clean_key="clean_input_ids")
    batch = collator([{"input_ids": tokenizer("a warm funny film")["input_ids"], "example_id": 0, "label": 1}])
    both = model(**batch)
    clean_only = model(input_ids=batch["clean_input_ids"], attention_mask=batch["attention_mask"])
    masked_only = model(**{k: v for k, v in batch.items() if k != "clean_input_ids"})
    assert torch.allclose(both.logits, clean_only.logits)
    assert not torch.allclose(both.logits, masked_only.logits)
    assert torch.allclose(both.mlm_loss, masked_only.mlm_loss)


def test_head_warmup_freezes_the_encoder_then_releases_it():
    model = EncoderForPackedMaskedLM(BertConfig(**TINY))
    model.bert.pooler.requires_grad_(False)
    warmup = HeadWarmup(model.bert, steps=3)
    encoder = [p for n, p in model.bert.named_parameters() if "pooler" not in n]
    pooler, head = list(model.bert.pooler.parameters()), list(model.cls.predictions.transform.parameters())
    assert encoder and pooler and head
    for step, frozen in ((0, True), (2, True), (3, False), (10, False)):
        warmup.on_step_begin(None, SimpleNamespace(global_step=step), None)
        assert all(p.requires_grad != frozen for p in encoder)
        assert not any(p.requires_grad for p in pooler)  # frozen before: stays so
        assert all(p.requires_grad for p in head)


def test_head_warmup_leaves_the_encoder_untouched():
    """Frozen parameters get no gradient, and AdamW then neither updates nor decays them."""
    torch.manual_seed(0)
    model = EncoderForPackedMaskedLM(BertConfig(**TINY))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    encoder_before = {n: p.detach().clone() for n, p in model.bert.named_parameters()}
    head_before = model.cls.predictions.transform.dense.weight.detach().clone()
    HeadWarmup(model.bert, steps=1).on_step_begin(None, SimpleNamespace(global_step=0), None)
    ids = torch.randint(5, 60, (2, 8))
    optimizer.zero_grad()
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    optimizer.step()
    assert encoder_before and all(torch.equal(p, encoder_before[n]) for n, p in model.bert.named_parameters())
    assert not torch.equal(model.cls.predictions.transform.dense.weight, head_before)


@pytest.mark.parametrize("steps, batch, finetune_batch, accumulation, expected", [
    (160, 32, 32, 1, 160),   # same batches: the same number of steps
    (160, 64, 32, 1, 320),   # pretrain_sup saw twice the examples per step
    (100, 32, 16, 2, 100),   # finetune accumulates to the same global batch
    (10, 8, 32, 1, 3),       # rounded up: never fewer examples than pretrain_sup
])
def test_matched_baseline_matches_examples_not_labeled_rows(steps, batch, finetune_batch, accumulation, expected):
    cfg = FinetuneConfig(batch_size=finetune_batch, gradient_accumulation_steps=accumulation)
    assert matched_extra_steps({"steps": steps, "global_batch_size": batch}, cfg) == expected


def save_as_classifier(model, directory):
    """As save_checkpoint writes pretrain_sup: the config names the plain classification class."""
    model.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "architectures": ["BertForSequenceClassification"]}))


@pytest.mark.parametrize("trained, carried", [(True, True), (False, False)])
def test_an_untrained_classifier_is_not_reported_as_carried_over(tmp_path, trained, carried):
    """With lambda = 0 pretrain_sup's classifier never trained: finetune must not claim it carried one over."""
    label_map = {"label2id": {"fresh": 0, "rotten": 1}, "id2label": {"0": "fresh", "1": "rotten"}}
    model = EncoderForSupervisedPretraining(BertConfig(**TINY, num_labels=2, label2id=label_map["label2id"],
                                                    id2label={0: "fresh", 1: "rotten"}))
    save_as_classifier(model, tmp_path)
    (tmp_path / PROVENANCE_FILE).write_text(json.dumps({"classifier_trained": trained}))
    _, reported = load_classifier(str(tmp_path), label_map)
    assert reported is carried


def test_classifier_carried_over_needs_the_same_label_map(tmp_path):
    model = EncoderForSupervisedPretraining(BertConfig(**TINY, num_labels=2, label2id={"a": 0, "b": 1}))
    save_as_classifier(model, tmp_path)
    (tmp_path / PROVENANCE_FILE).write_text(json.dumps({"classifier_trained": True}))
    _, reported = load_classifier(str(tmp_path), {"label2id": {"x": 0, "y": 1}, "id2label": {"0": "x", "1": "y"}})
    assert reported is False


def test_tapt_is_pretrain_sup_with_lambda_zero_and_the_same_budget():
    cfg = PretrainSupConfig(**{"lambda": 2.0, "lambda_min": 0.5, "lambda_schedule": "cosine_decay", "max_steps": 70})
    tapt = pretrain_sup_settings(cfg, Run("tapt", 43))
    assert (tapt.lambda_, tapt.lambda_min, tapt.lambda_schedule, tapt.weighting) == (0.0, 0.0, "constant", "fixed")
    moot = {"lambda_", "lambda_min", "lambda_schedule", "weighting", "supervised_input"}
    assert tapt.model_dump(exclude=moot) == cfg.model_dump(exclude=moot)  # same steps, batches, schedule, masks
    assert pretrain_sup_settings(cfg, Run("spt", 43)) == cfg
    assert pretrain_sup_settings(cfg, None) == cfg
    # a setting of the sweep replaces the weighting and lambda, nothing else
    swept = pretrain_sup_settings(cfg.model_copy(update={"lambda_schedule": "constant", "lambda_min": 0.0}),
                                  Run("spt", 43, Setting("normalized", 3)))
    assert (swept.weighting, swept.lambda_, swept.max_steps) == ("normalized", 3.0, 70)


def test_each_arm_starts_from_its_own_checkpoint_with_finetunes_steps():
    params = SimpleNamespace(finetune=FinetuneConfig(init_from="pretrain_sup", max_steps=40))
    for run, start in ((None, "models/pretrain_sup"), (Run("spt", 43), "models/study/spt-43/pretrain_sup"),
                       (Run("tapt", 43, labels_per_class=8), "models/study/tapt-n8-43/pretrain_sup"),
                       (Run("baseline", 43), "models/pretrain_unsup")):
        cfg, init_dir = finetune_settings(params, run, lambda: pytest.fail("only a matched baseline reads the data"))
        assert (str(init_dir), cfg.max_steps) == (start, 40)
        assert cfg.init_from == ("pretrain_unsup" if run and run.arm == "baseline" else "pretrain_sup")


def test_a_matched_baseline_adds_what_spts_pretraining_of_its_seed_spent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = tmp_path / "metrics/study/spt-n8-43/pretrain_sup.json"  # the spt run of the same point and seed
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"steps": 10, "global_batch_size": 32, "flops": 1e12}))
    params = SimpleNamespace(finetune=FinetuneConfig(max_steps=40, batch_size=16))
    cfg, init_dir = finetune_settings(params, Run("baseline_matched", 43, labels_per_class=8), lambda: [5] * 100)
    assert (str(init_dir), cfg.init_from, cfg.max_steps) == ("models/pretrain_unsup", "pretrain_unsup", 40 + 20)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("module, section", [("pretrain_sup", PretrainSupConfig()),
                                             ("finetune", FinetuneConfig(init_from="pretrain_unsup"))])
def test_a_study_run_trains_with_its_own_seed(monkeypatch, module, section):
    """The main chain trains with params.yaml's seed; a study run with its own (its runtime is set up with it)."""
    import importlib

    stage = importlib.import_module(f"stages.{module}")
    params = SimpleNamespace(seed=42, runtime=None, **{module: section})
    seeds = []

    def configure_runtime(runtime, seed):
        seeds.append(seed)
        raise _Stop  # before any file is read

    monkeypatch.setattr("spt.train.runtime.configure_runtime", configure_runtime)
    for run in (None, Run("tapt" if module == "pretrain_sup" else "baseline", 43)):
        with pytest.raises(_Stop):
            stage.main(params, run)
    assert seeds == [42, 43]

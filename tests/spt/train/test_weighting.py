"""The weighting modes inside the real Trainer (tiny BERT, CPU): lambda = 0 is plain masked-LM in every
mode, gradcos gates the encoder's masked-LM gradient by the step's cosine (with accumulation too), the
measured gradients are those of the step and change nothing, and the learned uncertainty weights
train in their own group and stay out of the saved model."""

import datasets
import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    TrainerCallback,
    default_data_collator,
)

from spt.config import PretrainSupConfig, RuntimeConfig
from spt.model.encoders import EncoderForSupervisedPretraining
from spt.train.losses import gradcos_gradient, gradient_agreement, uncertainty_loss
from spt.train.runtime import training_arguments
from spt.train.trainers import JointLossTrainer

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
MODES = ["fixed", "normalized", "uncertainty", "gradcos"]


def examples(rows: int = 8) -> datasets.Dataset:
    """Rows of 10 tokens, 3 masked-token targets each (per-batch means weigh every row alike)."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 60, (rows, 10), generator=generator)
    masked = torch.full_like(input_ids, -100)
    masked[:, 1::4] = input_ids[:, 1::4]
    return datasets.Dataset.from_dict({"input_ids": input_ids.tolist(), "mlm_labels": masked.tolist(),
                                       "labels": torch.randint(0, 3, (rows,), generator=generator).tolist()}
                                      ).with_format("torch")


class EncoderGradients(TrainerCallback):
    """The gradients the optimizer is about to apply, per step."""

    def __init__(self):
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: D102
        self.steps.append({name: p.grad.detach().clone() for name, p in model.named_parameters()
                           if p.grad is not None})


def make_trainer(tmp_path, weighting, batch_size=8, accumulation=1, steps=1, lam=1.0, **cfg):
    torch.manual_seed(0)
    model = EncoderForSupervisedPretraining(BertConfig(**TINY))
    joint = PretrainSupConfig(**{"lambda": lam, "weighting": weighting, "max_steps": steps, "batch_size": batch_size,
                                 "gradient_accumulation_steps": accumulation, "logging_steps": 1, **cfg})
    args = training_arguments(joint, tmp_path / f"{weighting}-{batch_size}x{accumulation}", 0, RuntimeConfig(),
                              save_strategy="no", disable_tqdm=True, label_names=["labels"], max_grad_norm=0.0,
                              ddp_find_unused_parameters=True)
    gradients = EncoderGradients()
    trainer = JointLossTrainer(model=model, joint=joint, args=args, train_dataset=examples(),
                               data_collator=default_data_collator, callbacks=[gradients])
    return trainer, gradients


def batch():
    return default_data_collator([examples()[i] for i in range(8)])


def per_loss_gradients(model, inputs):
    """g_mlm and g_sup of every trainable parameter, taken apart by hand."""
    outputs = model(**inputs)
    params = dict(model.named_parameters())
    grads = {}
    for key, loss in (("mlm", outputs.mlm_loss), ("supervised", outputs.cls_loss)):
        values = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
        grads[key] = {name: torch.zeros_like(p) if g is None else g
                      for (name, p), g in zip(params.items(), values, strict=True)}
    return grads


@pytest.mark.parametrize("weighting", MODES)
def test_lambda_zero_is_plain_masked_lm_in_every_mode(tmp_path, weighting):
    trainer, gradients = make_trainer(tmp_path, weighting, lam=0.0)
    model = trainer.model.train()
    inputs = batch()
    plain = model(**{key: value for key, value in inputs.items() if key != "labels"}).mlm_loss
    assert torch.equal(trainer.compute_loss(model, inputs), plain)
    assert not hasattr(model, "loss_weighting")  # nothing learned at lambda = 0
    trainer.train()
    assert gradients.steps[0] and not any(name.startswith("classifier") for name in gradients.steps[0])  # untouched
    logged = trainer.state.log_history[0]
    assert (logged["weight_mlm"], logged["weight_supervised"]) == (1.0, 0.0)
    assert "grad_cosine" not in logged  # nothing measured at lambda = 0


@pytest.mark.parametrize("accumulation", [1, 2])
def test_gradcos_gates_the_encoders_mlm_gradient_by_the_steps_cosine(tmp_path, accumulation):
    trainer, gradients = make_trainer(tmp_path, "gradcos", batch_size=8 // accumulation, accumulation=accumulation,
                                      lam=0.5)
    torch.manual_seed(0)
    reference = EncoderForSupervisedPretraining(BertConfig(**TINY)).train()  # the same initial weights
    grads = per_loss_gradients(reference, batch())
    trainer.train()
    applied = gradients.steps[0]
    encoder = [name for name, p in reference.named_parameters() if name.startswith("bert.")]
    mlm, supervised = [grads["mlm"][n] for n in encoder], [grads["supervised"][n] for n in encoder]
    norm_mlm, norm_supervised, cosine = gradient_agreement(mlm, supervised)
    expected = dict(zip(encoder, gradcos_gradient(mlm, supervised, 0.5), strict=True))
    for name in encoder:
        assert torch.allclose(applied[name], expected[name], rtol=1e-4, atol=1e-7), name
    for name in ("classifier.weight", "cls.predictions.transform.dense.weight"):  # the heads: their full gradients
        assert torch.allclose(applied[name], grads["mlm"][name] + 0.5 * grads["supervised"][name], atol=1e-7)
    logged = trainer.state.log_history[0]
    assert logged["grad_cosine"] == pytest.approx(cosine, abs=1e-5)
    assert logged["grad_norm_mlm"] == pytest.approx(norm_mlm, rel=1e-5)
    assert logged["grad_norm_supervised"] == pytest.approx(norm_supervised, rel=1e-5)
    assert logged["weight_mlm"] == pytest.approx(max(0.0, cosine), abs=1e-5)
    assert logged["weight_supervised"] == 0.5


def test_measuring_the_gradients_changes_nothing(tmp_path, monkeypatch):
    measured, measured_gradients = make_trainer(tmp_path / "a", "fixed", steps=2)
    measured.train()
    assert "grad_cosine" in measured.state.log_history[0]
    monkeypatch.setattr(JointLossTrainer, "_measures_this_step", lambda self: False)
    plain, plain_gradients = make_trainer(tmp_path / "b", "fixed", steps=2)
    plain.train()
    assert "grad_cosine" not in plain.state.log_history[0]
    for step in range(2):
        assert plain_gradients.steps[step]
        assert measured_gradients.steps[step].keys() == plain_gradients.steps[step].keys()
        assert all(torch.equal(measured_gradients.steps[step][n], plain_gradients.steps[step][n])
                   for n in plain_gradients.steps[step])
    # a diagnostic, not training compute: the FLOP-matched baseline must not be handed it
    assert measured.state.total_flos == plain.state.total_flos > 0


def test_gradcos_counts_the_gradients_it_trains_with(tmp_path, monkeypatch):
    gated, _ = make_trainer(tmp_path / "a", "gradcos", steps=2)
    gated.train()
    fixed, _ = make_trainer(tmp_path / "b", "fixed", steps=2)
    fixed.train()
    assert gated.state.total_flos > 1.5 * fixed.state.total_flos


def test_normalized_weighs_the_supervised_loss_by_ln_v_over_ln_c(tmp_path):
    trainer, _ = make_trainer(tmp_path, "normalized", lam=2.0)
    model = trainer.model.train()
    outputs = model(**batch())
    factor = 2.0 * torch.log(torch.tensor(60.0)) / torch.log(torch.tensor(3.0))
    assert trainer.compute_loss(model, batch()).item() == pytest.approx(
        (outputs.mlm_loss + factor * outputs.cls_loss).item(), rel=1e-6)


def test_uncertainty_weights_train_in_their_own_group_and_stay_out_of_the_saved_model(tmp_path):
    trainer, _ = make_trainer(tmp_path, "uncertainty", steps=4, uncertainty_learning_rate=0.1, warmup_ratio=0.0)
    weights = trainer.model.loss_weighting.log_variance
    trainer.train()
    group = trainer.optimizer.param_groups[-1]
    assert group["params"] == [weights] and group["weight_decay"] == 0.0 and group["initial_lr"] == 0.1
    # L_mlm (about ln 60 = 4.1) and L_sup (about ln 3 = 1.1) both exceed 1/2: both log-variances rise
    assert trainer.learned_log_variance[0] > 0.1 and trainer.learned_log_variance[1] > 0.1
    assert trainer.learned_log_variance == weights.detach().tolist()
    logged = [row for row in trainer.state.log_history if "weight_mlm" in row]
    assert logged[0]["weight_mlm"] == 1.0 and logged[-1]["weight_mlm"] < 1.0  # logged per step, moving
    fixed, _ = make_trainer(tmp_path / "fixed", "fixed", steps=1)
    fixed.train()
    # the first step's weights are 1 and lambda: the model's gradient norm is that of fixed, without the
    # log-variances' gradient (about L - 1/2, which would dominate it and its clipping)
    assert logged[0]["grad_norm"] == pytest.approx(fixed.state.log_history[0]["grad_norm"], rel=1e-6)
    assert not hasattr(trainer.model, "loss_weighting")
    # pretrain_sup validates after training: the loss then weighs with the learned values
    inputs = batch()
    outputs = trainer.model.eval()(**inputs)
    expected = uncertainty_loss(outputs.mlm_loss, outputs.cls_loss, 1.0, torch.tensor(trainer.learned_log_variance))
    assert torch.equal(trainer.compute_loss(trainer.model, inputs), expected)
    trainer.model.save_pretrained(tmp_path / "saved")
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), framework="pt") as saved:
        keys = list(saved.keys())
    assert keys and not any("loss_weighting" in key for key in keys)
    for auto in (AutoModelForSequenceClassification, AutoModelForMaskedLM):
        _, info = auto.from_pretrained(tmp_path / "saved", output_loading_info=True)
        assert not info["unexpected_keys"] or all("loss_weighting" not in k for k in info["unexpected_keys"])

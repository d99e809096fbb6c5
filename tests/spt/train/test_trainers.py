"""The trainers (spt/train/trainers.py) in process: gradient accumulation k with batch B/k gives the loss and gradient
of batch B. The same across processes (torchrun): tests/e2e/test_distributed.py."""

import datasets
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, default_data_collator

from spt.config import PretrainSupConfig, RuntimeConfig, TrainingConfig
from spt.model.encoders import EncoderForPackedMaskedLM, EncoderForSupervisedPretraining
from spt.train.runtime import training_arguments
from spt.train.trainers import JointLossTrainer, StageTrainer

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def examples(mlm_key: str | None) -> datasets.Dataset:
    """16 rows of 10 tokens with a class label; with ``mlm_key`` the masked-token targets under that
    name, 3 per row, so that per-batch means weigh every row alike."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 60, (16, 10), generator=generator)
    rows = {"input_ids": input_ids.tolist(), "labels": torch.randint(0, 3, (16,), generator=generator).tolist()}
    if mlm_key:
        masked = torch.full_like(input_ids, -100)
        masked[:, 1::4] = input_ids[:, 1::4]
        rows[mlm_key] = masked.tolist()
    return datasets.Dataset.from_dict(rows).with_format("torch")


def first_step(trainer_class, model_class, mlm_key, batch_size, accumulation, tmp_path, **extra):
    torch.manual_seed(0)
    model = model_class(BertConfig(**TINY))
    cfg = TrainingConfig(max_steps=1, batch_size=batch_size, gradient_accumulation_steps=accumulation,
                         logging_steps=1, learning_rate=1e-3)
    args = training_arguments(cfg, tmp_path / f"{batch_size}x{accumulation}", 0, RuntimeConfig(),
                              save_strategy="no", disable_tqdm=True, **extra.pop("arguments", {}))
    trainer = trainer_class(model=model, args=args, train_dataset=examples(mlm_key),
                            data_collator=default_data_collator, **extra)
    trainer.train()
    return trainer.state.log_history[0]


@pytest.mark.parametrize("trainer_class, model_class, mlm_key, extra", [
    (StageTrainer, EncoderForPackedMaskedLM, "labels", {}),  # pretrain_unsup: its labels are the masked tokens
    (StageTrainer, BertForSequenceClassification, None, {}),  # finetune
    (JointLossTrainer, EncoderForSupervisedPretraining, "mlm_labels",  # pretrain_sup
     {"joint": PretrainSupConfig(), "arguments": {"label_names": ["labels"]}}),
], ids=["pretrain_unsup", "finetune", "pretrain_sup"])
def test_gradient_accumulation_does_not_scale_the_loss(tmp_path, trainer_class, model_class, mlm_key, extra):
    whole = first_step(trainer_class, model_class, mlm_key, 8, 1, tmp_path, **dict(extra))
    split = first_step(trainer_class, model_class, mlm_key, 4, 2, tmp_path, **dict(extra))
    for key in ("loss", "grad_norm"):
        assert split[key] == pytest.approx(whole[key], rel=1e-4), (
            f"{key}: {split[key]:.5g} with 2 accumulation steps of 4, {whole[key]:.5g} with one batch of 8")

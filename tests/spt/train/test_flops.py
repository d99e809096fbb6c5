"""FLOPs are counted, and the count agrees with a hand count on the tiny model."""

import datasets
import torch
from transformers import BertConfig, BertForSequenceClassification

from spt.config import RuntimeConfig, TrainingConfig
from spt.train.flops import classifier_step_flops, steps_for_flops
from spt.train.runtime import training_arguments
from spt.train.trainers import StageTrainer

H, LAYERS, INTERMEDIATE, CLASSES = 32, 2, 64, 2
CONFIG = BertConfig(vocab_size=100, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=2,
                    intermediate_size=INTERMEDIATE, num_labels=CLASSES)


def hand_count_forward(rows: int, width: int) -> int:
    """Matrix products of a BERT classifier's forward pass, 2 FLOPs per multiply-add."""
    tokens = rows * width
    per_layer = (4 * 2 * tokens * H * H          # query, key, value and attention output projections
                 + 2 * 2 * rows * width * width * H  # scores (QK^T) and their weighted sum of values
                 + 2 * 2 * tokens * H * INTERMEDIATE)  # the feed-forward block, up and down
    return LAYERS * per_layer + 2 * rows * H * H + 2 * rows * H * CLASSES  # pooler, classifier


def test_a_training_step_counts_forward_and_twice_that_backward():
    # every weight trains: backward computes the gradient of each input and each weight
    assert classifier_step_flops(CONFIG)(8, 16) == 3 * hand_count_forward(8, 16) == 14_208_000


def test_the_trainer_counts_every_step_on_its_real_batches(tmp_path):
    torch.manual_seed(0)
    rows = [{"input_ids": [2] + [5 + (i + j) % 90 for j in range(width - 2)] + [3], "label": i % 2}
            for i, width in enumerate([16] * 8 + [10] * 8)]  # batches of 8 drawn at random from two widths
    cfg = TrainingConfig(max_steps=2, batch_size=8, save_steps=100, logging_steps=1, learning_rate=1e-3)

    class Tokenizer:  # what DataCollatorWithPadding needs
        pad_token_id = 0
        model_input_names = ["input_ids", "attention_mask"]
        padding_side = "right"

        def pad(self, features, **kwargs):
            width = max(len(f["input_ids"]) for f in features)
            ids = torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features])
            return {"input_ids": ids, "attention_mask": (ids != 0).long(),
                    "labels": torch.tensor([f["label"] for f in features])}

    trainer = StageTrainer(
        model=BertForSequenceClassification(CONFIG),
        args=training_arguments(cfg, tmp_path, 0, RuntimeConfig(num_threads=1), remove_unused_columns=False,
                                disable_tqdm=True),
        train_dataset=datasets.Dataset.from_list(rows), data_collator=lambda batch: Tokenizer().pad(batch))
    widths = []
    collate = trainer.data_collator
    trainer.data_collator = lambda batch: widths.append(max(len(f["input_ids"]) for f in batch)) or collate(batch)
    trainer.train()
    steps = [3 * hand_count_forward(8, width) for width in widths]  # each batch is padded to its longest text
    assert len(steps) == 2 and trainer.state.total_flos == sum(steps)
    logged = [entry["flops"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged == [steps[0], sum(steps)]  # the running total at each logged step


def test_steps_for_a_flop_budget_pad_as_length_grouping_does():
    step = classifier_step_flops(CONFIG)
    lengths = [16] * 8 + [10] * 8
    one_of_each = step(8, 16) + step(8, 10)
    assert steps_for_flops(one_of_each, lengths, 8, step) == 2
    assert steps_for_flops(one_of_each + 1, lengths, 8, step) == 3
    assert steps_for_flops(0, lengths, 8, step) == 0

"""The encoders: where a model comes from, and the two BERT variants the pretraining stages train.

Both classes keep BERT's own parameter names (``bert.*``, ``cls.predictions.*``, ``classifier.*``)
so their checkpoints load with plain ``AutoModelForMaskedLM`` / ``AutoModelForSequenceClassification``
and no project code. They differ from the library classes in one place: the masked-LM vocabulary
projection runs only on masked positions (15% of tokens), which is most of the MLM cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertForMaskedLM, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.bert.modeling_bert import BertOnlyMLMHead
from transformers.utils import ModelOutput

from stages.common.config import ScratchConfig

IGNORE_INDEX = -100


def scratch_config(sizes: ScratchConfig, vocab_size: int, max_length: int, pad_token_id: int) -> BertConfig:
    """A BERT config of the ``model.scratch`` sizes for a tokenizer of ``vocab_size``."""
    return BertConfig(vocab_size=vocab_size, hidden_size=sizes.hidden_size,
                      num_hidden_layers=sizes.num_layers, num_attention_heads=sizes.num_heads,
                      intermediate_size=sizes.intermediate_size, max_position_embeddings=max(512, max_length),
                      pad_token_id=pad_token_id)


def masked_lm_loss(head: nn.Module, hidden: torch.Tensor, mlm_labels: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over masked positions only; returns (loss, logits of the masked positions)."""
    selected = mlm_labels != IGNORE_INDEX
    logits = head(hidden[selected])
    if logits.shape[0] == 0:  # nothing masked in this batch: zero loss that keeps the graph
        return logits.sum() * 0.0, logits
    return F.cross_entropy(logits.float(), mlm_labels[selected]), logits


def masked_predictions(masked_logits: torch.Tensor, mlm_labels: torch.Tensor) -> torch.Tensor:
    """Predicted token ids laid back onto the [batch, length] grid (-100 where nothing was masked).

    For ``preprocess_logits_for_metrics``: the Trainer gathers predictions per example, so they
    must keep the batch dimension.
    """
    grid = torch.full_like(mlm_labels, IGNORE_INDEX)
    grid[mlm_labels != IGNORE_INDEX] = masked_logits.argmax(dim=-1)
    return grid


class BertForPackedMaskedLM(BertForMaskedLM):
    """BertForMaskedLM whose loss projects only masked positions onto the vocabulary.

    With ``labels`` the returned logits are those of the masked positions, in row-major order of
    ``labels != -100``; without labels it behaves exactly like BertForMaskedLM.
    """

    saved_architecture = "BertForMaskedLM"

    def __init__(self, config: BertConfig):
        # BertForMaskedLM drops the pooler; the classifier stages need the source model's trained one.
        # It is kept (and frozen by pretrain_unsup, whose loss does not reach it) so nothing the source
        # model learned is lost between stages. AutoModelForMaskedLM ignores it when loading.
        BertPreTrainedModel.__init__(self, config)
        self.bert = BertModel(config)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):  # noqa: D102
        if labels is None:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = self.bert(input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        loss, logits = masked_lm_loss(self.cls, hidden, labels)
        return MaskedLMOutput(loss=loss, logits=logits)


@dataclass
class SupervisedPretrainingOutput(ModelOutput):
    """Both losses separately; the trainer combines them with lambda(t)."""

    mlm_loss: torch.Tensor | None = None
    cls_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None


class BertForSupervisedPretraining(BertPreTrainedModel):
    """One BERT encoder with two heads: masked-LM (``cls``) and sequence classification (``classifier``).

    Parameter names match BertForMaskedLM and BertForSequenceClassification, so the checkpoint loads
    as either with plain transformers; finetuning from it carries the trained classifier over.
    """

    saved_architecture = "BertForSequenceClassification"
    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)  # with the pooler, as BertForSequenceClassification has
        self.cls = BertOnlyMLMHead(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_output_embeddings(self):  # noqa: D102 - needed for weight tying
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):  # noqa: D102
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(self, input_ids=None, attention_mask=None, mlm_labels=None, labels=None, clean_input_ids=None,
                **kwargs):
        """``mlm_labels``: -100 except at masked positions; ``labels``: class id, -100 for unlabeled rows.

        With ``clean_input_ids`` (the unmasked text) the classifier reads a second encoder pass over
        them, as it will in finetuning and at test time; else it reads the masked pass that L_mlm uses.
        """
        outputs = self.bert(input_ids, attention_mask=attention_mask, return_dict=True)
        classified = outputs if clean_input_ids is None else self.bert(
            clean_input_ids, attention_mask=attention_mask, return_dict=True)
        logits = self.classifier(self.dropout(classified.pooler_output))
        mlm_loss = mlm_logits = cls_loss = None
        if mlm_labels is not None:
            mlm_loss, mlm_logits = masked_lm_loss(self.cls, outputs.last_hidden_state, mlm_labels)
        if labels is not None:
            cls_loss = classification_loss(logits, labels)
        return SupervisedPretrainingOutput(mlm_loss=mlm_loss, cls_loss=cls_loss, logits=logits,
                                           mlm_logits=mlm_logits)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labeled rows (label != -100); zero, graph kept, when there are none."""
    labeled = labels != IGNORE_INDEX
    if not bool(labeled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labeled].float(), labels[labeled])

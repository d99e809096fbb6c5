"""The encoders the pretraining stages train: any architecture transformers has both an
``AutoModelForMaskedLM`` and an ``AutoModelForSequenceClassification`` class for.

One generic model, not one class per architecture. It holds the architecture's own masked-LM model
and sequence classifier, built by the Auto classes, sharing one encoder instance. Their modules are
registered on it under their own names (``bert.*``, ``cls.*``, ``classifier.*``; ``roberta.*``,
``lm_head.*``, ...), so its state dict is the union of the two models' and a saved checkpoint loads
with plain ``AutoModelForMaskedLM`` / ``AutoModelForSequenceClassification`` and no project code.
A module both models have under one name (ModernBERT's ``head``) is one shared module: a checkpoint
holds one tensor per name, and it is the module transformers itself gives a ModernBERT classifier
loaded from a masked-LM checkpoint.

The encoder is the classifier's, so what the classifier reads and the masked-LM class would drop
is kept (BERT's pooler, frozen in masked-LM pretraining, which never reaches it). The masked-LM
vocabulary projection, most of the MLM cost, runs only on masked positions (about 15% of tokens)
wherever the architecture's head is known (:data:`MLM_HEADS`); any other architecture uses its
full head and then keeps the masked positions, the same loss at the full cost.

The parts are kept outside the module tree (they would duplicate every parameter name), so
``nn.DataParallel``, the Trainer's single-process multi-GPU mode, would not replicate them: start
several GPUs with ``runtime.launch: torchrun ...`` (DDP), as docs/scaling.md says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import MaskedLMOutput
from transformers.utils import ModelOutput

from spt.config import ScratchConfig

IGNORE_INDEX = -100

# model_type -> the masked-LM model's modules between the encoder's last hidden state and the
# vocabulary logits, applied in order (the same chain the architecture's own forward applies).
MLM_HEADS: dict[str, tuple[str, ...]] = {
    "bert": ("cls",),
    "roberta": ("lm_head",),
    "xlm-roberta": ("lm_head",),
    "deberta-v2": ("cls",),  # legacy=False models use lm_predictions instead: full-head fallback
    "electra": ("generator_predictions", "generator_lm_head"),
    "distilbert": ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),
    "modernbert": ("head", "decoder"),
}


def scratch_config(sizes: ScratchConfig, tokenizer: Any, max_length: int) -> PreTrainedConfig:
    """A config of ``model.scratch``'s architecture and sizes, for ``tokenizer``.

    Special-token ids come from the tokenizer; positions cover ``max_length`` (RoBERTa-likes count
    positions from pad_token_id + 1, hence the margin).
    """
    specials = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id")
                for name in ("pad", "bos", "eos", "cls", "sep") if getattr(tokenizer, f"{name}_token_id") is not None}
    architecture = sizes.architecture
    sized = {"hidden_size": sizes.hidden_size, "num_hidden_layers": sizes.num_layers,
             "num_attention_heads": sizes.num_heads, "intermediate_size": sizes.intermediate_size}
    if architecture == "distilbert":  # its own name (its attribute_map covers the others)
        sized["hidden_dim"] = sized.pop("intermediate_size")
    if architecture == "electra":  # embeddings as wide as the encoder: no projection between them
        sized["embedding_size"] = sizes.hidden_size
    if architecture == "deberta-v2":  # its pooler reads the encoder's width
        sized["pooler_hidden_size"] = sizes.hidden_size
    config = AutoConfig.for_model(architecture, vocab_size=len(tokenizer),
                                  max_position_embeddings=max(512, max_length + 2), **sized, **specials)
    return config


def masked_lm_loss(head: Any, hidden: torch.Tensor, mlm_labels: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over masked positions only; returns (loss, logits of the masked positions).

    ``head`` maps hidden states [n, hidden] to vocabulary logits [n, vocab]; only the rows where
    ``mlm_labels != -100`` are passed to it.
    """
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


class _Parts:
    """Plain holder of the two Auto models, so nn.Module does not register them a second time."""

    def __init__(self, classifier: PreTrainedModel, masked_lm: PreTrainedModel):
        self.classifier, self.masked_lm = classifier, masked_lm


class _SharedEncoderModel(PreTrainedModel):
    """The architecture's masked-LM model and classifier on one encoder (see the module docstring).

    Subclasses set ``with_classifier``: whether the classifier's own modules (its head, DeBERTa's
    pooler) are part of the model, and so of its checkpoint, whose config then names the
    architecture's classifier class (``saved_architecture``), else its masked-LM class.
    """

    with_classifier: bool
    # The parts, built first, chose and checked the attention implementation; none runs here.
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = _supports_attention_backend = True

    def __init__(self, config: PreTrainedConfig, classifier: PreTrainedModel | None = None,
                 masked_lm: PreTrainedModel | None = None):
        classifier = classifier or AutoModelForSequenceClassification.from_config(config)
        masked_lm = masked_lm or AutoModelForMaskedLM.from_config(config)
        super().__init__(config)
        self.base_model_prefix = prefix = masked_lm.base_model_prefix
        mlm_encoder_names = {name for name, _ in getattr(masked_lm, prefix).named_parameters()}
        for name, module in classifier.named_children():
            if name in dict(masked_lm.named_children()):
                setattr(masked_lm, name, module)  # the encoder, and a head both name alike: one module
        for part in (masked_lm, classifier) if self.with_classifier else (masked_lm,):
            for name, module in part.named_children():
                self.add_module(name, module)
        # e.g. BERT's pooler: the classifier reads it, the masked-LM loss never reaches it
        self.unreached_by_mlm = [parameter for name, parameter in getattr(self, prefix).named_parameters()
                                 if name not in mlm_encoder_names]
        self._parts = _Parts(classifier, masked_lm)
        self._tied_weights_keys = dict(masked_lm._tied_weights_keys or {})
        self.model_type = config.model_type
        self.saved_architecture = type(classifier if self.with_classifier else masked_lm).__name__
        from transformers import initialization

        with initialization.no_init_weights():  # the parts are initialised (or loaded) already
            self.post_init()

    @classmethod
    def from_pretrained(cls, name_or_path: str, **classifier_kwargs: Any) -> _SharedEncoderModel:  # noqa: D417
        """Both parts loaded from one directory by the Auto classes, each initialising what the
        checkpoint lacks (e.g. a fresh classifier); ``classifier_kwargs`` (num_labels, id2label,
        label2id) go to the classifier's config."""
        classifier = AutoModelForSequenceClassification.from_pretrained(name_or_path, **classifier_kwargs)
        masked_lm = AutoModelForMaskedLM.from_pretrained(name_or_path)
        return cls(classifier.config if cls.with_classifier else masked_lm.config, classifier, masked_lm)

    def train(self, mode: bool = True) -> _SharedEncoderModel:  # noqa: D102 - the parts' own flags too
        super().train(mode)
        self._parts.classifier.training = self._parts.masked_lm.training = mode
        return self

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The encoder's last hidden state [batch, length, hidden]."""
        return self.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def mlm_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, mlm_labels: torch.Tensor,
                 hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked-LM loss, logits of the masked positions): the head on masked positions only when
        the architecture's head is known, else its full head; ``hidden`` reuses an encoder pass."""
        path = MLM_HEADS.get(self.model_type, ())
        if path and all(hasattr(self, name) for name in path):
            if hidden is None:
                hidden = self.encode(input_ids, attention_mask)

            def head(states: torch.Tensor) -> torch.Tensor:
                for name in path:
                    states = getattr(self, name)(states)
                return states

            return masked_lm_loss(head, hidden, mlm_labels)
        logits = self._parts.masked_lm(input_ids=input_ids, attention_mask=attention_mask).logits
        return masked_lm_loss(nn.Identity(), logits, mlm_labels)


class EncoderForPackedMaskedLM(_SharedEncoderModel):
    """Masked-LM training whose loss projects only masked positions onto the vocabulary.

    ``forward(input_ids, attention_mask, labels)``: with ``labels`` (-100 except at masked positions)
    the returned logits are those of the masked positions, in row-major order of ``labels != -100``;
    without labels, the architecture's masked-LM forward (full logits). The encoder is the
    classifier's, with what the masked-LM class would drop (BERT's pooler) kept and frozen; the
    classifier's own modules are not part of it, so a classifier built from its checkpoint starts
    a fresh head under its own seed, as from any masked-LM checkpoint.
    """

    with_classifier = False

    def __init__(self, config: PreTrainedConfig, classifier: PreTrainedModel | None = None,
                 masked_lm: PreTrainedModel | None = None):
        super().__init__(config, classifier, masked_lm)
        for parameter in self.unreached_by_mlm:
            parameter.requires_grad_(False)  # kept as the source had it

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):  # noqa: D102
        if labels is None:
            return self._parts.masked_lm(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        loss, logits = self.mlm_loss(input_ids, attention_mask, labels)
        return MaskedLMOutput(loss=loss, logits=logits)


@dataclass
class SupervisedPretrainingOutput(ModelOutput):
    """Both losses separately; the trainer combines them with lambda(t)."""

    mlm_loss: torch.Tensor | None = None
    cls_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None


class EncoderForSupervisedPretraining(_SharedEncoderModel):
    """One encoder with two heads, the architecture's masked-LM head and its classification head.

    The checkpoint loads as either Auto class with plain transformers; finetuning from it carries
    the trained classifier over. Its config names the architecture's sequence-classification class.
    """

    with_classifier = True

    def classify(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, keep_hidden: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The architecture's own classifier forward: (logits, and if ``keep_hidden`` the encoder's
        last hidden state of the same pass, else None)."""
        captured: list[torch.Tensor] = []
        hook = self.base_model.register_forward_hook(
            lambda module, args, output: captured.append(output[0])) if keep_hidden else None
        try:
            logits = self._parts.classifier(input_ids=input_ids, attention_mask=attention_mask).logits
        finally:
            if hook is not None:
                hook.remove()
        return logits, (captured[0] if captured else None)

    def forward(self, input_ids=None, attention_mask=None, mlm_labels=None, labels=None, clean_input_ids=None,
                **kwargs):
        """``mlm_labels``: -100 except at masked positions; ``labels``: class id, -100 for unlabeled rows.

        With ``clean_input_ids`` (the unmasked text) the classifier reads a second encoder pass over
        them, as it will in finetuning and at test time; else it reads the masked pass that L_mlm uses.
        """
        if clean_input_ids is None:
            logits, hidden = self.classify(input_ids, attention_mask, keep_hidden=mlm_labels is not None)
        else:
            (logits, _), hidden = self.classify(clean_input_ids, attention_mask), None
        mlm_loss = mlm_logits = cls_loss = None
        if mlm_labels is not None:
            mlm_loss, mlm_logits = self.mlm_loss(input_ids, attention_mask, mlm_labels, hidden)
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

"""Floors that need no pretraining: logistic regression on TF-IDF features, or on the source model's
frozen mean-pooled embeddings (the study_floors stage, run by ``stages.evaluate --arm``).

Both choose their regularisation C on the validation split alone: one model per C of
``floors.c_grid`` is fitted on the training split, and the one with the best validation macro-F1
(finetune's early-stopping score; ties go to the first C listed) predicts the test split. There is no
refit on train + validation: the trained arms never learn from validation either. Test labels are
never an input here (evaluate scores the predictions), so they cannot steer the choice. Every step
is deterministic (lbfgs has no random state), so a floor runs once, with no seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spt.metrics import classification_scores

MAX_ITER = 2000  # lbfgs iterations; C = 100 on ~100k TF-IDF features needs more than the default 100


@dataclass(frozen=True)
class FloorFit:
    """The chosen C, every C's validation macro-F1, and the chosen model's test log-probabilities."""

    c: float
    validation_macro_f1: dict[float, float]
    test_log_probabilities: np.ndarray  # [test examples, classes]; their argmax is the prediction


def choose_and_predict(features: dict, train_labels: Sequence[int], validation_labels: Sequence[int],
                       c_grid: Sequence[float], n_classes: int, standardize: bool = False) -> FloorFit:
    """Fit logistic regression on ``features["train"]`` for each C, keep the best on validation, predict test.

    ``features`` maps train / validation / test to feature matrices (dense or sparse) in split order.
    ``standardize``: scale each feature to zero mean and unit variance on train first (dense embeddings,
    whose scale would otherwise shift which C is best; TF-IDF rows are already L2-normalised).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_labels, validation_labels = np.asarray(train_labels), np.asarray(validation_labels)
    scores: dict[float, float] = {}
    best = None
    for c in c_grid:
        classifier = LogisticRegression(C=c, max_iter=MAX_ITER)
        model = make_pipeline(StandardScaler(), classifier) if standardize else classifier
        model.fit(features["train"], train_labels)
        scores[c] = classification_scores(validation_labels, model.predict(features["validation"]))["macro_f1"]
        if best is None or scores[c] > scores[best[0]]:
            best = (c, model)
    c, model = best
    log_probabilities = np.full((features["test"].shape[0], n_classes), -np.inf)
    log_probabilities[:, model.classes_] = model.predict_log_proba(features["test"])
    return FloorFit(c, scores, log_probabilities)


def tfidf_features(texts: dict[str, list[str]]) -> dict:
    """TF-IDF of word unigrams and bigrams (sublinear tf), its vocabulary and IDF from the train texts only."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    features = {"train": vectorizer.fit_transform(texts["train"])}
    return {**features, **{split: vectorizer.transform(rows) for split, rows in texts.items() if split != "train"}}


def mean_pool(hidden, attention_mask):
    """Mean of the last layer's token vectors, weighted by the attention mask (padding counts for nothing)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def embed(model, input_ids: Sequence[Sequence[int]], pad_token_id: int, batch_size: int) -> np.ndarray:
    """Frozen mean-pooled last-layer embeddings of tokenized texts, in their order, as float32 [n, hidden].

    Batched by length (texts sorted by token count, so a batch pads little), then put back in order.
    """
    import torch

    lengths = np.array([len(ids) for ids in input_ids])
    order = np.argsort(lengths, kind="stable")
    pooled = np.zeros((len(input_ids), model.config.hidden_size), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = torch.full((len(rows), int(lengths[rows].max())), pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(batch)
            for i, row in enumerate(rows):
                batch[i, :lengths[row]] = torch.tensor(input_ids[row], dtype=torch.long)
                mask[i, :lengths[row]] = 1
            hidden = model(input_ids=batch, attention_mask=mask).last_hidden_state
            pooled[rows] = mean_pool(hidden, mask).float().numpy()
    return pooled

"""The floors without pretraining (study_floors): known answers on tiny constructed data."""

import contextlib
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from spt import paths
from spt.config import DeclaredParams, Params
from spt.tracking import Tracker
from study import floors
from study.run import Run
from tests.support import REPO

GOOD, BAD = ["good", "great", "fine", "superb"], ["bad", "awful", "poor", "dull"]
FILLER = ["the", "film", "plot", "cast", "was", "and", "its", "story"]


def reviews(count: int, seed: int) -> tuple[list[str], list[int]]:
    """Texts whose class shows in two words of a disjoint set per class, among 2-4 shared filler words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(count):
        label = i % 2
        words = list(rng.choice(FILLER, size=rng.integers(2, 5))) + list(rng.choice(BAD if label else GOOD, size=2))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def test_tfidf_floor_separates_separable_texts():
    texts, labels = {}, {}
    for split, count, seed in (("train", 80, 0), ("validation", 40, 1), ("test", 40, 2)):
        texts[split], labels[split] = reviews(count, seed)
    fit = floors.choose_and_predict(floors.tfidf_features(texts), labels["train"], labels["validation"],
                                    [0.1, 1.0, 10.0], n_classes=2)
    assert (fit.test_log_probabilities.argmax(axis=1) == np.array(labels["test"])).all()
    assert set(fit.validation_macro_f1) == {0.1, 1.0, 10.0}
    assert fit.validation_macro_f1[fit.c] == max(fit.validation_macro_f1.values()) == 1.0
    assert fit.c == 0.1  # every C is perfect on validation: the tie goes to the first listed


def test_c_is_the_one_that_wins_on_validation():
    """A tiny C shrinks every weight to ~0, so the classifier predicts the training majority everywhere
    (macro-F1 1/3 on balanced labels); a large C separates the classes. Which one is chosen follows the
    validation labels: the large C when they agree with the texts, the tiny C when they contradict them."""
    train_texts, train_labels = reviews(90, 0)
    train_texts, train_labels = train_texts + train_texts[:30:2], train_labels + train_labels[:30:2]  # 0: majority
    val_texts, val_labels = reviews(40, 1)
    test_texts, _ = reviews(40, 2)
    features = floors.tfidf_features({"train": train_texts, "validation": val_texts, "test": test_texts})
    agree = floors.choose_and_predict(features, train_labels, val_labels, [1e-4, 100.0], n_classes=2)
    assert agree.validation_macro_f1 == pytest.approx({1e-4: 1 / 3, 100.0: 1.0})
    assert agree.c == 100.0
    contradict = floors.choose_and_predict(features, train_labels, [1 - y for y in val_labels], [1e-4, 100.0], 2)
    assert contradict.validation_macro_f1 == pytest.approx({1e-4: 1 / 3, 100.0: 0.0})
    assert contradict.c == 1e-4
    assert (contradict.test_log_probabilities.argmax(axis=1) == 0).all()  # the majority class


def test_mean_pool_weights_tokens_by_the_attention_mask():
    import torch

    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert floors.mean_pool(hidden, mask).tolist() == [[2.0, 3.0], [7.0, 8.0]]


def tiny_encoder(directory: Path):
    """A random 2-layer BERT (hidden 32) and a word-level tokenizer for the constructed texts, saved as a
    model.source directory would be."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *GOOD, *BAD, *FILLER]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)})
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model.eval(), tokenizer


def test_embed_is_independent_of_batching_and_keeps_the_order(tmp_path):
    model, tokenizer = tiny_encoder(tmp_path / "encoder")
    texts, _ = reviews(9, 3)
    ids = tokenizer(texts)["input_ids"]
    assert tokenizer.unk_token_id not in sum(ids, [])
    assert len({len(row) for row in ids}) > 2  # lengths differ: batches pad
    batched = floors.embed(model, ids, tokenizer.pad_token_id, batch_size=4)
    alone = np.concatenate([floors.embed(model, [row], tokenizer.pad_token_id, batch_size=1) for row in ids])
    assert batched.shape == (9, 32)
    np.testing.assert_allclose(batched, alone, atol=1e-5)


# --------------------------------------------------------------------------------------------
# The stage: python -m stages.evaluate --arm tfidf|embeddings, on constructed prepared data


def write_processed(root: Path, test_labels: list[int] | None = None, tokenizer=None) -> None:
    """data/processed as prepare writes it (labeled splits with text and label, label map, data name)."""
    import datasets

    splits = {}
    for split, count, seed in (("train", 80, 0), ("validation", 40, 1), ("test", 40, 2)):
        texts, labels = reviews(count, seed)
        if split == "test" and test_labels is not None:
            labels = test_labels
        columns = {"text": texts, "label": labels}
        if tokenizer is not None:
            columns["input_ids"] = tokenizer(texts)["input_ids"]
        splits[split] = datasets.Dataset.from_dict(columns)
    datasets.DatasetDict(splits).save_to_disk(str(root / paths.LABELED))
    (root / paths.LABEL_MAP).write_text(json.dumps({"label2id": {"fresh": 0, "rotten": 1},
                                                    "id2label": {"0": "fresh", "1": "rotten"}}))
    (root / paths.DATASET).write_text(json.dumps({"name": "constructed", "labeled": "constructed"}))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(root / paths.TOKENIZER))


def floor_params(model_source: str = "scratch", c_grid=(0.01, 1.0, 100.0)) -> DeclaredParams:
    params = Params.model_validate({"data": {"labeled": "builtin:rotten_tomatoes"},
                                    "model": {"source": model_source}, "floors": {"c_grid": list(c_grid)},
                                    "runtime": {"num_threads": 1}})
    return DeclaredParams(params, ["model", "runtime", "evaluate", "floors"], "study_floors")


@pytest.fixture
def untracked(monkeypatch):
    """No MLflow: the stage's tracked_run yields an inactive tracker."""
    monkeypatch.setattr("spt.tracking.tracked_run",
                        lambda *args, **kwargs: contextlib.nullcontext(Tracker(active=False)))


def outputs(root: Path, floor: str) -> tuple[dict, list[dict]]:
    report = json.loads((root / paths.metrics_file("evaluate", floor)).read_text())
    with open(root / paths.plots_dir("evaluate", floor) / "confusion.csv") as handle:
        return report, list(csv.DictReader(handle))


def test_permuting_the_test_labels_changes_no_choice_and_no_prediction(tmp_path, monkeypatch, untracked):
    from stages.evaluate import evaluate_floor

    results = {}
    _, test_labels = reviews(40, 2)
    permuted = list(np.random.default_rng(5).permutation(test_labels))
    assert permuted != test_labels
    for name, labels in (("original", test_labels), ("permuted", permuted)):
        root = tmp_path / name
        write_processed(root, labels)
        monkeypatch.chdir(root)
        evaluate_floor(floor_params(), Run("tfidf"))
        results[name] = outputs(root, "tfidf")
    (original, original_rows), (shuffled, shuffled_rows) = results["original"], results["permuted"]
    assert original["accuracy"] == 1.0 and shuffled["accuracy"] < 1.0  # the test labels were read, for scoring
    assert original["c"] == shuffled["c"] == 0.01  # all perfect on validation: the first C
    assert original["validation_macro_f1"] == shuffled["validation_macro_f1"] == {"0.01": 1.0, "1": 1.0, "100": 1.0}
    assert [r["predicted"] for r in original_rows] == [r["predicted"] for r in shuffled_rows]
    assert [r["actual"] for r in original_rows] == ["fresh" if y == 0 else "rotten" for y in test_labels]
    assert original["test_examples"] == 40 and original["floor"] == "tfidf"


def test_embeddings_floor_on_the_source_model(tmp_path, monkeypatch, untracked):
    from stages.evaluate import evaluate_floor

    _, tokenizer = tiny_encoder(tmp_path / "encoder")
    write_processed(tmp_path, tokenizer=tokenizer)
    monkeypatch.chdir(tmp_path)
    evaluate_floor(floor_params(str(tmp_path / "encoder")), Run("embeddings"))
    report, rows = outputs(tmp_path, "embeddings")
    assert report["accuracy"] == 1.0 and report["features"] == 32  # the encoder's hidden size
    assert report["validation_macro_f1"][f"{report['c']:g}"] == max(report["validation_macro_f1"].values())
    assert report["model"]["source"] == str(tmp_path / "encoder")
    assert len(rows) == 40 and all(r["actual"] == r["predicted"] for r in rows)


def test_embeddings_floor_is_skipped_with_a_scratch_source(tmp_path, monkeypatch, untracked):
    from stages.evaluate import evaluate_floor

    write_processed(tmp_path)
    monkeypatch.chdir(tmp_path)
    evaluate_floor(floor_params("scratch"), Run("embeddings"))
    report, rows = outputs(tmp_path, "embeddings")
    assert report == {"floor": "embeddings", "skipped": report["skipped"]} and "scratch" in report["skipped"]
    assert rows == []  # the same files, with no rows


def test_floors_run_without_a_seed(monkeypatch):
    from stages.cli import run_stage

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("DVC_STAGE", "study_floors@tfidf")
    seen = []
    run_stage("doc", lambda params, run: seen.append((run, params.floors.c_grid)), "evaluate", ["--arm", "tfidf"],
              study=True)
    assert seen == [(Run("tfidf"), [0.01, 0.1, 1.0, 10.0, 100.0])] and seen[0][0].name == "tfidf"
    for argv in (["--arm", "tfidf", "--seed", "3"], ["--arm", "spt"],
                 ["--arm", "tfidf", "--weighting", "fixed", "--lambda", "2"]):  # a floor is no setting of the sweep
        with pytest.raises(SystemExit) as stop:
            run_stage("doc", lambda *args: None, "evaluate", argv, study=True)
        assert stop.value.code == 2

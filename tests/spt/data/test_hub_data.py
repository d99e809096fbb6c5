"""hf: datasets and official test splits (data.test), offline, through the path the Hub uses:
``datasets.load_dataset`` on a local dataset repository (data files and a README with configs)."""

import json

import datasets
import pandas as pd
import pytest
import yaml

from spt import paths
from spt.config import ConfigError, load_params
from spt.data.grammar import parse_hub_dataset
from spt.data.sources import iter_unlabeled, read_labeled
from spt.data.splits import normalize_text
from spt.errors import DataError
from stages import prepare
from stages.cli import stage_params

README = """---
configs:
- config_name: reviews
  data_files:
  - split: train
    path: data/train.csv
  - split: test
    path: data/test.csv
dataset_info:
  config_name: reviews
  features:
  - name: review
    dtype: string
  - name: sentiment
    dtype:
      class_label:
        names:
          '0': fresh
          '1': rotten
  - name: movie_name
    dtype: string
---
# Tiny reviews, as a dataset repository on the Hub would hold them
"""


@pytest.fixture(scope="module")
def dataset_repo(tmp_path_factory, tiny_data):
    """A dataset repository directory: train and test CSVs (test: the last 8 movies), ClassLabel
    labels, and one train review that repeats a test review in other case and spacing (a leak)."""
    frame = pd.read_csv(tiny_data / "labeled.csv")
    frame = pd.DataFrame({"review": frame["text"], "sentiment": (frame["label"] == "rotten").astype(int),
                          "movie_name": frame["movie_name"]})
    test_movies = sorted(frame["movie_name"].unique())[-8:]
    test = frame[frame["movie_name"].isin(test_movies)]
    train = frame[~frame["movie_name"].isin(test_movies)]
    leak = test.iloc[[0]].assign(review="  " + test["review"].iloc[0].upper() + " ", movie_name="elsewhere")
    train = pd.concat([train, leak], ignore_index=True)
    directory = tmp_path_factory.mktemp("hub") / "tiny-reviews"
    (directory / "data").mkdir(parents=True)
    train.to_csv(directory / "data" / "train.csv", index=False)
    test.to_csv(directory / "data" / "test.csv", index=False)
    (directory / "README.md").write_text(README)
    return directory


def test_hub_syntax():
    assert parse_hub_dataset("hf:stanfordnlp/imdb").repo == "stanfordnlp/imdb"
    spec = parse_hub_dataset("hf:nyu-mll/glue@bcdcba7:sst2:validation")
    assert (spec.repo, spec.revision, spec.config, spec.split) == ("nyu-mll/glue", "bcdcba7", "sst2", "validation")
    assert parse_hub_dataset("hf:stanfordnlp/imdb::unsupervised").split == "unsupervised"
    with pytest.raises(ValueError, match=r"is not hf:REPO\[@REVISION\]\[:CONFIG\]\[:SPLIT\]"):
        parse_hub_dataset("hf:not a repo")


def test_splits_and_class_names_from_a_dataset_repository(dataset_repo):
    source = f"hf:{dataset_repo}:reviews"
    whole = read_labeled(source, "review", "sentiment", None)
    assert set(whole.frame["label"]) == {"fresh", "rotten"}  # ClassLabel names, not ids
    official = read_labeled(source, "review", "sentiment", "movie_name", test="test")
    test_rows = pd.read_csv(dataset_repo / "data" / "test.csv")
    flagged = official.frame[official.frame["official_test"]]
    assert flagged["text"].tolist() == test_rows["review"].tolist()
    assert len(official.frame) == len(whole.frame)
    assert official.provenance["test_split"] == "test" and official.provenance["sha256"]
    with pytest.raises(DataError, match=r"has no split of that name; its splits are 'train', 'test'"):
        read_labeled(source, "review", "sentiment", None, test="heldout")


def test_unreachable_hub_id_says_how_to_work_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as error:
        read_labeled("hf:someone/not-cached-anywhere", "text", "label", None)
    message = str(error.value)
    assert "data.labeled = 'hf:someone/not-cached-anywhere'" in message
    assert "HF_HUB_OFFLINE=1 then reads the cache" in message and "hf:<directory>" in message


def test_unlabeled_hub_source_streams_one_split(dataset_repo):
    texts = list(iter_unlabeled(f"hf:{dataset_repo}:reviews:test", "review"))
    assert texts == pd.read_csv(dataset_repo / "data" / "test.csv")["review"].tolist()


def test_prepare_keeps_the_official_test_split(tiny_repo, dataset_repo, monkeypatch):
    monkeypatch.chdir(tiny_repo)
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["data"].update(labeled=f"hf:{dataset_repo}:reviews", test="test", text_column="review",
                          label_column="sentiment", unlabeled=[f"hf:{dataset_repo}:reviews:train"])
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params))
    prepare.main(stage_params(load_params(tiny_repo / "params.yaml"), "prepare"))
    splits = datasets.load_from_disk(str(paths.LABELED))
    official = pd.read_csv(dataset_repo / "data" / "test.csv")
    assert splits["test"]["text"] == official["review"].tolist()  # whole and in order
    assert splits["test"]["label"] == official["sentiment"].tolist()  # ids follow the sorted names: fresh 0
    report = json.loads(paths.DATA_REPORT.read_text())
    assert report["test_set"] == "test" and report["cross_split_shared_texts"] == 0
    assert report["dropped"]["in_official_test"] == 1  # the leaked review left train
    texts = {name: {normalize_text(t) for t in splits[name]["text"]} for name in splits}
    assert not texts["test"] & (texts["train"] | texts["validation"])
    rest = len(pd.read_csv(dataset_repo / "data" / "train.csv")) - 1
    assert len(splits["train"]) + len(splits["validation"]) <= rest
    assert len(splits["validation"]) == pytest.approx(0.2 * rest, abs=8)  # val_fraction of the rest (groups whole)


def test_a_split_name_needs_a_dataset_with_splits(tiny_repo, monkeypatch):
    monkeypatch.chdir(tiny_repo)
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["data"]["test"] = "test"
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"test = 'test' names a split, but labeled = 'data/tiny/labeled.csv' "
                                          r"has no splits; use a Hub dataset"):
        load_params(tiny_repo / "params.yaml")

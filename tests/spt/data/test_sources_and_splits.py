"""Reading, cleaning and splitting: clear errors on bad input, no leaks between splits."""


import numpy as np
import pandas as pd
import pytest

from spt.data.sources import LabeledSource, iter_unlabeled, read_labeled
from spt.data.splits import (
    assign_splits,
    clean_labeled,
    normalize_text,
    sample_per_class,
    split_labeled,
)
from spt.errors import DataError
from tests.support import REPO


def source(rows, labels=None):
    frame = pd.DataFrame(rows, columns=["text", "label"])
    return LabeledSource(frame, "test.csv", {}, labels, None)


def test_assign_splits_is_stratified_seeded_and_keeps_groups_together():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    groups = rng.integers(0, 200, size=len(labels))
    first = assign_splits(labels, groups, (0.8, 0.1, 0.1), seed=3)
    assert np.array_equal(first, assign_splits(labels, groups, (0.8, 0.1, 0.1), seed=3))
    assert not np.array_equal(first, assign_splits(labels, groups, (0.8, 0.1, 0.1), seed=4))
    for group in np.unique(groups):
        assert len(set(first[groups == group])) == 1
    for split, fraction in enumerate((0.8, 0.1, 0.1)):
        for label, total in ((0, 600), (1, 300), (2, 100)):
            share = np.sum((first == split) & (labels == label)) / total
            assert abs(share - fraction) < 0.06


def test_assign_splits_without_groups_hits_fractions_exactly_enough():
    labels = np.array([0] * 500 + [1] * 500)
    split = assign_splits(labels, None, (0.7, 0.2, 0.1), seed=0)
    assert np.bincount(split).tolist() == pytest.approx([700, 200, 100], abs=2)


def test_clean_counts_drops_and_removes_normalised_duplicates():
    frame, report = clean_labeled(source([
        ("Good film", "pos"), ("good   FILM", "pos"), ("  ", "pos"), (None, "neg"), ("Bad", None),
        ("Awful", "neg"), ("Meh", "other"), ("Fine", "pos")]), keep_labels=["pos", "neg"])
    assert report.as_dict() == {"rows_read": 8, "dropped": {
        "empty_text": 2, "missing_label": 1, "unknown_label": 1, "duplicate": 1, "in_official_test": 0}}
    assert sorted(frame["text"]) == ["Awful", "Fine", "Good film"]


def test_single_class_and_all_empty_are_errors():
    with pytest.raises(DataError, match="single class"):
        clean_labeled(source([("a", "x"), ("b", "x")]), None)
    with pytest.raises(DataError, match="no usable rows"):
        clean_labeled(source([(" ", "x"), ("", "y")]), None)


def test_a_listed_label_absent_from_the_data_is_named_with_the_labels_present():
    rows = [("a", "fresh"), ("b", "rotten"), ("c", "fresh")]
    with pytest.raises(DataError, match=r"data.labels lists 'splendid', which no row of test.csv holds; its labels "
                                        r"\(rows\) are 'fresh' \(2\), 'rotten' \(1\)"):
        clean_labeled(source(rows), keep_labels=["fresh", "splendid"])


@pytest.mark.parametrize("labels, continuous", [
    ([f"{0.5 + 0.01 * i:.2f}" for i in range(40)], True),  # 40 scores: a regression target
    ([f"{i}" for i in range(40)], False),  # 40 whole numbers: may be class ids
    ([f"{0.5 * i:.1f}" for i in range(1, 8)] * 6, False),  # 7 decimal values: few enough to be classes
])
def test_a_label_column_of_many_decimals_reads_as_a_regression_target(labels, continuous):
    rows = [(f"text {i}", label) for i, label in enumerate(labels)]
    if continuous:
        with pytest.raises(DataError, match=r"holds 40 distinct values, \d+ of them decimal numbers .*regression "
                                            "target"):
            clean_labeled(source(rows), None)
    else:
        frame, _ = clean_labeled(source(rows), None)
        assert len(frame) == len(rows)


def test_a_test_set_holding_every_labeled_row_leaves_nothing_to_train_on(tmp_path):
    rows = pd.DataFrame({"text": [f"review {i}" for i in range(10)], "label": ["a", "b"] * 5})
    rows.to_csv(tmp_path / "labeled.csv", index=False)
    rows.to_csv(tmp_path / "test.csv", index=False)  # a copy under another name: caught after cleaning
    read = read_labeled(str(tmp_path / "labeled.csv"), "text", "label", None, test=str(tmp_path / "test.csv"))
    with pytest.raises(DataError, match=r"nothing is left to train on: all 10 rows outside data.test share a text "
                                        r"with it \(10 dropped"):
        clean_labeled(read, None)
    with pytest.raises(DataError, match="names the same file as data.labeled"):  # the same path: caught at once
        read_labeled(str(tmp_path / "labeled.csv"), "text", "label", None, test=str(tmp_path / "labeled.csv"))


def test_split_too_small_for_every_class_names_the_class():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(42)], "label": ["a"] * 40 + ["b"] * 2})
    with pytest.raises(DataError, match="has no example of class 'b'"):
        split_labeled(frame, ["a", "b"], 0.1, 0.1, seed=0, description="x.csv")


def test_splits_share_no_text():
    frame = pd.DataFrame({"text": [f"review {i}" for i in range(300)], "label": ["a", "b", "c"] * 100})
    splits = split_labeled(frame, ["a", "b", "c"], 0.1, 0.1, seed=1, description="x")
    keys = [set(part["text"].map(normalize_text)) for part in splits.values()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert sum(len(part) for part in splits.values()) == 300


def test_sample_per_class():
    train = pd.DataFrame({"text": [f"t{i}" for i in range(30)], "label": ["a"] * 20 + ["b"] * 10})
    few = sample_per_class(train, 5, seed=0)
    assert few["label"].value_counts().to_dict() == {"a": 5, "b": 5}
    with pytest.raises(DataError, match="n_per_class = 12.*'b': 10"):
        sample_per_class(train, 12, seed=0)


@pytest.mark.parametrize("content, expected", [
    (b"", "the file is empty"),
    (b"text,label\n", "header but no data rows"),
    (b"texts,label\ngood,pos\nbad,neg\n", "column 'text' \\(did you mean 'texts'\\?\\) not found; the file has "
                                             "columns 'texts', 'label'"),
    (b"text,label\ngood,pos\ncaf\xe9,neg\n", "line 3: bytes b'\\\\xe9' are not valid UTF-8"),
    (b"text,label\n\x00\x01\x02,pos\n", "looks like a binary file"),
    (b"text,label,text\ngood,pos,x\nbad,neg,y\n", "line 1: the header names a column more than once \\('text' at "
                                                 "columns 1, 3\\)"),
    ({"jsonl": b'{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": \n'}, "labeled.jsonl, line 3: not "
                                                                                 "valid JSON"),
    ({"jsonl": b'{"text": "good", "label": "pos"}\n["bad", "neg"]\n'}, "line 2: a JSON list, not an object"),
])
def test_bad_labeled_files(tmp_path, content, expected):
    suffix, content = next(iter(content.items())) if isinstance(content, dict) else ("csv", content)
    path = tmp_path / f"labeled.{suffix}"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        read_labeled(str(path), "text", "label", None)


def test_mixed_label_types_and_missing_path(tmp_path):
    path = tmp_path / "labeled.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n')
    with pytest.raises(DataError, match="labels mix types"):
        read_labeled(str(path), "text", "label", None)
    with pytest.raises(DataError, match="no such file"):
        read_labeled(str(tmp_path / "none.csv"), "text", "label", None)


def test_formats_read_alike(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"], "grp": ["g", "h"]})
    frame.to_csv(tmp_path / "f.csv", index=False)
    frame.to_csv(tmp_path / "f.tsv", index=False, sep="\t")
    frame.to_json(tmp_path / "f.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "f.parquet")
    for name in ("f.csv", "f.tsv", "f.jsonl", "f.parquet"):
        read = read_labeled(str(tmp_path / name), "text", "label", "grp").frame
        assert read.to_dict("list") == {"text": ["a", "b"], "label": ["x", "y"], "group": ["g", "h"]}


def test_unlabeled_sources_stream_and_refuse_binary(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("one\ntwo\n")
    assert list(iter_unlabeled(str(text), "text")) == ["one\n", "two\n"]
    binary = tmp_path / "weights.txt"
    binary.write_bytes(b"\x00\x01PK\x03")
    with pytest.raises(DataError, match="binary"):
        list(iter_unlabeled(str(binary), "text"))
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"body": "x"}\n')
    with pytest.raises(DataError, match="column 'text'"):
        list(iter_unlabeled(str(jsonl), "text"))


def test_builtins_are_verified_and_read():
    rotten = read_labeled("builtin:rotten_tomatoes", "text", "label", "auto")
    assert rotten.group_column == "movie_name"
    assert len(rotten.frame) == 13905 and rotten.labels == ("fresh", "rotten")
    assert rotten.provenance["sha256"].startswith("26b56d24")
    bbc = read_labeled("builtin:bbc_news", "text", "label", "auto")
    assert sorted(bbc.frame["label"].unique()) == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(bbc.frame) == 2225
    plots = list(iter_unlabeled("builtin:rotten_tomatoes", "text"))
    assert len(plots) == 1097


def test_readme_mentions_every_builtin():
    readme = (REPO / "README.md").read_text()
    for name in ("builtin:rotten_tomatoes", "builtin:bbc_news", "builtin:all-minilm-l6-v2"):
        assert name in readme

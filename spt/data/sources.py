"""Reading labeled and unlabeled text from built-ins and user files.

Built-in sources come from pinned PyPI packages (see ``requirements-data.txt``); their files are
read by path and checked against the sha256 recorded here, never imported. User files are read
with strict UTF-8 and every problem names the file, row or column and how to fix it.
"""

from __future__ import annotations

import bz2
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spt.data.grammar import BUILTINS, Builtin, parse_hub_dataset
from spt.errors import DataError
from spt.hashing import content_sha256

TABULAR_SUFFIXES = {".csv": ",", ".tsv": "\t"}


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


def read_labeled(source: str, text_column: str, label_column: str, group_column: str | None,
                 test: str | None = None) -> LabeledSource:
    """Read ``data.labeled`` into a frame with columns text, label (and group when requested).

    ``group_column`` is a column name, ``"auto"`` (the builtin's natural group, none for files) or None.
    With ``test`` (``data.test``: a split of ``source`` or a file) the frame also has a boolean
    column ``official_test``, true for the rows of that test set, which come first.
    """
    if test is not None:
        return _with_official_test(source, text_column, label_column, group_column, test)
    labels = None
    if source.startswith("builtin:"):
        builtin = BUILTINS[source.removeprefix("builtin:")]
        frame = _read_builtin_labeled(builtin)
        provenance = builtin.provenance()
        labels = builtin.labels or None
        if group_column == "auto":
            group_column = builtin.group_column
    elif source.startswith("hf:") or Path(source).is_dir():  # datasets with splits: every split
        frame = pd.concat(list(read_splits(source, label_column, "data.labeled").values()), ignore_index=True)
        provenance = _split_source_provenance(source)
    else:
        frame = read_table(Path(source))
        provenance = {"source": source, "sha256": content_sha256(Path(source))}
    if group_column == "auto":
        group_column = None
    frame = _standard_columns(frame, source, text_column, label_column, group_column)
    return LabeledSource(frame.reset_index(drop=True), source, provenance, labels, group_column)


def _with_official_test(source: str, text_column: str, label_column: str, group_column: str | None,
                        test: str) -> LabeledSource:
    """``data.labeled`` with ``data.test`` as its test set: a split of it, or a file read like it."""
    if Path(test).exists():
        if Path(test).resolve() == Path(source).resolve():
            raise DataError(f"data.test = '{test}' names the same file as data.labeled: every row would be a test "
                            "row, and the training rows that share a text with the test set are dropped, so nothing "
                            "is left to train on. Set data.test to a separate file of test rows, or to null to draw "
                            "the test split from data.labeled")
        rest = read_labeled(source, text_column, label_column, group_column)
        official = read_labeled(test, text_column, label_column, rest.group_column)
        parts = [official.frame, rest.frame]
        description, labels, group_column = rest.description, rest.labels, rest.group_column
        provenance = {"labeled": rest.provenance, "test": official.provenance}
    else:
        splits = read_splits(source, label_column, "data.labeled")
        if test not in splits:
            raise DataError(f"data.test = '{test}': {source} has no split of that name; its splits are "
                            f"{', '.join(map(repr, splits))}. Set data.test to one of them, or to null to draw a test "
                            "split from all rows")
        if len(splits) == 1:
            raise DataError(f"data.test = '{test}' is the only split of {source}: nothing is left to train on")
        group_column = None if group_column == "auto" else group_column
        description, labels = f"{source} (test: its split '{test}')", None
        provenance = {**_split_source_provenance(source), "test_split": test}
        parts = [_standard_columns(frame, f"{source}, split '{name}'", text_column, label_column, group_column)
                 for name, frame in sorted(splits.items(), key=lambda item: item[0] != test)]  # the test split first
        parts = [parts[0], pd.concat(parts[1:], ignore_index=True)]
    frame = pd.concat(parts, ignore_index=True)
    frame["official_test"] = np.arange(len(frame)) < len(parts[0])
    return LabeledSource(frame, description, provenance, labels, group_column)


def _standard_columns(frame: pd.DataFrame, where: str, text_column: str, label_column: str,
                      group_column: str | None) -> pd.DataFrame:
    """The text, label (and group) columns of ``frame``, renamed so; DataError naming what is missing."""
    wanted = {"text": text_column, "label": label_column, **({"group": group_column} if group_column else {})}
    missing = [column for column in wanted.values() if column not in frame.columns]
    if missing:
        raise DataError(_missing_columns(where, missing, list(frame.columns)))
    frame = frame[list(wanted.values())].copy()
    frame.columns = list(wanted)
    _check_label_types(frame["label"], where, label_column)
    return frame


# --------------------------------------------------------------------------------------------
# Datasets with splits: hf: sources (the Hub, or a local dataset repository) and save_to_disk


def read_splits(source: str, label_column: str | None, key: str) -> dict[str, pd.DataFrame]:
    """Every split of an ``hf:`` source or a ``save_to_disk`` directory (one split: its own), as frames.

    A ClassLabel ``label_column`` becomes its names (-1, "no label", becomes missing). ``key`` names
    the param in messages.
    """
    import datasets

    loaded = load_hub_dataset(source, key) if source.startswith("hf:") else _load_saved(Path(source))
    parts = loaded if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    frames = {}
    for name, part in parts.items():
        frame = part.to_pandas()
        feature = part.features.get(label_column) if label_column else None
        if isinstance(feature, datasets.ClassLabel):
            frame[label_column] = [feature.names[i] if i is not None and i >= 0 else None for i in frame[label_column]]
        frames[name] = frame
    if not any(len(frame) for frame in frames.values()):
        raise DataError(f"{source}: the dataset has no rows")
    return frames


def load_hub_dataset(source: str, key: str):
    """``datasets.load_dataset`` for an ``hf:`` source (see grammar.parse_hub_dataset): a Dataset when
    it names a split, else a DatasetDict. Hub ids and local dataset repositories take the same path."""
    import datasets

    spec = parse_hub_dataset(source)
    try:
        return datasets.load_dataset(spec.repo, spec.config, split=spec.split, revision=spec.revision)
    except Exception as err:  # noqa: BLE001 - offline, missing, private, bad config: one message, the cause in it
        raise DataError(
            f"{key} = '{source}': datasets.load_dataset('{spec.repo}', {spec.config!r}, split={spec.split!r}, "
            f"revision={spec.revision!r}) failed ({type(err).__name__}: {err}). If the Hugging Face Hub is "
            "unreachable: load it once where it is reachable (datasets caches it, and HF_HUB_OFFLINE=1 then reads "
            "the cache), or point at a local copy: hf:<directory> for a dataset repository directory (data files "
            "and a README.md with configs, as on the Hub), or a save_to_disk directory or a CSV / JSONL / Parquet "
            "file"
        ) from None


def _load_saved(path: Path):
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"{path}: is a directory but not a datasets save_to_disk directory ({err})") from None


def _split_source_provenance(source: str) -> dict[str, str]:
    """Where an ``hf:`` or save_to_disk source came from: its spec and a content hash where there is
    one on disk (a Hub dataset is pinned by its @REVISION)."""
    if not source.startswith("hf:"):
        return {"source": source, "sha256": content_sha256(Path(source))}
    spec = parse_hub_dataset(source)
    local = Path(spec.repo)
    return {"source": source, "repo": spec.repo, "revision": spec.revision or "main", "config": spec.config or "",
            "split": spec.split or "", **({"sha256": content_sha256(local)} if local.is_dir() else {})}


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
    """Read a user's CSV / TSV / JSONL / Parquet file into a frame.

    DataError naming the line for a CSV/TSV header that repeats a column name and for the first JSON
    Lines record that does not parse or is not an object."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory; check data.labeled in params.yaml")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; point data.labeled at a file with a header and rows")
    suffix = path.suffix.lower()
    try:
        if suffix in TABULAR_SUFFIXES:
            _check_utf8(path)
            _check_header(path, TABULAR_SUFFIXES[suffix])
            frame = pd.read_csv(path, sep=TABULAR_SUFFIXES[suffix], dtype=str, keep_default_na=False,
                                encoding="utf-8")
        elif suffix in (".jsonl", ".json"):
            _check_utf8(path)
            try:
                frame = pd.read_json(path, lines=True, dtype=False)
            except ValueError:
                _check_json_lines(path)  # names the line; pandas's message gives a byte position
                raise
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


def _check_header(path: Path, separator: str) -> None:
    """A CSV/TSV header that names a column twice is ambiguous (pandas would rename the second 'text.1' and
    read the first): fail naming the column and its positions."""
    with open(path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle, delimiter=separator), [])
    positions: dict[str, list[int]] = {}
    for position, name in enumerate(header, start=1):
        positions.setdefault(name, []).append(position)
    repeated = {name: where for name, where in positions.items() if len(where) > 1}
    if repeated:
        named = "; ".join(f"'{name}' at columns {', '.join(map(str, where))}" for name, where in repeated.items())
        raise DataError(f"{path}, line 1: the header names a column more than once ({named}), so which one to read "
                        "is ambiguous; rename or remove the repeated column(s)")


def _check_json_lines(path: Path) -> None:
    """Fail at the first line of a JSON Lines file that is not one JSON object, naming its line number."""
    for line_number, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {line_number}: not valid JSON ({err.msg}, column {err.colno}); fix or "
                            "remove that line (JSON Lines: one object per line)") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {line_number}: a JSON {type(record).__name__}, not an object; JSON Lines "
                            'holds one object per line, e.g. {"text": "...", "label": "..."}')


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
    """Yield the texts of one ``data.unlabeled`` source without loading it whole (an ``hf:`` dataset
    is memory-mapped by datasets: every split, or the one it names)."""
    if source.startswith("hf:"):
        import datasets

        loaded = load_hub_dataset(source, "data.unlabeled")
        for part in loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]:
            if text_column not in part.column_names:
                raise DataError(_missing_columns(source, [text_column], part.column_names))
            for batch in part.select_columns([text_column]).iter(batch_size=10_000):
                yield from (text for text in batch[text_column] if text is not None)
        return
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
        _check_header(path, TABULAR_SUFFIXES[suffix])
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

"""Bad input as a user meets it: every case runs the real stage (`python -m stages.<name>`) in a
copy of the repository and must stop with exit 2 and one message that says what is wrong, where
(file, line, column or key) and how to fix it, leaving every output and dvc.lock as they were.
Two cases of dirty-but-usable data must instead succeed and count what they dropped or cut.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.support import run_command
from tools.sandbox import TINY_PARAMS, copy_repository, stage_env

pytestmark = pytest.mark.e2e

OUTPUT_DIRS = ("data", "models", "metrics", "reports", "plots", "checkpoints")
LABELED = Path("data/tiny/labeled.csv")
SMALL_BERT = "pretrained/small-bert"  # a real BERT directory with a 100-token vocabulary (see `trained`)
MAX_LENGTH = 64  # prepare.max_length of tests/tiny_params.yaml


# --------------------------------------------------------------------------------------------
# Repositories


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data) -> Path:
    """The tiny profile after `dvc repro pretrain_unsup`: data/processed and models/pretrain_unsup exist."""
    repo = copy_repository(tmp_path_factory.mktemp("bad-input") / "repo")
    shutil.copy(TINY_PARAMS, repo / "params.yaml")
    shutil.copytree(tiny_data, repo / "data" / "tiny")
    run_command(repo, "dvc", "repro", "pretrain_unsup")
    write_small_bert(repo / SMALL_BERT)
    return repo


def write_small_bert(directory: Path) -> None:
    """A valid save_pretrained BERT (safetensors) whose vocabulary is smaller than the tiny tokenizer's."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    BertForMaskedLM(config).save_pretrained(directory, safe_serialization=True)


def snapshot(repo: Path) -> dict[str, str | bytes | None]:
    """Every file (md5) and directory under the output folders, and dvc.lock's bytes (None if absent)."""
    state: dict[str, str | bytes | None] = {}
    for name in OUTPUT_DIRS:
        for path in sorted((repo / name).rglob("*")):
            key = str(path.relative_to(repo))
            state[key] = hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    lock = repo / "dvc.lock"
    state["dvc.lock"] = lock.read_bytes() if lock.exists() else None
    return state


def run_stage(repo: Path, stage: str) -> subprocess.CompletedProcess:
    """The stage as a user runs it: its own process, from the repository root."""
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=repo, env=stage_env(),
                          capture_output=True, text=True, timeout=300)


def error_message(result: subprocess.CompletedProcess) -> str:
    """The one `error:` message of a stage that stopped on a user error (exit 2, no traceback)."""
    output = f"exit {result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}"
    assert result.returncode == 2, output
    assert "Traceback" not in result.stderr, output
    lines = result.stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, output
    return "\n".join(lines[starts[0]:])


# --------------------------------------------------------------------------------------------
# Ways to break the input


DELETE = object()


def set_params(repo: Path, **changes: object) -> None:
    """Change params.yaml; `__` separates the levels of a key (pretrain_sup__lambda: pretrain_sup.lambda)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        *sections, key = dotted.split("__")
        node = params
        for section in sections:
            node = node[section]
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def params(**changes: object) -> Callable[[Path], None]:
    return lambda repo: set_params(repo, **changes)


def labeled_rows(repo: Path) -> pd.DataFrame:
    return pd.read_csv(repo / LABELED, dtype=str, keep_default_na=False)


def write_labeled(content: bytes) -> Callable[[Path], None]:
    return lambda repo: (repo / LABELED).write_bytes(content)


def append_latin1_line(repo: Path) -> None:
    path = repo / LABELED
    path.write_bytes(path.read_bytes() + "Un caf\xe9 tr\xe8s charmant,fresh,Zz movie\n".encode("latin-1"))


def add_rare_class(repo: Path) -> None:
    rows = labeled_rows(repo)
    extra = pd.DataFrame({"text": ["A film that is neither here nor there.", "Not good, not bad: meh."],
                          "label": ["meh", "meh"], "movie_name": ["Zz movie one", "Zz movie two"]})
    pd.concat([rows, extra]).to_csv(repo / LABELED, index=False)


def one_class(repo: Path) -> None:
    rows = labeled_rows(repo)
    rows["label"] = "fresh"
    rows.to_csv(repo / LABELED, index=False)


def repeated_column(repo: Path) -> None:
    rows = labeled_rows(repo)
    rows.columns = ["text", "label", "text"]  # the group column renamed: `text,label,text`
    rows.to_csv(repo / LABELED, index=False)


BROKEN_JSON_LINE = 5


def broken_jsonl_line(repo: Path) -> None:
    lines = labeled_rows(repo).to_json(orient="records", lines=True).splitlines()
    lines[BROKEN_JSON_LINE - 1] = lines[BROKEN_JSON_LINE - 1][:-10]  # cut short: the closing quote and brace gone
    (repo / "data/tiny/labeled.jsonl").write_text("\n".join(lines) + "\n")
    set_params(repo, data__labeled="data/tiny/labeled.jsonl")


def continuous_labels(repo: Path) -> None:
    rows = labeled_rows(repo)
    rows["label"] = [f"{1 + 0.0137 * i:.4f}" for i in range(len(rows))]  # a score per review: a regression target
    rows.to_csv(repo / LABELED, index=False)


def blank_texts(repo: Path) -> None:
    rows = labeled_rows(repo)
    rows["text"] = ["", "   ", "\t \n "] * (len(rows) // 3) + [" "] * (len(rows) % 3)
    rows.to_csv(repo / LABELED, index=False)


def mixed_label_types(repo: Path) -> None:
    (repo / "data/tiny/mixed.jsonl").write_text(
        "".join(json.dumps({"text": f"review number {i}", "label": 1 if i % 2 else "pos"}) + "\n"
                for i in range(20)))
    set_params(repo, data__labeled="data/tiny/mixed.jsonl", prepare__group_column=None)


def binary_unlabeled(repo: Path) -> None:
    (repo / "data/tiny/corpus.txt").write_bytes(b"a first line of text\n\x7fELF\x02\x01\x00\x00\x00\x00\n")
    set_params(repo, data__unlabeled=["data/tiny/unlabeled.txt", "data/tiny/corpus.txt"])


def empty_unlabeled(repo: Path) -> None:
    (repo / "data/tiny/corpus.txt").write_bytes(b"")
    set_params(repo, data__unlabeled=["data/tiny/corpus.txt"])


def model_dir(files: dict[str, bytes]) -> Callable[[Path], None]:
    """A model.source directory holding exactly ``files``."""

    def setup(repo: Path) -> None:
        directory = repo / "pretrained" / "mine"
        directory.mkdir(parents=True)
        for name, content in files.items():
            (directory / name).write_bytes(content)
        set_params(repo, model__source="pretrained/mine")

    return setup


class _Pwned:
    """Unpickling this creates the file PWNED: proof that a pickle was loaded."""

    def __reduce__(self):
        return (open, ("PWNED", "w"))


BERT_CONFIG = json.dumps({"model_type": "bert", "vocab_size": 500, "hidden_size": 32}).encode()


def truncate_checkpoint(repo: Path) -> None:
    weights = repo / "models/pretrain_unsup/model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def xlsx_file(repo: Path) -> None:
    (repo / "data/tiny/labeled.xlsx").write_bytes(b"PK\x03\x04")
    set_params(repo, data__labeled="data/tiny/labeled.xlsx")


# where `seed: 7` is in the tiny profile: broken_yaml breaks that line
SEED_LINE = next(number for number, line in enumerate(TINY_PARAMS.read_text().splitlines(), 1)
                 if line.startswith("seed:"))


def broken_yaml(repo: Path) -> None:
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("seed: 7", "seed: [7,"))


# --------------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, which stage meets it, and what its message must contain."""

    setup: Callable[[Path], None]
    stage: str
    expected: tuple[str, ...]


CASES = {
    # --- data.labeled: the file and its columns
    "missing_column": Case(params(data__text_column="review"), "prepare", (
        "data/tiny/labeled.csv: column 'review' not found",
        "the file has columns 'text', 'label', 'movie_name'", "Set data.text_column")),
    "misspelt_column": Case(params(data__label_column="lable"), "prepare", (
        "data/tiny/labeled.csv: column 'lable' (did you mean 'label'?) not found", "data.label_column")),
    "path_does_not_exist": Case(params(data__labeled="data/tiny/reviews.csv"), "prepare", (
        "data.labeled = 'data/tiny/reviews.csv': path 'data/tiny/reviews.csv' does not exist",
        "relative paths start at the repository root", "Fix these keys in params.yaml")),
    "unsupported_file_type": Case(xlsx_file, "prepare", (
        "data/tiny/labeled.xlsx: unsupported file type '.xlsx'", "use .csv, .tsv, .jsonl, .parquet")),
    "empty_file": Case(write_labeled(b""), "prepare", (
        "data/tiny/labeled.csv: the file is empty", "point data.labeled at a file with a header and rows")),
    "binary_labeled_file": Case(write_labeled(b"text,label,movie_name\nok,fresh,m\n\x00\x01\x02,rotten,m\n"),
                                "prepare", (
        "data/tiny/labeled.csv, line 3: contains NUL bytes", "binary file",
        "Point data.labeled / data.unlabeled at a UTF-8 text file")),
    "header_only": Case(write_labeled(b"text,label,movie_name\n"), "prepare", (
        "data/tiny/labeled.csv: has a header but no data rows", "add rows")),
    "not_utf8": Case(append_latin1_line, "prepare", (
        "data/tiny/labeled.csv, line {last_line}: bytes b'\\xe9' are not valid UTF-8",
        "re-save the file as UTF-8")),
    "mixed_label_types": Case(mixed_label_types, "prepare", (
        "data/tiny/mixed.jsonl, column 'label': labels mix types (for example 'pos', 1)",
        "use one type for every label")),
    "repeated_header_column": Case(repeated_column, "prepare", (
        "data/tiny/labeled.csv, line 1: the header names a column more than once ('text' at columns 1, 3)",
        "ambiguous", "rename or remove the repeated column")),
    "broken_jsonl_line": Case(broken_jsonl_line, "prepare", (
        f"data/tiny/labeled.jsonl, line {BROKEN_JSON_LINE}: not valid JSON", "fix or remove that line")),
    "test_is_the_labeled_file": Case(params(data__test=str(LABELED)), "prepare", (
        f"data.test = '{LABELED}' names the same file as data.labeled", "nothing is left to train on",
        "Set data.test to a separate file of test rows, or to null")),
    # --- data.labeled: the rows
    "class_too_small_for_every_split": Case(add_rare_class, "prepare", (
        "data/tiny/labeled.csv: the", "split has no example of class 'meh' (2 rows in all)",
        "raise prepare.val_fraction/test_fraction", "drop it with data.labels")),
    "listed_label_absent": Case(params(data__labels=["fresh", "splendid"]), "prepare", (
        "data.labels lists 'splendid', which no row of data/tiny/labeled.csv holds",
        "its labels (rows) are 'fresh' (", "'rotten' (", "Fix data.labels")),
    "continuous_labels": Case(continuous_labels, "prepare", (
        "data/tiny/labeled.csv: the label column (data.label_column) holds {rows} distinct values",
        "it looks like a regression target", "bin the values into a few classes")),
    "single_class": Case(one_class, "prepare", (
        "data/tiny/labeled.csv: the label column holds a single class ('fresh')",
        "check data.label_column")),
    "all_texts_blank": Case(blank_texts, "prepare", (
        "data/tiny/labeled.csv: no usable rows left", "'empty_text': {rows}",
        "check the text and label columns")),
    # --- data.unlabeled
    "binary_unlabeled_file": Case(binary_unlabeled, "prepare", (
        "data/tiny/corpus.txt, line 2: contains NUL bytes", "binary file",
        "Point data.labeled / data.unlabeled at a UTF-8 text file")),
    "empty_unlabeled_file": Case(empty_unlabeled, "prepare", (
        "data/tiny/corpus.txt: the unlabeled file is empty", "remove it from data.unlabeled")),
    # --- model.source
    "model_without_config": Case(model_dir({"model.safetensors": b""}), "prepare", (
        "model.source = 'pretrained/mine': pretrained/mine has no config.json",
        "point it at a directory written by save_pretrained")),
    "model_decoder_only": Case(
        model_dir({"config.json": b'{"model_type": "gpt2"}', "model.safetensors": b""}), "prepare", (
            "model.source = 'pretrained/mine': model_type is 'gpt2'", "no AutoModelForMaskedLM class",
            "bert, roberta, xlm-roberta, deberta-v2, electra, distilbert, modernbert (tested)",
            "decoder-only models")),
    "model_pickle_only": Case(
        model_dir({"config.json": BERT_CONFIG, "pytorch_model.bin": pickle.dumps(_Pwned())}), "prepare", (
            "model.source = 'pretrained/mine': pretrained/mine has no .safetensors weights",
            "pickled weights (pytorch_model.bin) are refused", "save_pretrained")),
    "tokenizer_larger_than_model_vocab": Case(params(model__source=SMALL_BERT), "pretrain_unsup", (
        "the tokenizer in data/processed/tokenizer has",
        f"tokens but model.source '{SMALL_BERT}' has vocab_size 100", "rerun `dvc repro prepare`")),
    # --- checkpoints between stages
    "truncated_checkpoint": Case(truncate_checkpoint, "pretrain_sup", (
        "models/pretrain_unsup/model.safetensors is truncated or corrupt", "header declares",
        "rebuild it with `dvc repro --force pretrain_unsup`")),
    "missing_checkpoint": Case(lambda repo: None, "finetune", (
        "models/pretrain_sup: checkpoint missing", "rebuild it with `dvc repro --force pretrain_sup`")),
    # --- params.yaml
    "unknown_key": Case(params(prepare__max_lenght=64), "prepare", (
        "params.yaml: 1 problem", "prepare.max_lenght: unknown key; did you mean 'max_length'?",
        "Fix these keys in params.yaml")),
    "missing_required_key": Case(params(data__labeled=DELETE), "prepare", (
        "params.yaml: 1 problem", "data.labeled: required key is missing")),
    "wrong_type": Case(params(pretrain_unsup__batch_size="8"), "pretrain_unsup", (
        "params.yaml: 1 problem", "pretrain_unsup.batch_size = '8': Input should be a valid integer")),
    "negative_lambda": Case(params(pretrain_sup__lambda=-0.5), "pretrain_sup", (
        "params.yaml: 1 problem", "pretrain_sup.lambda = -0.5: Input should be greater than or equal to 0")),
    "unknown_lambda_schedule": Case(params(pretrain_sup__lambda_schedule="sigmoid"), "pretrain_sup", (
        "pretrain_sup.lambda_schedule = 'sigmoid': Input should be 'constant', 'linear_decay', "
        "'cosine_decay' or 'exponential_decay'",)),
    "batch_size_zero": Case(params(finetune__batch_size=0), "finetune", (
        "params.yaml: 1 problem", "finetune.batch_size = 0: Input should be greater than 0")),
    "fractions_leave_no_training_split": Case(params(prepare__val_fraction=0.5, prepare__test_fraction=0.45),
                                              "prepare", (
        "prepare: ", "val_fraction + test_fraction = 0.95 leaves under 10% of the data for training",
        "lower them")),
    "n_per_class_larger_than_class": Case(params(prepare__n_per_class=100000), "prepare", (
        "prepare.n_per_class = 100000 but the training split holds only", "'fresh': ", "'rotten': ",
        "lower prepare.n_per_class")),
    "params_not_yaml": Case(broken_yaml, "prepare", (
        "params.yaml: not valid YAML", f"line {SEED_LINE}, column 7", "Fix the YAML syntax at the line shown")),
}


BLANK_TEXTS = [None, float("nan"), "", "   ", "\t\n "]


def blank_and_null_texts(repo: Path) -> None:
    rows = labeled_rows(repo)
    blanks = pd.DataFrame({"text": BLANK_TEXTS,
                           "label": ["fresh", "rotten", "fresh", "rotten", "fresh"],
                           "movie_name": rows["movie_name"].iloc[0]})
    pd.concat([rows, blanks]).to_json(repo / "data/tiny/labeled.jsonl", orient="records", lines=True)
    set_params(repo, data__labeled="data/tiny/labeled.jsonl")


LONG_TEXTS = 3


def very_long_texts(repo: Path) -> None:
    rows = labeled_rows(repo)
    words = " ".join(rows["text"].iloc[:40]).split()
    extra = pd.DataFrame({"text": [f"long review {i}: " + " ".join(words * 30) for i in range(LONG_TEXTS)],
                          "label": ["fresh", "rotten", "fresh"],
                          "movie_name": [f"Zz long movie {i}" for i in range(LONG_TEXTS)]})  # ~150k chars each
    pd.concat([rows, extra]).to_csv(repo / LABELED, index=False)


# Dirty but usable: prepare must succeed (checked by the tests at the end of this file).
USABLE = {"blank_and_null_texts": Case(blank_and_null_texts, "prepare", ()),
          "very_long_texts": Case(very_long_texts, "prepare", ())}


# --------------------------------------------------------------------------------------------
# Running the cases


@dataclass
class Outcome:
    """A case after its stage ran: the repository, the process, and the outputs before and after."""

    repo: Path
    result: subprocess.CompletedProcess
    before: dict[str, str | bytes | None]
    after: dict[str, str | bytes | None]
    details: dict[str, int]


def describe_labeled(repo: Path) -> dict[str, int]:
    """What some messages quote about the labeled file: its last line number and its number of rows."""
    content = (repo / LABELED).read_bytes()
    try:
        rows = len(labeled_rows(repo))
    except (ValueError, UnicodeDecodeError):  # a case broke the file on purpose
        rows = -1
    return {"last_line": content.count(b"\n"), "rows": rows}


@pytest.fixture(scope="module")
def outcomes(request, trained, tmp_path_factory) -> dict[str, Outcome]:
    """Run every selected case in its own copy of `trained`, two or more stages at a time.

    A stage process spends most of its few seconds importing torch and transformers, so running
    the cases side by side keeps the catalogue within a few minutes on two cores.
    """
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and "name" in getattr(getattr(item, "callspec", None), "params", {})]
    prepared = {}
    for name in dict.fromkeys(selected):  # only the cases pytest will check (-k, node ids)
        case = {**CASES, **USABLE}[name]
        repo = Path(shutil.copytree(trained, tmp_path_factory.mktemp(name) / "repo"))
        case.setup(repo)
        prepared[name] = (repo, case.stage, snapshot(repo), describe_labeled(repo))
    order = sorted(prepared, key=lambda name: name not in USABLE)  # the full prepare runs take longest
    with ThreadPoolExecutor(max_workers=min(4, max(2, os.cpu_count() or 2))) as pool:
        results = dict(zip(order, pool.map(lambda name: run_stage(*prepared[name][:2]), order), strict=True))
    return {name: Outcome(repo, results[name], before, snapshot(repo), details)
            for name, (repo, _, before, details) in prepared.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_stops_with_one_clear_message_and_no_output(name, outcomes):
    outcome = outcomes[name]
    message = error_message(outcome.result)
    for expected in CASES[name].expected:
        expected = expected.format(**outcome.details)
        assert expected in message, f"{expected!r} not in:\n{message}"
    assert outcome.after == outcome.before  # nothing written, half-written or removed; dvc.lock untouched
    assert not list(outcome.repo.rglob("*.partial-*"))
    assert not (outcome.repo / "PWNED").exists()  # no pickle was ever loaded


# --------------------------------------------------------------------------------------------
# Dirty but usable: dropped or truncated, and counted


def succeeded(outcome: Outcome) -> dict:
    """The data report of a prepare run that had to succeed."""
    assert outcome.result.returncode == 0, outcome.result.stderr[-6000:]
    assert "error: " not in outcome.result.stderr
    assert not list(outcome.repo.rglob("*.partial-*"))
    return json.loads((outcome.repo / "reports/prepare.json").read_text())


@pytest.mark.parametrize("name", ["blank_and_null_texts"])
def test_blank_and_null_texts_are_dropped_and_counted(name, outcomes, trained):
    report = succeeded(outcomes[name])
    baseline = json.loads((trained / "reports/prepare.json").read_text())
    assert report["rows_read"] == baseline["rows_read"] + len(BLANK_TEXTS)
    assert report["dropped"]["empty_text"] == baseline["dropped"]["empty_text"] + len(BLANK_TEXTS)
    assert report["splits"] == baseline["splits"]  # the blank rows changed nothing else
    assert report["class_balance"] == baseline["class_balance"]


@pytest.mark.parametrize("name", ["very_long_texts"])
def test_very_long_texts_are_truncated_and_counted(name, outcomes):
    import datasets
    from transformers import AutoTokenizer

    report = succeeded(outcomes[name])
    repo = outcomes[name].repo
    splits = datasets.load_from_disk(str(repo / "data/processed/labeled"))
    tokenizer = AutoTokenizer.from_pretrained(str(repo / "data/processed/tokenizer"))
    long_rows = []
    for split in ("train", "validation", "test"):
        texts = list(splits[split]["text"])
        full_lengths = [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]
        assert report["truncated"][split] == sum(length > MAX_LENGTH for length in full_lengths)
        assert report["token_length"][split]["max"] == max(splits[split]["length"]) <= MAX_LENGTH
        long_rows += [(length, cut) for text, length, cut in
                      zip(texts, splits[split]["length"], splits[split]["truncated"], strict=True)
                      if text.startswith("long review")]
    assert long_rows == [(MAX_LENGTH, True)] * LONG_TEXTS
    assert sum(report["truncated"].values()) >= LONG_TEXTS

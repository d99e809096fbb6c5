"""The prepare stage on tiny real data: outputs, no leaks, byte-identical reruns, no partial output."""

import hashlib
import json
import shutil

import datasets
import huggingface_hub.constants
import pytest
import yaml
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from spt import paths
from spt.config import load_params
from spt.data.splits import normalize_text
from spt.data.tokenization import train_wordpiece
from spt.errors import DataError
from stages import prepare
from tests.support import run_prepare
from tools.sandbox import TINY_PARAMS


def digest_tree(root):
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_outputs_report_and_reproducibility(tiny_repo, monkeypatch):
    run_prepare(tiny_repo, monkeypatch)
    splits = datasets.load_from_disk(str(paths.LABELED))
    assert set(splits) == {"train", "validation", "test"}
    texts = {name: {normalize_text(t) for t in splits[name]["text"]} for name in splits}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    report = json.loads(paths.DATA_REPORT.read_text())
    assert report["cross_split_shared_texts"] == 0
    assert report["splits"] == {name: len(splits[name]) for name in ("train", "validation", "test")}
    assert set(report["class_balance"]["test"]) == {"fresh", "rotten"}
    assert report["corpus"]["dropped_eval_overlap"] == 0 and report["corpus"]["blocks"] > 0
    assert report["sources"]["labeled"]["sha256"]
    # the metric file is the report's headline only: a handful of flat numbers for `dvc exp show`
    assert json.loads(paths.metrics_file("prepare").read_text()) == {
        "rows_read": report["rows_read"], "rows_dropped": sum(report["dropped"].values()),
        **{f"rows_{name}": n for name, n in report["splits"].items()}, "label_count": 2,
        "corpus_blocks": report["corpus"]["blocks"]}
    corpus = datasets.load_from_disk(str(paths.CORPUS))
    assert {len(ids) for ids in corpus["input_ids"]} == {64}  # packed: every block full
    tokenizer = AutoTokenizer.from_pretrained(str(paths.TOKENIZER))
    assert tokenizer.mask_token == "[MASK]" and len(tokenizer) <= 500
    assert json.loads(paths.LABEL_MAP.read_text())["label2id"] == {"fresh": 0, "rotten": 1}
    # group-aware: a movie never spans two splits
    frame = __import__("pandas").read_csv(tiny_repo / "data/tiny/labeled.csv")
    movie_of = {normalize_text(t): m for t, m in zip(frame["text"], frame["movie_name"], strict=True)}
    movies = {name: {movie_of[t] for t in texts[name]} for name in texts}
    assert not movies["train"] & movies["test"] and not movies["validation"] & movies["test"]

    first = digest_tree(paths.PROCESSED)
    first_report = paths.DATA_REPORT.read_bytes()
    run_prepare(tiny_repo, monkeypatch)
    assert digest_tree(paths.PROCESSED) == first
    assert paths.DATA_REPORT.read_bytes() == first_report


def test_outputs_do_not_depend_on_checkout_path_or_hub_offline(tmp_path, tiny_data, monkeypatch):
    # Two "clones" at paths of different lengths, each with its own copy of a local model (as
    # builtin:all-minilm-l6-v2 lives in each clone's .venv), one run with HF_HUB_OFFLINE and one without.
    texts = ["a few words to learn a tiny vocabulary from", "and a few more words"] * 20
    tokenizer = train_wordpiece(lambda: [texts], vocab_size=80, max_length=64)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32))
    built = {}
    for checkout, offline in (("a", True), ("a-clone-at-a-much-longer-path", False)):
        root = tmp_path / checkout
        shutil.copytree(tiny_data, root / "data" / "tiny")
        model.save_pretrained(root / "base-model")
        tokenizer.save_pretrained(root / "base-model")
        raw = yaml.safe_load(TINY_PARAMS.read_text())
        raw["model"]["source"] = str(root / "base-model")  # absolute, like a builtin's path
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
        monkeypatch.chdir(root)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
        prepare.build_processed(load_params(root / "params.yaml"), root / "processed", root / "work")
        built[checkout] = digest_tree(root / "processed")
    first, second = built.values()
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []  # names the files that differ
    config = json.loads((tmp_path / "a" / "processed" / "tokenizer" / "tokenizer_config.json").read_text())
    assert "local_files_only" not in config and "is_local" not in config


def test_eval_texts_never_enter_the_corpus(tiny_repo, monkeypatch):
    # The labeled file itself as unlabeled text: its validation/test rows must be filtered out.
    run_prepare(tiny_repo, monkeypatch, **{"data.unlabeled": ["data/tiny/labeled.csv"]})
    report = json.loads(paths.DATA_REPORT.read_text())
    held_out = report["splits"]["validation"] + report["splits"]["test"]
    assert report["corpus"]["dropped_eval_overlap"] == held_out
    assert report["corpus"]["dropped_duplicate"] >= report["splits"]["train"]


def test_few_shot_keeps_the_other_train_texts_as_masked_lm_text(tiny_repo, monkeypatch):
    run_prepare(tiny_repo, monkeypatch)
    full = json.loads(paths.DATA_REPORT.read_text())
    run_prepare(tiny_repo, monkeypatch, **{"prepare.n_per_class": 10})
    report = json.loads(paths.DATA_REPORT.read_text())
    assert report["class_balance"]["train"] == {"fresh": 10, "rotten": 10}
    assert report["train_rows_before_few_shot"] == full["splits"]["train"] > 20
    # the labels of the other train rows are dropped, their texts are not: the same corpus
    assert report["corpus"] == full["corpus"]
    assert report["class_balance"]["validation"] == full["class_balance"]["validation"]  # untouched


def test_true_few_shot_caps_validation_and_keeps_its_texts_held_out(tiny_repo, monkeypatch):
    run_prepare(tiny_repo, monkeypatch, **{"prepare.n_per_class": 3, "prepare.true_few_shot": True,
                                           "data.unlabeled": ["data/tiny/labeled.csv"]})
    report = json.loads(paths.DATA_REPORT.read_text())
    assert report["class_balance"]["validation"] == {"fresh": 3, "rotten": 3}
    assert report["validation_rows_before_few_shot"] > 6
    # the validation rows the cap dropped are still kept out of the masked-LM corpus
    assert report["corpus"]["dropped_eval_overlap"] == (report["validation_rows_before_few_shot"]
                                                        + report["splits"]["test"])


@pytest.mark.parametrize("changes, message", [
    ({"data.text_column": "review"}, "column 'review' not found; the file has columns"),
    ({"prepare.n_per_class": 100000}, "n_per_class = 100000"),
    ({"prepare.n_per_class": 150, "prepare.true_few_shot": True},
     "n_per_class = 150 but the validation split holds only .*or set prepare.true_few_shot: false"),
    ({"prepare.group_column": "studio"}, "column 'studio' not found"),
])
def test_bad_input_leaves_no_output(tiny_repo, monkeypatch, changes, message):
    before = {name: digest_tree(tiny_repo / name) for name in ("data", "metrics", "reports", "plots")}
    with pytest.raises(DataError, match=message):
        run_prepare(tiny_repo, monkeypatch, **changes)
    assert not (tiny_repo / paths.PROCESSED).exists()
    # nothing written or half-written anywhere: every output directory is as it was
    assert {name: digest_tree(tiny_repo / name) for name in ("data", "metrics", "reports", "plots")} == before

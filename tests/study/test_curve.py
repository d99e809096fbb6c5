"""The labels-per-class curve (study/curve.py, study.labels_per_class): params, the command line, drawing the labels,
the mixture that keeps the other train texts as masked-LM text, and compare's curve on constructed runs with known
answers."""

import json
import random
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from spt import paths
from spt.config import load_params
from stages.cli import run_stage, stage_params
from study.curve import labels_dir
from study.run import Run
from tests.support import (
    ACTUAL,
    REPO,
    default_params,
    predictions,
    run_prepare,
    write_json,
    write_params,
    write_run,
    write_test_outputs,
)

SEEDS = [1, 2]
BUDGETS = [4, 16]
ARMS = ["spt", "tapt", "baseline", "baseline_flops"]
# Best validation macro-F1 per arm and budget (mean over the two seeds); the floor's is its chosen C's
VALIDATION = {4: {"spt": 0.6, "tapt": 0.55, "baseline": 0.7, "baseline_flops": 0.5, "tfidf": 0.65},
              16: {"spt": 0.8, "tapt": 0.6, "baseline": 0.7, "baseline_flops": 0.75, "tfidf": 0.77},
              None: {"spt": 0.85, "tapt": 0.8, "baseline": 0.8, "baseline_flops": 0.84, "tfidf": 0.7}}
BEST_OTHER = {4: "baseline", 16: "tfidf", None: "baseline_flops"}


# --- params and the command line


def test_no_budget_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    study = load_params().study
    assert (study.labels_per_class, study.cap_validation, study.labeled_share) == ([], False, 0.5)
    data = default_params()
    data["study"]["labels_per_class"] = [8, 32]
    assert load_params(write_params(tmp_path, data)).study.labels_per_class == [8, 32]


def test_a_budget_run_gets_its_budget_and_its_stage_params(monkeypatch):
    monkeypatch.chdir(REPO)
    seen = []
    monkeypatch.setenv("DVC_STAGE", "study_budget_baseline@baseline-8-3")
    run_stage("doc", lambda params, run: seen.append((run, params.finetune.max_steps)),
              "finetune", ["--arm", "baseline", "--seed", "3", "--labels-per-class", "8"], study=True)
    monkeypatch.setenv("DVC_STAGE", "study_budget_floors@tfidf-8-3")
    run_stage("doc", lambda params, run: seen.append((run, params.floors.c_grid)),
              "evaluate", ["--arm", "tfidf", "--seed", "3", "--labels-per-class", "8"], study=True)  # a floor: seeded
    assert seen == [(Run("baseline", 3, labels_per_class=8), load_params().finetune.max_steps),
                    (Run("tfidf", 3, labels_per_class=8), load_params().floors.c_grid)]
    drawn = []
    monkeypatch.setenv("DVC_STAGE", "study_budget_prepare@8-3")
    run_stage("doc", lambda params, labels_per_class, seed: drawn.append((labels_per_class, seed,
                                                                         params.study.cap_validation)),
              "prepare", ["--labels-per-class", "8", "--seed", "3"], draws_labels=True)
    assert drawn == [(8, 3, False)]
    view = stage_params(load_params(), "prepare")
    with pytest.raises(AttributeError, match="study_budget_prepare"):  # it reads study.cap_validation alone
        _ = view.data


@pytest.mark.parametrize("module, argv, draws_labels", [
    ("finetune", ["--labels-per-class", "8"], False),  # no arm
    ("finetune", ["--arm", "spt", "--labels-per-class", "8"], False),  # no seed
    ("finetune", ["--arm", "spt", "--seed", "1", "--labels-per-class", "0"], False),
    ("finetune", ["--arm", "spt", "--seed", "1", "--labels-per-class", "8", "--weighting", "fixed", "--lambda", "2"],
     False),  # the sweep does not run per budget
    ("prepare", ["--labels-per-class", "8"], True),  # no seed
    ("prepare", ["--seed", "8"], True),
])
def test_bad_budget_flags_stop_with_usage(module, argv, draws_labels, capsys):
    with pytest.raises(SystemExit) as stop:
        run_stage("doc", lambda *args: None, module, argv, study=not draws_labels, draws_labels=draws_labels)
    assert stop.value.code == 2 and "error:" in capsys.readouterr().err


def test_help_names_the_budget_flag():
    import re
    import subprocess
    import sys

    for module in ("prepare", "pretrain_sup", "finetune", "evaluate"):
        result = subprocess.run([sys.executable, "-m", f"stages.{module}", "--help"], cwd=REPO, capture_output=True,
                                text=True, check=True)
        text = " ".join(re.sub(r"-\n\s+", "-", result.stdout).split())  # as one line: argparse wraps at hyphens
        assert "--labels-per-class N" in text and "labels-per-class curve" in text


# --- drawing the labels, and the mixture pretrain_sup trains on


def test_a_budget_draws_its_labels_from_the_prepared_train_split(tiny_repo, monkeypatch):
    import datasets

    from stages import prepare

    run_prepare(tiny_repo, monkeypatch)
    full = datasets.load_from_disk(str(paths.LABELED))
    params = load_params()
    monkeypatch.setenv("DVC_STAGE", "study_budget_prepare@3-7")  # prepare as the curve's stage runs it
    prepare.main(stage_params(params, "prepare"), 3, 7)
    drawn = datasets.load_from_disk(str(Run("spt", 7, labels_per_class=3).labeled))
    assert sorted(drawn["train"]["label"]) == [0, 0, 0, 1, 1, 1]
    assert set(drawn["train"]["text"]) <= set(full["train"]["text"])
    assert list(drawn["validation"]["text"]) == list(full["validation"]["text"])  # cap_validation: false
    assert "test" not in drawn  # every budget is scored on data/processed's test split
    # the other train rows: masked-LM text in pretrain_sup; together with the drawn ones, the train split
    assert sorted([*drawn["unlabeled"]["text"], *drawn["train"]["text"]]) == sorted(full["train"]["text"])
    report = json.loads((labels_dir(3, 7) / "budget.json").read_text())
    assert report["train"] == {"rows": 6, "of": len(full["train"])}
    assert report["unlabeled_train_texts"] == len(full["train"]) - 6
    assert report["class_balance"]["train"] == {"fresh": 3, "rotten": 3}
    first = {p.name: p.read_bytes() for p in labels_dir(3, 7).rglob("*") if p.is_file()}
    assert "budget.json" in first
    prepare.main(stage_params(params, "prepare"), 3, 7)  # the same seed: the same bytes
    assert {p.name: p.read_bytes() for p in labels_dir(3, 7).rglob("*") if p.is_file()} == first
    prepare.main(stage_params(params, "prepare"), 3, 8)  # another seed: other labels
    other = datasets.load_from_disk(str(labels_dir(3, 8) / "labeled"))
    assert list(other["train"]["text"]) != list(drawn["train"]["text"])

    data = yaml.safe_load(open("params.yaml"))
    data["study"]["cap_validation"] = True
    yaml.safe_dump(data, open("params.yaml", "w"))
    prepare.main(stage_params(load_params(), "prepare"), 3, 7)
    capped = datasets.load_from_disk(str(labels_dir(3, 7) / "labeled"))
    assert sorted(capped["validation"]["label"]) == [0, 0, 0, 1, 1, 1]
    assert list(capped["train"]["text"]) == list(drawn["train"]["text"])

    from spt.errors import DataError

    with pytest.raises(DataError, match=r"study.labels_per_class = 100000 but the training split holds only"):
        prepare.main(stage_params(load_params(), "prepare"), 100000, 7)
    assert not labels_dir(100000, 7).exists()  # nothing half-written


def test_a_few_labels_cycle_among_the_other_train_texts():
    """With 4 labeled texts and 40 other train texts at labeled_share 0.5, the mixture reads every other text
    once or more, without its label, and repeats the labeled ones; share 1: the labeled texts alone."""
    import datasets

    from stages.pretrain_sup import task_mixture

    labeled = datasets.Dataset.from_dict({"input_ids": [[1, i] for i in range(4)], "label": [0, 1, 0, 1]})
    others = datasets.Dataset.from_dict({"input_ids": [[2, i] for i in range(40)], "label": [0, 1] * 20})
    mixture = task_mixture(labeled, others, 0.5, seed=0)
    rows, labels = mixture["input_ids"], mixture["label"]
    assert {tuple(row) for row in rows if row[0] == 2} == {(2, i) for i in range(40)}
    # their labels are never read
    assert {label for row, label in zip(rows, labels, strict=True) if row[0] == 2} == {-100}
    assert sum(row[0] == 1 for row in rows) > 4  # cycled
    assert 0.3 < sum(row[0] == 1 for row in rows) / len(rows) < 0.7
    assert task_mixture(labeled, others, 1.0, seed=0)["input_ids"] == labeled["input_ids"]


# --- compare's curve


def write_floor(root, run: str, validation: float, predicted: list[str]) -> None:
    write_test_outputs(root, run, predicted, ACTUAL)
    file = root / paths.metrics_file("evaluate", run)
    scores = json.loads(file.read_text())
    write_json(file, {**scores, "c": 1.0, "validation_macro_f1": {"0.1": 0.0, "1": validation}})


@pytest.fixture
def curve(tmp_path, monkeypatch):
    """A repository root with the study's runs (seeds 1 and 2) and a label-budget curve at 4 and 16 labels."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    params["study"].update(seeds=SEEDS, labels_per_class=BUDGETS, bootstrap_samples=200,
                           matched_baselines=["baseline_flops"])
    params["floors"]["arms"] = ["tfidf"]
    params["tracking"].update(uri="http://127.0.0.1:9", required=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    for name in ("labeled.csv", "unlabeled.txt"):
        (tmp_path / "data" / "tiny").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "tiny" / name).touch()
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "reports/prepare.json", {"class_balance": {"train": {"fresh": 300, "rotten": 200}}})
    for budget, scores in VALIDATION.items():
        for index, seed in enumerate(SEEDS):
            # the two seeds straddle the mean by 0.05 (exact in binary halves of the means above: no tie moves)
            for number, arm in enumerate(ARMS):
                write_run(tmp_path, Run(arm, seed, labels_per_class=budget).name, scores[arm] + (index - 0.5) / 10,
                          predictions(1000 * (budget or 1) + 10 * number + seed), ACTUAL, arm in ("spt", "tapt"))
            if budget is not None:
                write_floor(tmp_path, Run("tfidf", seed, labels_per_class=budget).name, scores["tfidf"],
                            predictions(7000 * budget + seed))
        if budget is None:
            write_floor(tmp_path, "tfidf", scores["tfidf"], predictions(99))
    return tmp_path


def run_compare(root):
    from stages import compare as stage

    with pytest.warns(UserWarning, match="continuing without MLflow"):
        run_stage(stage.__doc__, stage.main, "compare", [])
    return json.loads((root / "metrics/compare.json").read_text()), (root / "reports/compare.md").read_text()


def test_every_budget_is_a_point_and_the_best_other_is_chosen_on_validation(curve):
    summary, report = run_compare(curve)
    points = summary["label_budget"]["points"]
    assert [p["labels_per_class"] for p in points] == [4, 16, None]
    assert [p["labels_per_class_realised"] for p in points] == [4.0, 16.0, 250.0]  # the full set: 500 labels, 2 classes
    assert [p["best_other"] for p in points] == [BEST_OTHER[4], BEST_OTHER[16], BEST_OTHER[None]]
    for point in points:
        budget = point["labels_per_class"]
        assert sorted(point["scores"]) == sorted([*ARMS, "tfidf"]) and point["scores"]["tfidf"]["floor"] is True
        for name, row in point["scores"].items():
            assert row["val_macro_f1_mean"] == pytest.approx(VALIDATION[budget][name])
            runs = [Run(name, seed, labels_per_class=budget).name for seed in SEEDS] if budget or name != "tfidf" \
                else ["tfidf"]
            tests = [json.loads((curve / paths.metrics_file("evaluate", run)).read_text())["accuracy"] for run in runs]
            assert row["accuracy"]["mean"] == pytest.approx(np.mean(tests))
            assert row["accuracy"]["low"] <= row["accuracy"]["mean"] <= row["accuracy"]["high"]
        assert point["spt_minus_best_other"] == point["differences"][f"spt_minus_{point['best_other']}"]
        assert sorted(point["differences"]) == sorted(f"spt_minus_{name}" for name in [*ARMS[1:], "tfidf"])
    # the full set's point is the study's own runs: the same differences as the study's table
    # (Holm-adjusted apart: the curve is a family of its own)
    def unadjusted(difference):
        return {metric: {k: v for k, v in row.items() if k != "p_holm"} for metric, row in difference.items()}

    assert unadjusted(points[-1]["differences"]["spt_minus_baseline"]) == \
        unadjusted(summary["differences"]["spt_minus_baseline"])
    assert summary["label_budget"]["family"]["comparisons"] == 3 * 4 * 2  # points x others x metrics
    section = report[report.index("## Scarce labels: test accuracy against labels per class"):]
    rows = [line for line in section.splitlines() if line.startswith("| 4 |") or line.startswith("| all (≈250) |")]
    assert len(rows) == 2 and rows[0].split(" | ")[-3] == "baseline"
    assert "With 16 labels per class" in section and "label_budget.png" in section
    assert (curve / "reports/label_budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_best_other_never_looks_at_test_labels(curve):
    """Permute the test labels of every run: the best other arm per budget stays, its test score moves."""
    before, _ = run_compare(curve)
    permuted = list(ACTUAL)
    random.Random(0).shuffle(permuted)
    for file in curve.glob("plots/study/*/evaluate/confusion.csv"):
        rows = file.read_text().splitlines()[1:]
        run = file.parent.parent.name
        metrics = json.loads((curve / paths.metrics_file("evaluate", run)).read_text())
        write_test_outputs(curve, run, [row.split(",")[1] for row in rows], permuted)
        if "c" in metrics:  # a floor keeps its validation scores
            scores = json.loads((curve / paths.metrics_file("evaluate", run)).read_text())
            write_json(curve / paths.metrics_file("evaluate", run), {**metrics, **scores})
    after, _ = run_compare(curve)
    assert [p["best_other"] for p in after["label_budget"]["points"]] == \
        [p["best_other"] for p in before["label_budget"]["points"]]
    assert [p["scores"]["spt"]["accuracy"] for p in after["label_budget"]["points"]] != \
        [p["scores"]["spt"]["accuracy"] for p in before["label_budget"]["points"]]


def test_a_missing_budget_run_is_named(curve, capsys):
    (curve / paths.metrics_file("evaluate", "tapt-n16-2")).unlink()
    with pytest.raises(SystemExit) as stop:
        run_compare(curve)
    assert stop.value.code == 2 and "study run tapt-n16-2 is incomplete" in capsys.readouterr().err


def test_without_budgets_the_figure_shows_the_full_set(curve):
    data = yaml.safe_load(open("params.yaml"))
    data["study"]["labels_per_class"] = []
    yaml.safe_dump(data, open("params.yaml", "w"))
    summary, report = run_compare(curve)
    assert [p["labels_per_class"] for p in summary["label_budget"]["points"]] == [None]
    assert "| all (≈250) |" in report and (curve / "reports/label_budget.png").is_file()


# --- how soon the classifier leaves the majority-class plateau (pretrain_sup's plateau_exit_step)


def test_the_plateau_exit_is_the_first_step_below_the_class_entropy():
    from stages.pretrain_sup import plateau_exit_step

    balanced = [0, 1] * 10  # entropy ln 2 = 0.693: the plateau ends below 0.9 x 0.693 = 0.624
    rows = [{"step": 5, "loss_supervised": 0.70, "lambda": 1.0}, {"step": 10, "loss_supervised": 0.63, "lambda": 1.0},
            {"step": 12, "loss": 3.0}, {"step": 15, "loss_supervised": 0.60, "lambda": 1.0},
            {"step": 20, "loss_supervised": 0.2, "lambda": 1.0}]
    assert plateau_exit_step(rows, balanced) == 15
    assert plateau_exit_step(rows[:3], balanced) is None  # never within the run
    # 90/10 labels: predicting the shares already gives 0.325, so 0.60 is still the plateau
    assert plateau_exit_step(rows, [0] * 18 + [1] * 2) == 20
    assert plateau_exit_step([{**row, "lambda": 0.0} for row in rows], balanced) is None  # no classifier trained


def test_batches_of_unlabeled_text_alone_do_not_dilute_the_logged_supervised_loss():
    """Length-grouped batches keep the corpus blocks apart from the labeled texts: a step without labels has an
    L_supervised of zero by construction, which must not enter the logged mean (nor the plateau step)."""
    import torch

    from spt.train.trainers import JointLossTrainer

    class Model:  # returns the given losses; compute_loss reads nothing else of it
        training = True
        cls_loss = 0.0

        def __call__(self, **inputs):
            return SimpleNamespace(mlm_loss=torch.tensor(5.0), cls_loss=torch.tensor(self.cls_loss), logits=None)

    trainer = JointLossTrainer.__new__(JointLossTrainer)  # the bookkeeping alone: no data, no training
    trainer._sums = {"loss_mlm": 0.0, "loss_supervised": 0.0, "lambda": 0.0}
    trainer._count = trainer._labeled_count = 0
    trainer._split = None
    trainer.current_lambda = lambda: 1.0
    trainer.weighted_loss = lambda mlm, cls, lam: (mlm + cls, (1.0, lam))
    model = Model()
    for labels, cls_loss in (([0, 1], 0.6), ([-100, -100], 0.0), ([1, -100], 0.4)):
        model.cls_loss = cls_loss
        trainer.compute_loss(model, {"labels": torch.tensor(labels), "input_ids": torch.zeros(2, 3)})
    assert trainer._count == 3 and trainer._labeled_count == 2
    assert trainer._sums["loss_supervised"] / trainer._labeled_count == pytest.approx(0.5)  # not 1.0 / 3

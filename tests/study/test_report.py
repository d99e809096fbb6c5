"""The study's summary and report (study/summary.py, study/report.py), with the floors: constructed runs with known
answers (no DVC, no training)."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from spt.errors import StudyError
from study.arms import ARMS, study_arms
from study.report import report
from study.stats import paired_difference
from study.summary import summarize
from tests.support import REPO

ACTUAL = ["fresh", "rotten"] * 50
STUDY = SimpleNamespace(target=None, target_fraction=0.99, bootstrap_samples=500)


def run(right: int) -> dict:
    """A study run right on its first ``right`` of the 100 test examples, converged (its best validation at step 10
    of 20)."""
    predicted = [a if i < right else ("rotten" if a == "fresh" else "fresh") for i, a in enumerate(ACTUAL)]
    return {"scores": {"accuracy": right / 100, "macro_f1": right / 100}, "actual": ACTUAL, "predicted": predicted,
            "steps": [0, 10, 20], "val_macro_f1": [0.5, 0.8, 0.8], "pretraining_steps": 0, "pretraining_flops": 0.0,
            "finetune_steps": 20, "finetune_flops": 1e9, "total_steps": [0, 10, 20], "total_flops": [0.0, 5e8, 1e9]}


def floor(right: int) -> dict:
    made = run(right)
    return {"scores": {**made["scores"], "c": 1.0}, "actual": ACTUAL, "predicted": made["predicted"]}


def test_spt_minus_a_floor_pairs_the_floor_with_every_seed():
    runs = {arm: [run(90), run(70)] for arm in ARMS}  # two seeds: SPT is right on 90 and 70 of 100
    summary = summarize(runs, [1, 2], STUDY, 0, {"tfidf": floor(60), "embeddings": {"skipped": "scratch"}})
    assert summary["floors"] == {"tfidf": {"accuracy": 0.6, "macro_f1": 0.6, "c": 1.0},
                                 "embeddings": {"skipped": "scratch"}}
    assert "spt_minus_embeddings" not in summary["differences"]
    difference = summary["differences"]["spt_minus_tfidf"]
    assert difference["accuracy"]["diff"] == pytest.approx(0.8 - 0.6)
    index = {"fresh": 0, "rotten": 1}
    spt = np.array([[index[p] for p in r["predicted"]] for r in runs["spt"]])
    tiled = np.tile([index[p] for p in floor(60)["predicted"]], (2, 1))  # the floor, as if it had both seeds
    expected = paired_difference(np.array([index[a] for a in ACTUAL]), spt, tiled, 2, 500, 0, 0.95)
    assert {metric: {k: v for k, v in row.items() if k != "p_holm"} for metric, row in difference.items()} == expected
    # the seeds disagree by 20 points (+0.3 and +0.1): with t at 1 degree of freedom (12.7) the interval is wide
    assert difference["accuracy"]["low"] < -0.5 and difference["accuracy"]["high"] > 0.9
    text = report(summary)
    assert "| tfidf (floor, C = 1) | 60.00 | 60.00 | – | – | – | – | – | – | – | – | – |" in text
    assert "| spt − tfidf | +20.00" in text
    assert "The embeddings floor was skipped: scratch." in text
    assert ("No accuracy difference is shown between SPT and the TF-IDF + logistic regression floor (no "
            "pretraining): +20.00") in text


def test_a_floor_scored_on_other_test_examples_is_refused():
    runs = {arm: [run(90)] for arm in ARMS}
    other = {**floor(60), "actual": list(reversed(ACTUAL))}
    with pytest.raises(StudyError, match="floor tfidf was scored on other test examples"):
        summarize(runs, [1], STUDY, 0, {"tfidf": other})


def test_compare_imports_no_torch():
    code = ("import sys, stages.compare, study.curve, study.figures, study.read, study.report, study.stats, "
            "study.summary, study.sweep; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize(("tapt", "matched"), [([], []), (["tapt"], []), ([], ["baseline_flops"]),
                                               (["tapt"], ["baseline_matched", "baseline_flops"])])
def test_the_report_covers_the_arms_that_ran(tapt, matched):
    arms = study_arms(SimpleNamespace(pretrained_controls=tapt, matched_baselines=matched))
    assert arms == ["spt", *tapt, "baseline", *matched]
    summary = summarize({arm: [run(80)] for arm in arms}, [1], STUDY, 0)
    assert list(summary["arms"]) == arms
    assert sorted(summary["differences"]) == sorted(f"spt_minus_{arm}" for arm in arms[1:])
    text = report(summary)
    missing = [arm for arm in ("tapt", "baseline_matched", "baseline_flops") if arm not in arms]
    for arm in missing:
        assert f"| {arm} |" not in text
    # the controls that did not run are named, with what their absence leaves open
    assert (f"Controls not run: {', '.join(missing)}." in text) == bool(missing)
    assert ("extra masked-LM pretraining rather than from its labels" in text) == ("tapt" in missing)
    assert ("SPT's extra compute" in text) == (not matched)


def test_an_arm_that_did_not_learn_is_flagged():
    """baseline's second seed never beat its step-0 validation (stuck on the plateau): the report says the
    comparison is not fair yet; spt starting at its best (a pretrained head) is no such case."""
    stuck = {**run(50), "val_macro_f1": [0.46, 0.37, 0.37]}
    at_best_from_start = {**run(90), "val_macro_f1": [0.8, 0.7, 0.75]}
    runs = {"spt": [at_best_from_start, run(90)], "tapt": [run(80), run(80)], "baseline": [run(80), stuck]}
    summary = summarize(runs, [42, 43], STUDY, 0)
    assert summary["arms"]["baseline"]["seeds_not_learning"] == [43]
    assert summary["arms"]["spt"]["seeds_not_learning"] == []
    assert summary["arms"]["tapt"]["seeds_not_learning"] == []
    text = report(summary)
    assert ("**Not a fair comparison yet:** finetuning never improved on its untrained start in baseline "
            "(seed 43)") in text
    healthy = report(summarize({arm: [run(80)] for arm in ("spt", "tapt", "baseline")}, [1], STUDY, 0))
    assert "Not a fair comparison" not in healthy

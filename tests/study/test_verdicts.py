"""What compare concludes, on constructed runs with known answers: convergence, one seed, Holm, P(A > B), the power
line, time to target with censored seeds, and the recommendation (study/summary.py, study/report.py)."""

import re
from types import SimpleNamespace

import pytest

from study.report import difference_verdict, report
from study.summary import summarize

EXAMPLES = 1000
ACTUAL = ["fresh", "rotten"] * (EXAMPLES // 2)
STUDY = SimpleNamespace(target=None, target_fraction=0.99, bootstrap_samples=200)
CONVERGED = [0.5, 0.8, 0.79]  # validation at steps 0, 20, 40: best at 20 of 40
# right answers of 1000, per seed (five seeds): SPT and TAPT within half a point, the baseline 20 points below
RIGHT = {"spt": [900, 902, 904, 906, 908], "tapt": [898, 905, 903, 900, 909], "baseline": [700, 703, 701, 706, 702]}


def run(right: int, validation: float = 0.8, flops: float = 1e9, curve: list[float] = CONVERGED,
        best_step: int | None = None) -> dict:
    """A study run right on its first ``right`` of the test examples, validated at steps 0, 20, 40."""
    predicted = [a if i < right else ("rotten" if a == "fresh" else "fresh") for i, a in enumerate(ACTUAL)]
    steps = [0, 20, 40][:len(curve)]
    return {"scores": {"accuracy": right / EXAMPLES, "macro_f1": right / EXAMPLES}, "actual": ACTUAL,
            "predicted": predicted, "steps": steps, "val_macro_f1": curve, "val_best": validation,
            "best_step": best_step, "pretraining_steps": 0, "pretraining_flops": 0.0, "finetune_steps": steps[-1],
            "finetune_flops": flops, "total_steps": steps, "total_flops": [flops * s / steps[-1] for s in steps]}


def study(rights: dict[str, list[int]], **arm_settings) -> dict[str, list[dict]]:
    """Runs per arm, one per seed, right on the given counts; ``arm_settings``: run() keywords per arm."""
    return {arm: [run(right, **arm_settings.get(arm, {})) for right in counts] for arm, counts in rights.items()}


def verdict_section(text: str) -> str:
    return text[text.index("## What holds on this data"):text.index("![validation macro-F1")]


# --- convergence


def test_a_not_converged_run_is_flagged_and_a_converged_one_not():
    runs = study({"spt": [900, 900], "tapt": [900, 900], "baseline": [900, 900]})
    runs["spt"][1] = run(900, curve=[0.5, 0.7, 0.8])  # still improving at its last validation
    runs["tapt"][0] = run(900, curve=[0.5, 0.8, 0.8], best_step=20)  # ties its best at the end: kept step 20
    summary = summarize(runs, [1, 2], STUDY, 0)
    assert summary["not_converged"] == [{"arm": "spt", "seed": 2, "run": None, "best_step": 40, "last_step": 40}]
    assert summary["arms"]["spt"]["seeds_not_converged"] == [2]
    assert summary["arms"]["tapt"]["seeds_not_converged"] == []
    assert summary["arms"]["spt"]["best_and_last_validation_step"] == [[20, 40], [40, 40]]
    verdicts = verdict_section(report(summary))
    assert verdicts.startswith("## What holds on this data\n\n- **Not a fair comparison yet**: spt (seed 2, best "
                               "validation at step 40 of 40) not converged: raise finetune.max_steps (best validation "
                               "at its last step).")
    assert "tapt (seed" not in verdicts
    assert "Provisional" in report(summary).split("## Recommendation")[1]
    converged = summarize(study({"spt": [900, 900], "tapt": [900, 900], "baseline": [900, 900]}), [1, 2], STUDY, 0)
    assert converged["not_converged"] == [] and "Not a fair comparison" not in report(converged)


# --- one seed


def test_one_seed_claims_nothing_and_says_so_first():
    """SPT right on 950 of 1000, the baseline on 600: a 35-point gap whose test-noise interval excludes 0 by far.
    One seed still claims nothing: training variance is not counted."""
    summary = summarize(study({"spt": [950], "tapt": [600], "baseline": [600]}), [1], STUDY, 0)
    difference = summary["differences"]["spt_minus_baseline"]["accuracy"]
    assert difference["low"] > 0.3 and difference["training_variance_counted"] is False
    text = report(summary)
    assert text.splitlines()[0] == ("# Supervised pretraining against the other recipes: one seed, training variance "
                                    "is not counted")
    for claim in ("more accurate", "less accurate", "**sooner**", "**later**", "shown **"):
        assert claim not in text
    assert "SPT − the standard recipe with the same finetuning steps: +35.00 [" in text and "one seed, no claim" in text
    assert summary["recommendation"]["recommended"] is None and "**None from one seed**" in text
    assert "| spt − baseline | +35.00 [" in text and "| – | " in text  # no p-value from test noise alone


# --- Holm, P(A > B), the power line


def test_verdicts_are_decided_on_holm_adjusted_p_values():
    """Five seeds: SPT beats the baseline by 20 points on each (shown, even after Holm over the 4 comparisons),
    and ties TAPT."""
    summary = summarize(study(RIGHT), [1, 2, 3, 4, 5], STUDY, 0)
    assert summary["family"]["comparisons"] == 4  # SPT − tapt and − baseline, accuracy and macro-F1
    baseline = summary["differences"]["spt_minus_baseline"]["accuracy"]
    assert baseline["p_holm"] < 0.05 and baseline["p_holm"] >= baseline["p"]
    assert baseline["p_a_beats_b"] == pytest.approx({"estimate": 1.0, "low": 0.025 ** (1 / 5), "high": 1.0,
                                                     "seeds": 5})
    text = report(summary)
    assert "SPT is **more accurate** than the standard recipe with the same finetuning steps: +20.16 [" in text
    assert "P(SPT > baseline on a seed) = 5/5 seeds: 1.00 [0.48, 1.00]" in text
    assert "| spt − baseline | +20.16 [" in text and "| 5/5 seeds: 1.00 [0.48, 1.00] |" in text
    tapt = verdict_section(text).split("\n- ")[1]
    assert tapt.startswith("No accuracy difference is shown between SPT and TAPT")
    # the per-seed differences (+0.2, -0.3, +0.1, +0.6, -0.1 points) spread by 0.35 point: a few seeds suffice
    needed = summary["differences"]["spt_minus_tapt"]["accuracy"]["seeds_for_1_point"]
    assert needed is not None and re.search(r"seeds would detect a 1-point difference between SPT and tapt", tapt)


def test_an_interval_that_excludes_zero_is_not_shown_after_holm():
    row = {"diff": 0.02, "low": 0.001, "high": 0.039, "p": 0.04, "p_holm": 0.16, "training_variance_counted": True,
           "seeds": 3, "seeds_for_1_point": 12, "sd_per_seed": 0.01, "shared_test_sd": 0.003,
           "p_a_beats_b": {"estimate": 1.0, "low": 0.29, "high": 1.0, "seeds": 3}}
    line = difference_verdict("the standard recipe", "baseline", row, {**row, "p_holm": 0.5}, 4)
    assert line.startswith("No accuracy difference is shown between SPT and the standard recipe: +2.00 [+0.10, +3.90]")
    assert "its interval excludes 0 but not after the correction for many comparisons (Holm-adjusted p = 0.160 over " \
           "the 4 comparisons of the table)" in line
    assert "add 9 seeds to tell SPT from baseline at 1 point with 80% power (12 in all" in line
    shown = difference_verdict("the standard recipe", "baseline", {**row, "p_holm": 0.03}, row, 4)
    assert shown.startswith("SPT is **more accurate** than the standard recipe")
    hopeless = difference_verdict("x", "baseline", {**row, "seeds_for_1_point": None}, row, 4)
    assert "no number of seeds would tell SPT from baseline at 1 point" in hopeless and "larger test set" in hopeless


# --- time to target


def test_censored_seeds_are_counted_and_no_verdict_comes_from_them():
    """SPT's third seed never reaches the target (99% of the baseline's best, 0.792): it is counted as censored,
    the mean is over the two that reached it, and no sooner / later is claimed."""
    runs = study({"spt": [900, 900, 900], "tapt": [900, 900, 900], "baseline": [900, 900, 900]})
    runs["spt"] = [run(900, curve=[0.8, 0.8, 0.79]), run(900, curve=[0.5, 0.8, 0.79]),
                   run(900, curve=[0.5, 0.7, 0.75], best_step=40)]
    runs["spt"][2]["val_macro_f1"] = [0.5, 0.75, 0.7]  # converged, never at the target
    summary = summarize(runs, [1, 2, 3], STUDY, 0)
    spt = summary["arms"]["spt"]
    assert spt["target_reached"] == "2/3" and spt["target_censored"] == 1
    assert spt["steps_to_target_finetune_per_seed"] == [0, 20, None]
    assert spt["steps_to_target_finetune"]["mean"] == 10 and spt["steps_to_target_finetune"]["seeds"] == 2
    comparison = summary["time_to_target"]["comparisons"]["finetune"]
    assert comparison["verdict"] is False and comparison["censored"] == {"spt": 1, "baseline": 0}
    text = verdict_section(report(summary))
    assert ("Counting finetuning steps alone, no comparison of time to target: SPT reached it on 2 of 3 seeds and the "
            "standard recipe on 3 of 3") in text
    assert "**sooner**" not in text and "**later**" not in text
    assert "Validation ran every 20 finetuning steps (finetune.save_steps), so a time to target is known to within " \
           "20 steps." in text


def test_no_verdict_from_a_zero_width_interval():
    """Every seed: SPT at the target at step 0, the baseline at step 20. The seeds agree to the validation step;
    the interval has zero width and measures nothing."""
    rights = {"spt": [900, 900, 900], "tapt": [900, 900, 900], "baseline": [900, 900, 900]}
    runs = study(rights, spt={"curve": [0.8, 0.8, 0.79], "best_step": 20})
    summary = summarize(runs, [1, 2, 3], STUDY, 0)
    comparison = summary["time_to_target"]["comparisons"]["finetune"]
    assert (comparison["diff"], comparison["low"], comparison["high"]) == (-20, -20, -20)
    assert comparison["verdict"] is False and comparison["why"] == "zero width"
    text = verdict_section(report(summary))
    assert "every seed gives SPT − the standard recipe = -20: a zero-width interval" in text
    assert "**sooner**" not in text
    # seeds that disagree give an interval, and a verdict
    runs["spt"][2] = run(900, curve=[0.5, 0.8, 0.79])
    runs["spt"][1] = run(900, curve=[0.79, 0.8, 0.79])
    comparison = summarize(runs, [1, 2, 3], STUDY, 0)["time_to_target"]["comparisons"]["finetune"]
    assert comparison["verdict"] is True and comparison["low"] < comparison["high"]


# --- the recommendation


def test_the_cheapest_arm_not_shown_worse_than_the_best_is_recommended():
    """SPT is best on validation. The baseline (cheapest) is 20 points worse on every seed: shown worse. TAPT
    (next cheapest) is within half a point, varying: not shown worse, so it is recommended."""
    rights = {**RIGHT, "baseline_flops": [890, 891, 892, 893, 894]}
    settings = {"spt": {"validation": 0.9, "flops": 8e9}, "tapt": {"validation": 0.85, "flops": 6e9},
                "baseline": {"validation": 0.8, "flops": 2e9}, "baseline_flops": {"validation": 0.82, "flops": 8e9}}
    summary = summarize(study(rights, **settings), [1, 2, 3, 4, 5], STUDY, 0)
    advice = summary["recommendation"]
    assert advice["best_on_validation"] == "spt" and advice["arms_by_training_flops"][:2] == ["baseline", "tapt"]
    assert advice["shown_worse"]["baseline"] is True and advice["shown_worse"]["tapt"] is False
    assert advice["recommended"] == "tapt"
    text = report(summary)
    last = text.rstrip().split("\n")[-1]
    assert last.startswith("**tapt** (6e+09 training FLOPs).") and "The best on validation is **spt** (90.00)" in last
    assert "spt − tapt: " in last and "not shown worse" in last and "Cheaper arms shown worse: baseline." in last
    assert "seeds would detect a 1-point difference between tapt and spt" in last or "to tell tapt from spt" in last
    assert text.rstrip().split("\n## ")[-1].startswith("Recommendation")  # the report ends with it

"""reports/compare.md: the arm table, the differences and the sentences that follow from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spt import paths
from study.arms import PRETRAINED_ARMS
from study.curve import budget_report
from study.sweep import chosen_line, selection_report
from study.text import cell, mean_std

FIGURE = Path("reports/compare.png")
TIMINGS = Path("reports/timings.md")  # seconds: not a DVC output (see timings_report)


NAMES = {"tapt": "TAPT (the same pretraining budget, masked-LM only: no labels)",
         "baseline": "the standard recipe with the same finetuning steps",
         "baseline_matched": "the standard recipe given as many extra examples as SPT pretrained on",
         "baseline_flops": "the standard recipe given as many extra FLOPs as SPT's pretraining spent"}


FLOOR_NAMES = {"tfidf": "the TF-IDF + logistic regression floor (no pretraining)",
               "embeddings": "the floor of logistic regression on the source model's frozen embeddings"}


def verdicts(summary: dict) -> list[str]:
    """Plain sentences: which claims hold on this data and which do not."""
    stalled = [f"{arm} (seed {', '.join(map(str, row['seeds_not_learning']))})"
               for arm, row in summary["variants"].items() if row["seeds_not_learning"]]
    lines = [f"**Not a fair comparison yet:** finetuning never improved on its untrained start in "
             f"{', '.join(stalled)}: no validation after step 0 beat step 0, so within these finetuning steps that "
             "arm did not learn (e.g. it predicts the majority class), and a difference with it measures the budget, "
             "not the recipe; raise finetune.max_steps."] if stalled else []
    compared = {**{arm: NAMES[arm] for arm in summary["variants"] if arm != "spt"},
                **{floor: FLOOR_NAMES[floor] for floor in summary["floors"]
                   if f"spt_minus_{floor}" in summary["differences"]}}
    for other, name in compared.items():
        diff = summary["differences"][f"spt_minus_{other}"]["accuracy"]
        interval = f"{diff['diff'] * 100:+.2f} points, 95% CI [{diff['low'] * 100:+.2f}, {diff['high'] * 100:+.2f}]"
        if diff["low"] > 0:
            lines.append(f"SPT is **more accurate** than {name}: {interval}.")
        elif diff["high"] < 0:
            lines.append(f"SPT is **less accurate** than {name}: {interval}.")
        else:
            lines.append(f"No accuracy difference is shown between SPT and {name}: {interval} includes 0.")
    spt, base = summary["variants"]["spt"], summary["variants"]["baseline"]
    for kind, words in (("finetune", "finetuning steps alone"), ("total", "total training steps (pretraining "
                                                                           "included)")):
        ours, theirs = spt[f"steps_to_target_{kind}"], base[f"steps_to_target_{kind}"]
        if ours is None:
            lines.append(f"Counting {words}, SPT never reached the target validation macro-F1.")
        elif theirs is None or ours["high"] < theirs["low"]:
            other = "never" if theirs is None else f"{theirs['mean']:.0f}"
            lines.append(f"Counting {words}, SPT reached the target **sooner**: {ours['mean']:.0f} vs {other} for "
                         "the standard recipe.")
        elif ours["low"] > theirs["high"]:
            lines.append(f"Counting {words}, SPT reached the target **later**: {ours['mean']:.0f} vs "
                         f"{theirs['mean']:.0f} for the standard recipe.")
        else:
            lines.append(f"Counting {words}, no difference in time to target is shown: {ours['mean']:.0f} vs "
                         f"{theirs['mean']:.0f} for the standard recipe (intervals over seeds overlap).")
    return lines


def report(summary: dict) -> str:
    """reports/compare.md."""
    seeds = summary["seeds"]
    target = summary["target"]
    target_text = (f"validation macro-F1 {target['absolute_val_macro_f1']:.3f}" if "absolute_val_macro_f1" in target
                   else f"{target['fraction_of_baseline_best_val_macro_f1']:.0%} of the baseline's best validation "
                   "macro-F1 (per seed)")
    lines = ["# Supervised pretraining against the other recipes", "",
             f"Test set: {summary['test_examples']} examples; seeds: {', '.join(map(str, seeds))} (a seed varies "
             f"{', '.join(summary['varied_by_seed'])}; {' and '.join(summary['shared_by_all_seeds'])} are shared). "
             f"Target: {target_text}. Compute is counted from the shared pretrain_unsup checkpoint; FLOPs are "
             "counted on the real batches (forward and backward), validation excluded.", "",
             *([chosen_line(summary["selection"]), ""] if "selection" in summary else []),
             "| arm | test accuracy | test macro-F1 | pretraining steps | finetuning steps | training FLOPs | "
             "finetuning steps to target | total steps to target | FLOPs to target | reached |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for variant, row in summary["variants"].items():
        lines.append(f"| {variant} | {mean_std(row['accuracy_mean'], row['accuracy_std'])} | "
                     f"{mean_std(row['macro_f1_mean'], row['macro_f1_std'])} | {row['pretraining_steps']} | "
                     f"{row['finetune_steps']:.0f} | {row['training_flops']:.3g} | "
                     f"{cell(row['steps_to_target_finetune'])} | {cell(row['steps_to_target_total'])} | "
                     f"{cell(row['flops_to_target_total'], fmt='.3g')} | {row['target_reached']} |")
    for floor, row in summary["floors"].items():
        if "skipped" not in row:
            lines.append(f"| {floor} (floor, C = {row['c']:g}) | {row['accuracy'] * 100:.2f} | "
                         f"{row['macro_f1'] * 100:.2f} | – | – | – | – | – | – | – |")
    lines += ["", "± is the standard deviation over seeds; [low, high] a 95% bootstrap interval over seeds."]
    if summary["floors"]:
        lines.append("Floors train no network and need no seed: logistic regression on TF-IDF features (tfidf) or on "
                     "the source model's frozen mean-pooled embeddings (embeddings), C chosen on validation.")
    lines += [f"The {floor} floor was skipped: {row['skipped']}." for floor, row in summary["floors"].items()
              if "skipped" in row]
    lines += ["",
              "Differences, hierarchical bootstrap (seeds, then test examples), 95% intervals, points:", "",
              "| difference | accuracy | macro-F1 |", "|---|---|---|"]
    for name, diff in summary["differences"].items():
        cells = [f"{diff[m]['diff'] * 100:+.2f} [{diff[m]['low'] * 100:+.2f}, {diff[m]['high'] * 100:+.2f}]"
                 for m in ("accuracy", "macro_f1")]
        lines.append(f"| {name.replace('_minus_', ' − ')} | {cells[0]} | {cells[1]} |")
    lines += ["", "## What holds on this data", ""] + [f"- {line}" for line in verdicts(summary)]
    lines += ["", f"![validation macro-F1 against training compute]({FIGURE.name})", "",
              "Steps and FLOPs, not seconds, measure time here: they are reproducible. Wall-clock seconds per "
              f"arm are in `{TIMINGS.name}` beside this report (not a DVC output: they vary) and in MLflow.", ""]
    if "selection" in summary:
        lines += selection_report(summary)
    if "label_budget" in summary:
        lines += budget_report(summary["label_budget"])
    return "\n".join(lines)


def timings_report(arm_runs: dict[str, list[str]]) -> tuple[str, dict[str, float]]:
    """reports/timings.md: wall-clock training seconds per arm (mean over its runs, one per seed), from timings/.

    Not a DVC output and not hashed by the reproducibility gate: seconds differ from run to run and
    machine to machine. Runs whose timings are missing (e.g. trained in another workspace) are left out.
    """
    lines = ["# Wall-clock training time (seconds; varies from run to run, not hashed by DVC)", "",
             "| arm | pretraining s | finetuning s | total s | seeds timed |", "|---|---|---|---|---|"]
    means: dict[str, float] = {}
    for variant, runs in arm_runs.items():
        totals, parts = [], {"pretrain_sup": [], "finetune": []}
        for run in runs:
            stages = ["pretrain_sup", "finetune"] if variant in PRETRAINED_ARMS else ["finetune"]
            files = [paths.timing_file(stage, run) for stage in stages]
            if all(file.is_file() for file in files):
                seconds = [json.loads(file.read_text())["train_runtime"] for file in files]
                for stage, value in zip(stages, seconds, strict=True):
                    parts[stage].append(value)
                totals.append(sum(seconds))
        if totals:
            means[f"{variant}_train_seconds"] = float(np.mean(totals))
            cells = [f"{np.mean(parts[stage]):.0f}" if parts[stage] else "–" for stage in ("pretrain_sup", "finetune")]
            lines.append(f"| {variant} | {cells[0]} | {cells[1]} | {np.mean(totals):.0f} | {len(totals)} |")
    return "\n".join(lines) + "\n", means

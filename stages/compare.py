"""compare: does supervised pretraining beat the standard recipe here, and by how much?

Reads:  for every variant and seed of the study, metrics/study/<variant>-<seed>/evaluate.json,
        plots/study/<variant>-<seed>/evaluate/confusion.csv (test predictions) and
        plots/study/<variant>-<seed>/finetune/validation.csv (validation curve).
Writes: metrics/compare.json, reports/compare.md, plots/compare/validation_macro_f1.csv.
Params: study.

Variants: spt (finetune from pretrain_sup), baseline (finetune from pretrain_unsup, same steps:
the standard recipe) and baseline_matched (the standard recipe given as many extra finetuning
steps as pretrain_sup took, so both arms spend the same number of training steps).
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from stages.common import paths
from stages.common.cli import run_stage
from stages.common.errors import StudyError
from stages.common.outputs import atomic_output, write_json
from stages.common.stats import paired_bootstrap, steps_to_target
from stages.common.tracking import stage_run

STAGE = "compare"
VARIANTS = paths.STUDY_VARIANTS
VERDICT_LEVEL = 0.95


def read_run(variant: str, seed: int) -> dict:
    """Test predictions, test scores and the validation curve of one study run."""
    run = paths.study_run(variant, seed)
    try:
        scores = json.loads(paths.metrics_file("evaluate", run).read_text())
        with open(paths.plots_dir("evaluate", run) / "confusion.csv") as handle:
            rows = list(csv.DictReader(handle))
        with open(paths.plots_dir("finetune", run) / "validation.csv") as handle:
            curve = [row for row in csv.DictReader(handle) if row["eval_macro_f1"]]
    except FileNotFoundError as err:
        raise StudyError(f"study run {run} is incomplete ({err.filename} missing); run `dvc repro`") from None
    return {"scores": scores, "actual": [r["actual"] for r in rows], "predicted": [r["predicted"] for r in rows],
            "steps": [int(r["step"]) for r in curve], "val_macro_f1": [float(r["eval_macro_f1"]) for r in curve]}


def summarize(runs: dict[str, list[dict]], seeds: list[int], target_fraction: float, samples: int,
              seed: int) -> dict:
    """Everything the report says, as data."""
    labels = sorted(set(runs["baseline"][0]["actual"]))
    index = {name: i for i, name in enumerate(labels)}
    actual = np.array([index[a] for a in runs["baseline"][0]["actual"]])
    predictions = {v: np.array([[index[p] for p in r["predicted"]] for r in runs[v]]) for v in VARIANTS}
    summary: dict = {"seeds": seeds, "test_examples": int(actual.size), "variants": {}, "differences": {}}
    targets = [target_fraction * max(r["val_macro_f1"]) for r in runs["baseline"]]
    for variant in VARIANTS:
        accuracy = [r["scores"]["accuracy"] for r in runs[variant]]
        macro_f1 = [r["scores"]["macro_f1"] for r in runs[variant]]
        reached = [steps_to_target(r["steps"], r["val_macro_f1"], t) for r, t in zip(runs[variant], targets)]
        hits = [s for s in reached if s is not None]
        summary["variants"][variant] = {
            "accuracy_mean": float(np.mean(accuracy)), "accuracy_std": float(np.std(accuracy)),
            "macro_f1_mean": float(np.mean(macro_f1)), "macro_f1_std": float(np.std(macro_f1)),
            "steps_to_target_mean": float(np.mean(hits)) if hits else None,
            "target_reached": f"{len(hits)}/{len(reached)}",
            "steps_to_target": reached,
        }
    for other in ("baseline", "baseline_matched"):
        summary["differences"][f"spt_minus_{other}"] = paired_bootstrap(
            actual, predictions["spt"], predictions[other], len(labels), samples, seed, VERDICT_LEVEL)
    summary["target"] = {"fraction_of_baseline_best_val_macro_f1": target_fraction,
                         "per_seed": [float(t) for t in targets]}
    return summary


def verdicts(summary: dict) -> list[str]:
    """Plain sentences: which claims hold on this data and which do not."""
    lines = []
    for other, name in (("baseline", "the standard recipe with the same finetuning steps"),
                        ("baseline_matched", "the standard recipe given the same total training steps")):
        diff = summary["differences"][f"spt_minus_{other}"]["accuracy"]
        interval = f"{diff['diff'] * 100:+.2f} points, 95% CI [{diff['low'] * 100:+.2f}, {diff['high'] * 100:+.2f}]"
        if diff["low"] > 0:
            lines.append(f"SPT is **more accurate** than {name}: {interval}.")
        elif diff["high"] < 0:
            lines.append(f"SPT is **less accurate** than {name}: {interval}.")
        else:
            lines.append(f"No accuracy difference is shown between SPT and {name}: {interval} includes 0.")
    spt, base = summary["variants"]["spt"], summary["variants"]["baseline"]
    if spt["steps_to_target_mean"] is None:
        lines.append("SPT finetuning never reached the target validation macro-F1: **shorter finetuning not shown**.")
    elif base["steps_to_target_mean"] is None or spt["steps_to_target_mean"] < base["steps_to_target_mean"]:
        baseline_steps = "never" if base["steps_to_target_mean"] is None else f"{base['steps_to_target_mean']:.0f}"
        lines.append(f"SPT finetuning reached the target in **fewer steps** ({spt['steps_to_target_mean']:.0f} vs "
                     f"{baseline_steps} for the standard recipe, mean over seeds): the shorter-finetuning claim "
                     "holds here.")
    else:
        lines.append(f"SPT finetuning did **not** reach the target sooner ({spt['steps_to_target_mean']:.0f} vs "
                     f"{base['steps_to_target_mean']:.0f} steps): the shorter-finetuning claim does not hold here.")
    return lines


def report(summary: dict) -> str:
    """reports/compare.md."""
    seeds = summary["seeds"]
    lines = ["# Supervised pretraining vs the standard recipe", "",
             f"Test set: {summary['test_examples']} examples; seeds: {', '.join(map(str, seeds))}. "
             f"Target: {summary['target']['fraction_of_baseline_best_val_macro_f1']:.0%} of the baseline's "
             "best validation macro-F1 (per seed).", "",
             "| variant | test accuracy | test macro-F1 | finetuning steps to target | reached |",
             "|---|---|---|---|---|"]
    for variant, row in summary["variants"].items():
        steps = "never" if row["steps_to_target_mean"] is None else f"{row['steps_to_target_mean']:.0f}"
        lines.append(f"| {variant} | {row['accuracy_mean'] * 100:.2f} ± {row['accuracy_std'] * 100:.2f} | "
                     f"{row['macro_f1_mean'] * 100:.2f} ± {row['macro_f1_std'] * 100:.2f} | {steps} | "
                     f"{row['target_reached']} |")
    lines += ["", "Paired bootstrap over test examples, pooled over seeds (points):", "",
              "| difference | accuracy | macro-F1 |", "|---|---|---|"]
    for name, diff in summary["differences"].items():
        cells = [f"{diff[m]['diff'] * 100:+.2f} [{diff[m]['low'] * 100:+.2f}, {diff[m]['high'] * 100:+.2f}]"
                 for m in ("accuracy", "macro_f1")]
        lines.append(f"| {name.replace('_minus_', ' − ')} | {cells[0]} | {cells[1]} |")
    lines += ["", "## What holds on this data", ""] + [f"- {line}" for line in verdicts(summary)]
    lines += ["", "Steps, not seconds, measure finetuning time here: they are reproducible; each finetune "
              "run's wall-clock `train_runtime` is in MLflow.", ""]
    return "\n".join(lines)


def write_curves(runs: dict[str, list[dict]], seeds: list[int], directory: Path) -> None:
    with atomic_output(directory) as staging:
        staging.mkdir()
        with open(staging / "validation_macro_f1.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["variant", "seed", "step", "val_macro_f1"])
            for variant in VARIANTS:
                for seed, run in zip(seeds, runs[variant]):
                    for step, score in zip(run["steps"], run["val_macro_f1"]):
                        writer.writerow([variant, seed, step, round(score, 6)])


def main(params) -> None:
    study = params.study
    with stage_run(STAGE, params) as tracker:
        runs = {v: [read_run(v, s) for s in study.seeds] for v in VARIANTS}
        summary = summarize(runs, study.seeds, study.target_fraction, study.bootstrap_samples, params.seed)
        write_json(paths.metrics_file(STAGE), summary)
        with atomic_output(paths.REPORT) as staging:
            staging.write_text(report(summary), encoding="utf-8")
        write_curves(runs, study.seeds, paths.plots_dir(STAGE))
        flat = {f"{v}_{k}": value for v, row in summary["variants"].items() for k, value in row.items()
                if isinstance(value, float)}
        flat.update({f"{name}_{m}": d[m]["diff"] for name, d in summary["differences"].items() for m in d})
        tracker.log_metrics(flat)
        tracker.log_to_parent(flat)
        tracker.log_artifact(paths.REPORT)
        if tracker.active:
            from stages.common.figures import study_curves

            with tempfile.TemporaryDirectory() as scratch:
                tracker.log_artifact(study_curves(runs, Path(scratch) / "validation_macro_f1.png"), "plots")


if __name__ == "__main__":
    run_stage(__doc__, main, STAGE)

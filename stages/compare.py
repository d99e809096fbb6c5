"""compare: does supervised pretraining beat the other recipes here, by how much, and at what cost?

Reads:  for every arm and seed of the study, metrics/study/<arm>-<seed>/evaluate.json,
        plots/study/<arm>-<seed>/evaluate/confusion.csv (test predictions),
        plots/study/<arm>-<seed>/finetune/validation.csv (validation curve with running FLOPs),
        metrics/study/<arm>-<seed>/finetune.json and, for spt and tapt, pretrain_sup.json;
        for each floor, metrics/study/<floor>/evaluate.json and plots/study/<floor>/evaluate/confusion.csv.
Writes: metrics/compare.json, reports/compare.md, reports/compare.png (the curves),
        plots/compare/validation_macro_f1.csv.
Params: seed, study, floors.variants (the floors to report).

Arms (all start from the shared pretrain_unsup checkpoint): spt (pretrain_sup, then finetune),
tapt (the same pretraining budget with lambda = 0, then finetune: what more masked-LM alone adds),
baseline (finetune, the same steps), baseline_matched (finetune given as many extra examples as
SPT's pretraining trained on) and baseline_flops (as many extra FLOPs). Intervals come from a
hierarchical bootstrap: seeds, then test examples. A seed varies each arm's pretraining and
finetuning; prepare and pretrain_unsup are shared. Only this stage and evaluate read the test split.

Floors (no pretraining, no seed: study_floors): tfidf (TF-IDF + logistic regression) and embeddings
(logistic regression on model.source's frozen embeddings). They have test scores but no steps or
FLOPs; SPT - floor pairs the floor's one prediction set with every seed of SPT. A skipped floor
(embeddings with model.source scratch) is listed with its reason.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from stages.common import paths
from stages.common.cli import run_stage
from stages.common.errors import StudyError
from stages.common.outputs import atomic_output, write_json

STAGE = "compare"
VERDICT_LEVEL = 0.95
FIGURE = Path("reports/compare.png")
TIMINGS = Path("reports/timings.md")  # seconds: not a DVC output (see timings_report)
VARIED_BY_SEED = ["study_pretrain (spt, tapt)", "study_finetune", "study_baseline", "study_matched"]
SHARED = ["prepare", "pretrain_unsup"]


def read_run(variant: str, seed: int) -> dict:
    """Test predictions and scores, the validation curve and the training compute of one study run."""
    run = paths.study_run_name(variant, seed)
    try:
        scores = json.loads(paths.metrics_file("evaluate", run).read_text())
        finetune = json.loads(paths.metrics_file("finetune", run).read_text())
        pretraining = (json.loads(paths.metrics_file("pretrain_sup", run).read_text())
                       if variant in paths.PRETRAINED_ARMS else {"steps": 0, "flops": 0.0})
        with open(paths.plots_dir("evaluate", run) / "confusion.csv") as handle:
            rows = list(csv.DictReader(handle))
        with open(paths.plots_dir("finetune", run) / "validation.csv") as handle:
            curve = [row for row in csv.DictReader(handle) if row["eval_macro_f1"]]
    except FileNotFoundError as err:
        raise StudyError(f"study run {run} is incomplete ({err.filename} missing); run `dvc repro`") from None
    steps = [int(r["step"]) for r in curve]
    flops = [float(r["flops"]) for r in curve]
    return {"scores": scores, "actual": [r["actual"] for r in rows], "predicted": [r["predicted"] for r in rows],
            "steps": steps, "val_macro_f1": [float(r["eval_macro_f1"]) for r in curve],
            "pretraining_steps": int(pretraining["steps"]), "pretraining_flops": float(pretraining["flops"]),
            "finetune_steps": int(finetune["steps"]), "finetune_flops": float(finetune["flops"]),
            "total_steps": [int(pretraining["steps"]) + s for s in steps],
            "total_flops": [float(pretraining["flops"]) + f for f in flops]}


def read_floor(variant: str) -> dict:
    """A floor's test predictions and scores, or {"skipped": why} when it did not run."""
    run = paths.study_run_name(variant, None)
    try:
        scores = json.loads(paths.metrics_file("evaluate", run).read_text())
        if "skipped" in scores:
            return {"skipped": scores["skipped"]}
        with open(paths.plots_dir("evaluate", run) / "confusion.csv") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError as err:
        raise StudyError(f"floor {run} is incomplete ({err.filename} missing); run `dvc repro`") from None
    return {"scores": scores, "actual": [r["actual"] for r in rows], "predicted": [r["predicted"] for r in rows]}


def spread(values: list[float]) -> float | None:
    """Standard deviation over seeds; None for one seed (no spread is shown where there is none)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarize(runs: dict[str, list[dict]], seeds: list[int], study, seed: int, floors: dict[str, dict] | None = None
              ) -> dict:
    """Everything the report says, as data. ``floors``: :func:`read_floor` per floor (none: no floors)."""
    from stages.common.stats import first_reaching, hierarchical_bootstrap, seed_interval

    labels = sorted(set(runs["baseline"][0]["actual"]))
    index = {name: i for i, name in enumerate(labels)}
    actual = np.array([index[a] for a in runs["baseline"][0]["actual"]])
    predictions = {v: np.array([[index[p] for p in r["predicted"]] for r in runs[v]]) for v in runs}
    if study.target is not None:
        targets = [study.target] * len(seeds)
        target = {"absolute_val_macro_f1": study.target}
    else:
        targets = [study.target_fraction * max(r["val_macro_f1"]) for r in runs["baseline"]]
        target = {"fraction_of_baseline_best_val_macro_f1": study.target_fraction}
    summary: dict = {"seeds": seeds, "test_examples": int(actual.size), "varied_by_seed": VARIED_BY_SEED,
                     "shared_by_all_seeds": SHARED, "target": {**target, "per_seed": [float(t) for t in targets]},
                     "variants": {}, "floors": {}, "differences": {}}
    for variant in runs:
        arm_runs = runs[variant]
        accuracy = [r["scores"]["accuracy"] for r in arm_runs]
        macro_f1 = [r["scores"]["macro_f1"] for r in arm_runs]
        reached = [first_reaching(r["val_macro_f1"], t) for r, t in zip(arm_runs, targets)]
        hits = [(r, i) for r, i in zip(arm_runs, reached) if i is not None]

        def interval(values: list[float]) -> dict | None:
            return seed_interval(values, study.bootstrap_samples, seed, VERDICT_LEVEL)

        summary["variants"][variant] = {
            "accuracy_mean": float(np.mean(accuracy)), "accuracy_std": spread(accuracy),
            "macro_f1_mean": float(np.mean(macro_f1)), "macro_f1_std": spread(macro_f1),
            "pretraining_steps": int(np.mean([r["pretraining_steps"] for r in arm_runs])),
            "finetune_steps": float(np.mean([r["finetune_steps"] for r in arm_runs])),
            "training_flops": float(np.mean([r["pretraining_flops"] + r["finetune_flops"] for r in arm_runs])),
            "target_reached": f"{len(hits)}/{len(arm_runs)}",
            "steps_to_target_finetune": interval([r["steps"][i] for r, i in hits]),
            "steps_to_target_total": interval([r["total_steps"][i] for r, i in hits]),
            "flops_to_target_total": interval([r["total_flops"][i] for r, i in hits]),
        }
    for other in [arm for arm in runs if arm != "spt"]:
        summary["differences"][f"spt_minus_{other}"] = hierarchical_bootstrap(
            actual, predictions["spt"], predictions[other], len(labels), study.bootstrap_samples, seed, VERDICT_LEVEL)
    for floor, result in (floors or {}).items():
        if "skipped" in result:
            summary["floors"][floor] = {"skipped": result["skipped"]}
            continue
        if result["actual"] != runs["baseline"][0]["actual"]:
            raise StudyError(f"floor {floor} was scored on other test examples than the study's arms; run `dvc repro`")
        summary["floors"][floor] = {"accuracy": float(result["scores"]["accuracy"]),
                                    "macro_f1": float(result["scores"]["macro_f1"]), "c": result["scores"]["c"]}
        one_set = np.array([[index[p] for p in result["predicted"]]])  # [1, examples]: no seed
        summary["differences"][f"spt_minus_{floor}"] = hierarchical_bootstrap(
            actual, predictions["spt"], one_set, len(labels), study.bootstrap_samples, seed, VERDICT_LEVEL)
    return summary


NAMES = {"tapt": "TAPT (the same pretraining budget, masked-LM only: no labels)",
         "baseline": "the standard recipe with the same finetuning steps",
         "baseline_matched": "the standard recipe given as many extra examples as SPT pretrained on",
         "baseline_flops": "the standard recipe given as many extra FLOPs as SPT's pretraining spent"}
FLOOR_NAMES = {"tfidf": "the TF-IDF + logistic regression floor (no pretraining)",
               "embeddings": "the floor of logistic regression on the source model's frozen embeddings"}


def verdicts(summary: dict) -> list[str]:
    """Plain sentences: which claims hold on this data and which do not."""
    lines = []
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


def _cell(value: dict | None, scale: float = 1.0, fmt: str = ".0f") -> str:
    if value is None:
        return "never"
    text = f"{value['mean'] / scale:{fmt}}"
    return text if value["seeds"] < 2 else f"{text} [{value['low'] / scale:{fmt}}, {value['high'] / scale:{fmt}}]"


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean * 100:.2f}" if std is None else f"{mean * 100:.2f} ± {std * 100:.2f}"


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
             "| arm | test accuracy | test macro-F1 | pretraining steps | finetuning steps | training FLOPs | "
             "finetuning steps to target | total steps to target | FLOPs to target | reached |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for variant, row in summary["variants"].items():
        lines.append(f"| {variant} | {_mean_std(row['accuracy_mean'], row['accuracy_std'])} | "
                     f"{_mean_std(row['macro_f1_mean'], row['macro_f1_std'])} | {row['pretraining_steps']} | "
                     f"{row['finetune_steps']:.0f} | {row['training_flops']:.3g} | "
                     f"{_cell(row['steps_to_target_finetune'])} | {_cell(row['steps_to_target_total'])} | "
                     f"{_cell(row['flops_to_target_total'], fmt='.3g')} | {row['target_reached']} |")
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
    return "\n".join(lines)


def timings_report(arms: list[str], seeds: list[int]) -> tuple[str, dict[str, float]]:
    """reports/timings.md: wall-clock training seconds per arm (mean over seeds), from timings/.

    Not a DVC output and not hashed by the reproducibility gate: seconds differ from run to run and
    machine to machine. Runs whose timings are missing (e.g. trained in another workspace) are left out.
    """
    lines = ["# Wall-clock training time (seconds; varies from run to run, not hashed by DVC)", "",
             "| arm | pretraining s | finetuning s | total s | seeds timed |", "|---|---|---|---|---|"]
    means: dict[str, float] = {}
    for variant in arms:
        totals, parts = [], {"pretrain_sup": [], "finetune": []}
        for seed in seeds:
            run = paths.study_run_name(variant, seed)
            stages = ["pretrain_sup", "finetune"] if variant in paths.PRETRAINED_ARMS else ["finetune"]
            files = [paths.timing_file(stage, run) for stage in stages]
            if all(file.is_file() for file in files):
                seconds = [json.loads(file.read_text())["train_runtime"] for file in files]
                for stage, value in zip(stages, seconds):
                    parts[stage].append(value)
                totals.append(sum(seconds))
        if totals:
            means[f"{variant}_train_seconds"] = float(np.mean(totals))
            cells = [f"{np.mean(parts[stage]):.0f}" if parts[stage] else "–" for stage in ("pretrain_sup", "finetune")]
            lines.append(f"| {variant} | {cells[0]} | {cells[1]} | {np.mean(totals):.0f} | {len(totals)} |")
    return "\n".join(lines) + "\n", means


def write_curves(runs: dict[str, list[dict]], seeds: list[int], directory: Path) -> None:
    with atomic_output(directory) as staging:
        staging.mkdir()
        with open(staging / "validation_macro_f1.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["variant", "seed", "finetune_step", "step", "flops", "val_macro_f1"])
            for variant in runs:
                for seed, run in zip(seeds, runs[variant]):
                    for point in zip(run["steps"], run["total_steps"], run["total_flops"], run["val_macro_f1"]):
                        writer.writerow([variant, seed, point[0], point[1], int(point[2]), round(point[3], 6)])


def main(params) -> None:
    from stages.common.figures import study_curves
    from stages.common.tracking import tracked_run

    study = params.study
    with tracked_run(STAGE, params) as tracker:
        runs = {v: [read_run(v, s) for s in study.seeds] for v in paths.study_arms(study.matched_baselines)}
        floors = {floor: read_floor(floor) for floor in params.floors.variants}
        summary = summarize(runs, study.seeds, study, params.seed, floors)
        write_json(paths.metrics_file(STAGE), summary)
        with atomic_output(paths.REPORT) as staging:
            staging.write_text(report(summary), encoding="utf-8")
        with atomic_output(FIGURE) as staging:
            study_curves(runs, staging)
        write_curves(runs, study.seeds, paths.plots_dir(STAGE))
        flat = {f"{v}_{k}": value for v, row in {**summary["variants"], **summary["floors"]}.items()
                for k, value in row.items() if isinstance(value, float)}
        flat.update({f"{name}_{m}": d[m]["diff"] for name, d in summary["differences"].items() for m in d})
        timings, seconds = timings_report(list(runs), study.seeds)
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS.write_text(timings, encoding="utf-8")
        tracker.log_metrics({**flat, **seconds})
        tracker.log_to_parent({**flat, **seconds})
        tracker.log_artifact(TIMINGS)
        tracker.log_artifact(paths.REPORT)
        tracker.log_artifact(FIGURE, "plots")


if __name__ == "__main__":
    run_stage(__doc__, main, STAGE)

"""compare: does supervised pretraining beat the other recipes here, by how much, and at what cost?

Reads:  for every arm and seed of the study, metrics/study/<arm>-<seed>/evaluate.json,
        plots/study/<arm>-<seed>/evaluate/confusion.csv (test predictions),
        plots/study/<arm>-<seed>/finetune/validation.csv (validation curve with running FLOPs),
        metrics/study/<arm>-<seed>/finetune.json and, for spt and tapt, pretrain_sup.json;
        for each floor, metrics/study/<floor>/evaluate.json and plots/study/<floor>/evaluate/confusion.csv.
        With a sweep (study.weightings x study.lambdas), first metrics/study/<run>/finetune.json of every
        candidate setting and seed (the best validation macro-F1), and nothing else of them; the chosen
        setting's runs are then read as spt's above. No test output of another candidate is opened.
        With a label-budget curve (study.labels_per_class), the same files of every arm's and floor's run per
        budget and seed (<arm>-n<budget>-<seed>); reports/prepare.json (training labels per class).
Writes: metrics/compare.json, reports/compare.md, reports/compare.png (the curves; with a sweep, a panel
        of validation macro-F1 against lambda), reports/label_budget.png (test accuracy against labels per
        class, every arm and floor, and SPT minus the best other; the full set alone without budgets),
        plots/compare/validation_macro_f1.csv.
Params: seed, study, floors.arms (the floors to report), pretrain_sup.weighting and
        pretrain_sup.lambda (the spt arm's own setting: always a candidate of the sweep).

Arms (all start from the shared pretrain_unsup checkpoint): spt (pretrain_sup, then finetune),
tapt (the same pretraining budget with lambda = 0, then finetune: what more masked-LM alone adds),
baseline (finetune, the same steps), baseline_matched (finetune given as many extra examples as
SPT's pretraining trained on) and baseline_flops (as many extra FLOPs). Intervals are at the seed
level: per seed, SPT minus the other on the same test examples; a t interval over seeds that adds the
test noise every seed shares (study/stats.py: paired_difference; its coverage under a null is tested).
The arm table's comparisons are one family, Holm-adjusted; the label-budget curve is another. A run
whose best validation is its last is listed as not converged, and the verdicts open with it. The
report ends with a recommendation: the cheapest arm not shown worse than the best on validation. A
seed varies each arm's pretraining and finetuning; prepare and pretrain_unsup are shared. Only this
stage and evaluate read the test split.

Floors (no pretraining, no seed: study_floors): tfidf (TF-IDF + logistic regression) and embeddings
(logistic regression on model.source's frozen embeddings). They have test scores but no steps or
FLOPs; SPT - floor pairs the floor's one prediction set with every seed of SPT. A skipped floor
(embeddings with model.source scratch) is listed with its reason.

The sweep (study.weightings x study.lambdas, study_sweep_*): the candidates are the spt arm's own
setting (pretrain_sup.weighting, pretrain_sup.lambda) and every other pair, each trained as the spt
arm is, per seed. The one with the highest mean over seeds of finetune's best validation macro-F1
wins (ties: the spt arm's own setting, then the order listed) and its runs stand in as spt everywhere
in the report. The choice is made, and written down, before any test output is read.

The label-budget curve (study.labels_per_class, study_budget_*): per budget, the arms and floors trained on
that many labels per class (pretrain_sup's own setting: the sweep does not run per budget), then the full
set (the study's runs). Per point: each one's test accuracy and macro-F1 with seed-level intervals, the
best other arm or floor by validation macro-F1 (mean over seeds) and SPT minus it, and SPT minus each.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from spt import paths
from spt.errors import StudyError
from spt.outputs import atomic_output
from stages.cli import run_stage

STAGE = "compare"


def write_curves(runs: dict[str, list[dict]], seeds: list[int], directory: Path) -> None:
    """plots/compare/validation_macro_f1.csv: every arm's and seed's validation curve against compute."""
    with atomic_output(directory) as staging:
        staging.mkdir()
        with open(staging / "validation_macro_f1.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["arm", "seed", "finetune_step", "step", "flops", "val_macro_f1"])
            for arm in runs:
                for seed, run in zip(seeds, runs[arm], strict=True):
                    for point in zip(run["steps"], run["total_steps"], run["total_flops"], run["val_macro_f1"],
                                     strict=True):
                        writer.writerow([arm, seed, point[0], point[1], int(point[2]), round(point[3], 6)])


def flat_metrics(summary: dict) -> dict[str, float]:
    """compare's numbers as MLflow metrics, so its run shows the study's answer (MLflow cannot group seeds or draw
    intervals): per-arm means and, on the full set, their 95% interval (``spt_accuracy_low``, ``_high``); each
    difference and its interval (``spt_minus_tapt_accuracy``, ``_low``, ``_high``); the curve's points."""
    flat = {f"{name}_{k}": value for name, row in {**summary["arms"], **summary["floors"]}.items()
            for k, value in row.items() if isinstance(value, float)}
    for name, difference in summary["differences"].items():
        for metric, interval in difference.items():
            flat.update({f"{name}_{metric}": interval["diff"], f"{name}_{metric}_low": interval["low"],
                         f"{name}_{metric}_high": interval["high"], f"{name}_{metric}_p_holm": interval["p_holm"]})
    for point in summary["label_budget"]["points"]:  # budget_8_spt_accuracy, budget_all_spt_minus_best_other_...
        key = f"budget_{point['labels_per_class'] or 'all'}"
        flat.update({f"{key}_{name}_accuracy": row["accuracy"]["mean"] for name, row in point["scores"].items()})
        flat[f"{key}_spt_minus_best_other_accuracy"] = point["spt_minus_best_other"]["accuracy"]["diff"]
        if point["labels_per_class"] is None:  # the full set: the study's runs, every arm's and floor's interval
            flat.update({f"{name}_{metric}_{bound}": row[metric][bound] for name, row in point["scores"].items()
                         for metric in ("accuracy", "macro_f1") for bound in ("low", "high")})
    return flat


def log_selection(tracker, selection: dict | None) -> None:
    """One MLflow child run per candidate of the sweep's choice."""
    for row in (selection or {}).get("candidates", []):
        tracker.log_child_run(
            f"candidate {row['weighting']} lambda={row['lambda']}",
            params={"weighting": row["weighting"], "lambda": float(row["lambda"]), "spt_arm": row["spt_arm"],
                    "runs": ",".join(row["runs"])},
            metrics={"val_macro_f1_mean": row["val_macro_f1_mean"], "val_macro_f1_std": row["val_macro_f1_std"]},
            tags={"stage": STAGE, "chosen": str(row["chosen"]).lower(), "weighting": row["weighting"],
                  "lambda": str(float(row["lambda"]))})


def main(params) -> None:
    from spt.tracking import tracked_run
    from study.arms import PRETRAINED_ARMS, study_arms
    from study.curve import BUDGET_FIGURE, label_budget, read_budget_runs
    from study.figures import budget_curve, study_curves
    from study.read import read_floor, read_run
    from study.report import FIGURE, TIMINGS, report, timings_report
    from study.run import Run
    from study.summary import VARIED_BY_SEED, summarize
    from study.sweep import choose, selection_summary, sweep_candidates, validation_scores

    study = params.study
    with tracked_run(STAGE, params) as tracker:
        # 1. which runs are each arm's; with a sweep, choose spt's setting on validation before any test output
        arm_runs = {arm: [Run(arm, seed).name for seed in study.seeds] for arm in study_arms(study)}
        selection = None
        candidates = sweep_candidates(study, params.pretrain_sup)
        if candidates:
            scores = validation_scores(candidates, study.seeds)
            chosen = choose(scores)
            selection = selection_summary(candidates, study.seeds, scores, chosen)
            arm_runs["spt"] = [candidates[chosen].run(seed) for seed in study.seeds]
        # 2. read every arm's, floor's and curve point's runs
        runs = {arm: [read_run(run, arm in PRETRAINED_ARMS) for run in names] for arm, names in arm_runs.items()}
        floors = {floor: read_floor(Run(floor).name) for floor in params.floors.arms}
        points = {n: read_budget_runs(list(arm_runs), params.floors.arms, study.seeds, n)
                  for n in study.labels_per_class}
        if not paths.DATA_REPORT.is_file():
            raise StudyError(f"{paths.DATA_REPORT} is missing (prepare writes it); run `dvc repro`")
        train_counts = json.loads(paths.DATA_REPORT.read_text())["class_balance"]["train"]
        # 3. summarise: the arm table, the curve, the choice
        summary = summarize(runs, study.seeds, study, params.seed, floors)
        summary["label_budget"] = label_budget(
            (runs, {floor: [result] for floor, result in floors.items()}), points,
            sum(train_counts.values()) / len(train_counts), study, params.seed)
        if selection is not None:
            summary["selection"] = selection
            summary["varied_by_seed"] = [*VARIED_BY_SEED, "study_sweep_pretrain", "study_sweep_finetune"]
        # 4. write the outputs DVC tracks, then what MLflow shows
        tracker.write_metrics(paths.metrics_file(STAGE), summary)
        with atomic_output(paths.REPORT) as staging:
            staging.write_text(report(summary), encoding="utf-8")
        with atomic_output(FIGURE) as staging:
            study_curves(runs, staging, selection)
        with atomic_output(BUDGET_FIGURE) as staging:
            budget_curve(summary["label_budget"], staging)
        write_curves(runs, study.seeds, paths.plots_dir(STAGE))
        timings, seconds = timings_report(arm_runs)
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS.write_text(timings, encoding="utf-8")
        metrics = {**flat_metrics(summary), **seconds}
        tracker.log_metrics(metrics)
        tracker.log_to_parent(metrics)
        for artifact, folder in ((BUDGET_FIGURE, "plots"), (TIMINGS, None), (paths.REPORT, None), (FIGURE, "plots")):
            tracker.log_artifact(artifact, folder)
        log_selection(tracker, selection)


if __name__ == "__main__":
    run_stage(__doc__, main, STAGE)

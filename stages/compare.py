"""compare: does supervised pretraining beat the other recipes here, by how much, and at what cost?

Reads:  for every arm and seed of the study, metrics/study/<arm>-<seed>/evaluate.json,
        plots/study/<arm>-<seed>/evaluate/confusion.csv (test predictions),
        plots/study/<arm>-<seed>/finetune/validation.csv (validation curve with running FLOPs),
        metrics/study/<arm>-<seed>/finetune.json and, for spt and tapt, pretrain_sup.json;
        for each floor, metrics/study/<floor>/evaluate.json and plots/study/<floor>/evaluate/confusion.csv.
        With a sweep (study.weightings x study.lambdas), first metrics/study/<run>/finetune.json of every
        candidate setting and seed (the best validation macro-F1), and nothing else of them; the chosen
        setting's runs are then read as spt's above. No test output of another candidate is opened.
        With a label-budget curve (study.n_per_class), the same files of every arm's and floor's run per
        budget and seed (<variant>-n<budget>-<seed>); reports/prepare.json (training labels per class).
Writes: metrics/compare.json, reports/compare.md, reports/compare.png (the curves; with a sweep, a panel
        of validation macro-F1 against lambda), reports/label_budget.png (test accuracy against labels per
        class, every arm and floor, and SPT minus the best other; the full set alone without budgets),
        plots/compare/validation_macro_f1.csv.
Params: seed, study, floors.variants (the floors to report), pretrain_sup.weighting and
        pretrain_sup.lambda (the spt arm's own setting: always a candidate of the sweep).

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

The sweep (study.weightings x study.lambdas, study_sweep_*): the candidates are the spt arm's own
setting (pretrain_sup.weighting, pretrain_sup.lambda) and every other pair, each trained as the spt
arm is, per seed. The one with the highest mean over seeds of finetune's best validation macro-F1
wins (ties: the spt arm's own setting, then the order listed) and its runs stand in as spt everywhere
in the report. The choice is made, and written down, before any test output is read.

The label-budget curve (study.n_per_class, study_budget_*): per budget, the arms and floors trained on
that many labels per class (pretrain_sup's own setting: the sweep does not run per budget), then the full
set (the study's runs). Per point: each one's test accuracy and macro-F1 with hierarchical intervals, the
best other arm or floor by validation macro-F1 (mean over seeds) and SPT minus it, and SPT minus each.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Candidate:
    """A setting the spt arm can train with: its own (``own``: pretrain_sup's weighting and lambda, runs
    ``spt-<seed>``) or one of the sweep's (runs ``spt-<weighting>-l<lambda>-<seed>``)."""

    setting: paths.SweepSetting
    own: bool

    def run(self, seed: int | str) -> str:
        return paths.study_run_name("spt", seed, None if self.own else self.setting)


def sweep_candidates(study, pretrain_sup) -> list[Candidate]:
    """The spt arm's own setting, then every pair of study.weightings x study.lambdas, in that order, that is
    not the same setting (that one is the spt arm's run); [] without a sweep (both lists empty)."""
    if not (study.weightings and study.lambdas):
        return []
    own = paths.SweepSetting(pretrain_sup.weighting, pretrain_sup.lambda_)
    grid = [paths.SweepSetting(weighting, lambda_) for weighting in study.weightings for lambda_ in study.lambdas]
    return [Candidate(own, True), *(Candidate(setting, False) for setting in grid if setting != own)]


def validation_scores(candidates: list[Candidate], seeds: list[int]) -> list[list[float]]:
    """Finetune's best validation macro-F1 per candidate and seed, from metrics/study/<run>/finetune.json:
    the only files of the candidates read before the choice (no test output)."""
    scores = []
    for candidate in candidates:
        row = []
        for seed in seeds:
            file = paths.metrics_file("finetune", candidate.run(seed))
            try:
                row.append(float(json.loads(file.read_text())["val_macro_f1"]))
            except FileNotFoundError:
                raise StudyError(f"study run {candidate.run(seed)} is incomplete ({file} missing); run `dvc repro`"
                                 ) from None
        scores.append(row)
    return scores


def seed_mean(values: list[float]) -> float:
    """The exactly rounded mean over seeds (math.fsum): the same for the same values in any order, so seeds never break
    a tie by rounding."""
    return math.fsum(values) / len(values)


def choose(scores: list[list[float]]) -> int:
    """Index of the candidate with the highest mean validation macro-F1 over seeds; ties go to the first
    listed (the spt arm's own setting comes first, then the sweep in the order of its lists)."""
    means = [seed_mean(row) for row in scores]
    return means.index(max(means))


def plateau_exits(candidates: list[Candidate], seeds: list[int]) -> list[list[int | None]]:
    """pretrain_sup's first logging step off the majority-class plateau per candidate and seed (None: never; a run
    written before the metric existed: None too). Training-side only, never a test output."""
    def exit_step(run: str) -> int | None:
        file = paths.metrics_file("pretrain_sup", run)
        return json.loads(file.read_text()).get("plateau_exit_step") if file.is_file() else None

    return [[exit_step(candidate.run(seed)) for seed in seeds] for candidate in candidates]


def selection_summary(candidates: list[Candidate], seeds: list[int], scores: list[list[float]], chosen: int) -> dict:
    """The choice as data (metrics/compare.json ``selection``): every candidate's validation scores and the winner,
    and how soon each one's classifier left the majority-class plateau in pretrain_sup."""
    exits = plateau_exits(candidates, seeds)
    rows = [{"weighting": c.setting.weighting, "lambda": c.setting.lambda_, "spt_arm": c.own, "run": c.run("<seed>"),
             "runs": [c.run(seed) for seed in seeds], "val_macro_f1_mean": seed_mean(row),
             "val_macro_f1_std": spread(row), "val_macro_f1_per_seed": row, "plateau_exit_steps": exit_steps,
             "chosen": index == chosen}
            for index, (c, row, exit_steps) in enumerate(zip(candidates, scores, exits))]
    return {"criterion": "highest mean over seeds of finetune's best validation macro-F1 (metrics/study/<run>/"
                         "finetune.json: val_macro_f1); ties: the spt arm's own setting, then the order listed",
            "chosen": {key: rows[chosen][key] for key in ("weighting", "lambda", "spt_arm", "run", "runs",
                                                           "val_macro_f1_mean")},
            "candidates": rows}


def read_run(run: str, pretrained: bool) -> dict:
    """Test predictions and scores, the validation curve and the training compute of one study run
    (``pretrained``: it has a pretrain_sup run of its own, as spt and tapt)."""
    try:
        scores = json.loads(paths.metrics_file("evaluate", run).read_text())
        finetune = json.loads(paths.metrics_file("finetune", run).read_text())
        pretraining = (json.loads(paths.metrics_file("pretrain_sup", run).read_text())
                       if pretrained else {"steps": 0, "flops": 0.0})
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
            "val_best": float(finetune["val_macro_f1"]),  # the checkpoint finetuning kept
            "pretraining_steps": int(pretraining["steps"]), "pretraining_flops": float(pretraining["flops"]),
            "finetune_steps": int(finetune["steps"]), "finetune_flops": float(finetune["flops"]),
            "total_steps": [int(pretraining["steps"]) + s for s in steps],
            "total_flops": [float(pretraining["flops"]) + f for f in flops]}


def read_floor(run: str) -> dict:
    """A floor run's test predictions and scores, or {"skipped": why} when it did not run."""
    try:
        scores = json.loads(paths.metrics_file("evaluate", run).read_text())
        if "skipped" in scores:
            return {"skipped": scores["skipped"]}
        with open(paths.plots_dir("evaluate", run) / "confusion.csv") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError as err:
        raise StudyError(f"floor {run} is incomplete ({err.filename} missing); run `dvc repro`") from None
    return {"scores": scores, "actual": [r["actual"] for r in rows], "predicted": [r["predicted"] for r in rows]}


def not_learning(run: dict) -> bool:
    """Finetuning never beat its first validation (step 0): for an arm whose classifier head starts
    untrained (tapt and the baselines) the run did not learn within its steps, e.g. stuck predicting
    the majority class, and a comparison with it measures the budget rather than the recipe."""
    scores = run["val_macro_f1"]
    return len(scores) > 1 and max(scores[1:]) <= scores[0]


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
            "seeds_not_learning": [s for s, r in zip(seeds, arm_runs) if variant != "spt" and not_learning(r)],
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
             *([chosen_line(summary["selection"]), ""] if "selection" in summary else []),
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
    if "selection" in summary:
        lines += selection_report(summary)
    if "label_budget" in summary:
        lines += budget_report(summary["label_budget"])
    return "\n".join(lines)


SELECTION_TITLE = "Choosing the weighting and λ on validation"


def _setting(row: dict) -> str:
    return f"weighting {row['weighting']}, λ = {row['lambda']:g}"


def chosen_line(selection: dict) -> str:
    """The report's opening note: which setting the spt rows are."""
    chosen = selection["chosen"]
    where = "the spt arm's own setting" if chosen["spt_arm"] else f"runs `{chosen['run']}`"
    return (f"**spt** below is the setting chosen on validation: {_setting(chosen)} ({where}); see "
            f"[{SELECTION_TITLE}](#choosing-the-weighting-and-λ-on-validation).")


def selection_report(summary: dict) -> list[str]:
    """The section that shows the choice: every candidate's validation scores, then the winner's test score."""
    selection, seeds = summary["selection"], summary["seeds"]
    chosen, spt = selection["chosen"], summary["variants"]["spt"]
    lines = [f"## {SELECTION_TITLE}", "",
             "Candidates: the spt arm's own setting (pretrain_sup.weighting and pretrain_sup.lambda) and every other "
             "pair of study.weightings × study.lambdas, each pretrained and finetuned as the spt arm is, for every "
             "seed. Score: finetune's best validation macro-F1 (the checkpoint it keeps), mean over seeds; the "
             "highest wins, ties go to the spt arm's own setting, then the order listed. The choice was made from "
             "these validation scores alone: no test output of any candidate was read before it, and none of a "
             "candidate that lost. The step off the plateau is pretrain_sup's first logging step whose L_supervised "
             "fell below 90% of the entropy of the training labels (the loss of predicting the class shares): how "
             "soon that weighting let the classifier learn from the text.", "",
             f"| weighting | λ | validation macro-F1 | per seed ({' / '.join(map(str, seeds))}) | "
             "pretrain_sup step off the plateau (per seed) | runs | chosen |",
             "|---|---|---|---|---|---|---|"]
    for row in selection["candidates"]:
        own = " (spt arm)" if row["spt_arm"] else ""
        per_seed = " / ".join(f"{value * 100:.2f}" for value in row["val_macro_f1_per_seed"])
        exits = " / ".join("never" if step is None else str(step) for step in row.get("plateau_exit_steps", []))
        lines.append(f"| {row['weighting']}{own} | {row['lambda']:g} | "
                     f"{_mean_std(row['val_macro_f1_mean'], row['val_macro_f1_std'])} | {per_seed} | {exits} | "
                     f"`{row['run']}` | {'**chosen**' if row['chosen'] else ''} |")
    lines += ["", f"Chosen: {_setting(chosen)}, validation macro-F1 {chosen['val_macro_f1_mean'] * 100:.2f}; "
                  f"its test accuracy is {_mean_std(spt['accuracy_mean'], spt['accuracy_std'])} (macro-F1 "
                  f"{_mean_std(spt['macro_f1_mean'], spt['macro_f1_std'])}), read after the choice."]
    matched = [arm for arm in summary["variants"] if arm in paths.MATCHED_ARMS]
    if matched and not chosen["spt_arm"]:
        lines.append(f"{' and '.join(matched)} match the spt arm's own pretraining (pretrain_sup's weighting and "
                     "lambda), not the chosen setting's: with another weighting the FLOPs may differ (gradcos "
                     "counts its extra backward passes).")
    lines += ["", "The right panel of the figure above shows these validation scores against λ, one line per "
                  "weighting (the square: the spt arm's own setting; the ring: the chosen one).", ""]
    return lines


BUDGET_FIGURE = Path("reports/label_budget.png")
BUDGET_TITLE = "Scarce labels: test accuracy against labels per class"


def budget_point(runs: dict[str, list[dict]], floors: dict[str, dict], n_per_class: int | None,
                 labels_per_class: float, study, seed: int) -> dict:
    """One point of the label-budget curve: every arm's and floor's test scores with hierarchical intervals, the
    best other arm or floor chosen on validation (finetune's best validation macro-F1, mean over seeds; a floor's
    at its chosen C) and SPT minus each other, SPT minus the best other first. ``n_per_class`` None: the full set."""
    from stages.common.stats import hierarchical_bootstrap, score_interval

    names = sorted(set(runs["spt"][0]["actual"]))
    index = {name: i for i, name in enumerate(names)}
    actual = np.array([index[a] for a in runs["spt"][0]["actual"]])
    predictions, validation = {}, {}
    for arm, arm_runs in runs.items():
        predictions[arm] = np.array([[index[p] for p in r["predicted"]] for r in arm_runs])
        validation[arm] = seed_mean([r["val_best"] for r in arm_runs])
    for floor, floor_runs in floors.items():
        if any("skipped" in r for r in floor_runs):
            continue
        if any(r["actual"] != runs["spt"][0]["actual"] for r in floor_runs):
            raise StudyError(f"floor {floor} was scored on other test examples than the study's arms; run `dvc repro`")
        predictions[floor] = np.array([[index[p] for p in r["predicted"]] for r in floor_runs])
        validation[floor] = seed_mean([r["scores"]["validation_macro_f1"][f"{r['scores']['c']:g}"] for r in floor_runs])
    others = [name for name in predictions if name != "spt"]
    best = max(others, key=lambda name: validation[name])  # ties: the first listed (max keeps the first)

    differences = {f"spt_minus_{other}": hierarchical_bootstrap(
        actual, predictions["spt"], predictions[other], len(names), study.bootstrap_samples, seed, VERDICT_LEVEL)
        for other in others}
    return {"n_per_class": n_per_class, "labels_per_class": labels_per_class,
            "scores": {name: {**score_interval(actual, predictions[name], len(names), study.bootstrap_samples, seed,
                                               VERDICT_LEVEL), "val_macro_f1_mean": validation[name],
                              "floor": name not in runs} for name in predictions},
            "seeds_not_learning": {arm: [s for s, r in zip(study.seeds, arm_runs) if not_learning(r)]
                                   for arm, arm_runs in runs.items() if arm != "spt"},
            "best_other": best, "spt_minus_best_other": differences[f"spt_minus_{best}"], "differences": differences}


def label_budget(full: tuple[dict, dict], budgets: dict[int, tuple[dict, dict]], train_per_class: float, study,
                 seed: int) -> dict:
    """The label-budget curve (metrics/compare.json ``label_budget``): one :func:`budget_point` per budget of
    study.n_per_class, smallest first, then the full set (the study's own runs, ``full``)."""
    points = [budget_point(*budgets[n], n, float(n), study, seed) for n in sorted(budgets)]
    points.append(budget_point(*full, None, train_per_class, study, seed))
    return {"criterion": "best other: the arm or floor (spt aside) with the highest validation macro-F1, mean over "
                         "seeds (finetune's kept checkpoint; a floor's at its chosen C); test scores are read after",
            "true_few_shot": study.true_few_shot, "points": points}


def _budget_name(point: dict) -> str:
    return f"{point['n_per_class']}" if point["n_per_class"] is not None else \
        f"all (≈{point['labels_per_class']:.0f})"


def budget_verdicts(curve: dict) -> list[str]:
    """Per budget: does SPT beat the best other arm or floor (chosen on validation), and every other one?"""
    lines = []
    for point in curve["points"]:
        diff, f1 = point["spt_minus_best_other"]["accuracy"], point["spt_minus_best_other"]["macro_f1"]
        where = f"With {_budget_name(point)} labels per class"
        interval = (f"{diff['diff'] * 100:+.2f} points [{diff['low'] * 100:+.2f}, {diff['high'] * 100:+.2f}] in "
                    f"accuracy, {f1['diff'] * 100:+.2f} [{f1['low'] * 100:+.2f}, {f1['high'] * 100:+.2f}] in macro-F1")
        beaten = [name for name, d in point["differences"].items() if d["accuracy"]["low"] > 0]
        if diff["low"] > 0:
            verdict = f"SPT is **more accurate** than the best other recipe on validation, {point['best_other']}"
        elif diff["high"] < 0:
            verdict = f"SPT is **less accurate** than the best other recipe on validation, {point['best_other']}"
        else:
            verdict = f"no difference is shown between SPT and the best other recipe on validation, " \
                      f"{point['best_other']}"
        others = len(point["differences"])
        lines.append(f"{where}, {verdict}: {interval}; SPT beats {len(beaten)} of the {others} others "
                     f"({', '.join(name.removeprefix('spt_minus_') for name in beaten) or 'none'}).")
        stalled = [f"{arm} (seed {', '.join(map(str, seeds))})" for arm, seeds in point["seeds_not_learning"].items()
                   if seeds]
        if stalled:
            lines.append(f"{where}, **not a fair comparison yet**: {', '.join(stalled)} never improved on step 0 "
                         "of finetuning; raise finetune.max_steps.")
    return lines


def budget_report(curve: dict) -> list[str]:
    """The report's section on the label-budget curve: one row per budget, every arm and floor."""
    names = list(curve["points"][0]["scores"])
    capped = "capped to the budget per class too (study.true_few_shot)" if curve["true_few_shot"] else \
        "the full validation split (study.true_few_shot: false)"
    lines = [f"## {BUDGET_TITLE}", "",
             "For each budget of study.n_per_class, every arm and floor trained per seed on that many training labels "
             "per class, drawn per seed (data/budgets/n<N>-<seed>); the other training texts stayed masked-LM text. "
             f"Validation: {capped}. The last row is the full set: the study's runs above. Cells: test accuracy, "
             "mean over seeds [95% hierarchical bootstrap interval: seeds, then test examples]. The best other "
             "recipe is chosen on validation macro-F1, before its test score is read. Read accuracy with macro-F1: "
             "with few labels a classifier that predicts the majority class scores that class's share in "
             "accuracy and little in macro-F1.", "",
             f"| labels per class | {' | '.join(names)} | best other (validation) | SPT − best other | "
             "SPT − best other, macro-F1 |",
             f"|---|{'---|' * len(names)}---|---|---|"]
    for point in curve["points"]:
        cells = []
        for name in names:
            score = point["scores"].get(name)
            cells.append("–" if score is None else f"{score['accuracy']['mean'] * 100:.2f} "
                         f"[{score['accuracy']['low'] * 100:.2f}, {score['accuracy']['high'] * 100:.2f}]")
        diffs = [point["spt_minus_best_other"][metric] for metric in ("accuracy", "macro_f1")]
        lines.append(f"| {_budget_name(point)} | {' | '.join(cells)} | {point['best_other']} | " + " | ".join(
            f"{d['diff'] * 100:+.2f} [{d['low'] * 100:+.2f}, {d['high'] * 100:+.2f}]" for d in diffs) + " |")
    lines += ["", *[f"- {line}" for line in budget_verdicts(curve)], "",
              f"![test accuracy against labels per class]({BUDGET_FIGURE.name})", ""]
    return lines


def read_budget_runs(arms: list[str], floors: list[str], seeds: list[int], budget: int | None) -> tuple[dict, dict]:
    """Every arm's runs (one per seed) and every floor's (one per seed; the full set's floors have none) of one
    budget (None: the full set)."""
    runs = {arm: [read_run(paths.study_run_name(arm, seed, budget=budget), arm in paths.PRETRAINED_ARMS)
                  for seed in seeds] for arm in arms}
    if budget is None:
        return runs, {floor: [read_floor(paths.study_run_name(floor, None))] for floor in floors}
    return runs, {floor: [read_floor(paths.study_run_name(floor, seed, budget=budget)) for seed in seeds]
                  for floor in floors}


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
    from stages.common.figures import budget_curve, study_curves
    from stages.common.tracking import tracked_run

    study = params.study
    with tracked_run(STAGE, params) as tracker:
        arm_runs = {arm: [paths.study_run_name(arm, seed) for seed in study.seeds]
                    for arm in paths.study_arms(study.matched_baselines)}
        selection = None
        candidates = sweep_candidates(study, params.pretrain_sup)
        if candidates:  # choose on validation, before any test output is read; the winner's runs are spt
            scores = validation_scores(candidates, study.seeds)
            chosen = choose(scores)
            selection = selection_summary(candidates, study.seeds, scores, chosen)
            arm_runs["spt"] = [candidates[chosen].run(seed) for seed in study.seeds]
        runs = {arm: [read_run(run, arm in paths.PRETRAINED_ARMS) for run in names] for arm, names in arm_runs.items()}
        floors = {floor: read_floor(paths.study_run_name(floor, None)) for floor in params.floors.variants}
        summary = summarize(runs, study.seeds, study, params.seed, floors)
        budgets = {n: read_budget_runs(list(arm_runs), params.floors.variants, study.seeds, n)
                   for n in study.n_per_class}
        if not paths.DATA_REPORT.is_file():
            raise StudyError(f"{paths.DATA_REPORT} is missing (prepare writes it); run `dvc repro`")
        train_counts = json.loads(paths.DATA_REPORT.read_text())["class_balance"]["train"]
        summary["label_budget"] = label_budget(
            (runs, {floor: [result] for floor, result in floors.items()}), budgets,
            sum(train_counts.values()) / len(train_counts), study, params.seed)
        if selection is not None:
            summary["selection"] = selection
            summary["varied_by_seed"] = [*VARIED_BY_SEED, "study_sweep_pretrain", "study_sweep_finetune"]
        write_json(paths.metrics_file(STAGE), summary)
        with atomic_output(paths.REPORT) as staging:
            staging.write_text(report(summary), encoding="utf-8")
        with atomic_output(FIGURE) as staging:
            study_curves(runs, staging, selection)
        with atomic_output(BUDGET_FIGURE) as staging:
            budget_curve(summary["label_budget"], staging)
        write_curves(runs, study.seeds, paths.plots_dir(STAGE))
        flat = {f"{v}_{k}": value for v, row in {**summary["variants"], **summary["floors"]}.items()
                for k, value in row.items() if isinstance(value, float)}
        flat.update({f"{name}_{m}": d[m]["diff"] for name, d in summary["differences"].items() for m in d})
        for point in summary["label_budget"]["points"]:  # budget_8_spt_accuracy, budget_all_spt_minus_best_other_...
            key = f"budget_{point['n_per_class'] or 'all'}"
            flat.update({f"{key}_{name}_accuracy": row["accuracy"]["mean"] for name, row in point["scores"].items()})
            flat[f"{key}_spt_minus_best_other_accuracy"] = point["spt_minus_best_other"]["accuracy"]["diff"]
        tracker.log_artifact(BUDGET_FIGURE, "plots")
        timings, seconds = timings_report(arm_runs)
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS.write_text(timings, encoding="utf-8")
        tracker.log_metrics({**flat, **seconds})
        tracker.log_to_parent({**flat, **seconds})
        tracker.log_artifact(TIMINGS)
        tracker.log_artifact(paths.REPORT)
        tracker.log_artifact(FIGURE, "plots")
        for row in (selection or {}).get("candidates", []):  # one child run per candidate of the choice
            tracker.log_child_run(
                f"candidate {row['weighting']} lambda={row['lambda']}",
                params={"weighting": row["weighting"], "lambda": float(row["lambda"]), "spt_arm": row["spt_arm"],
                        "runs": ",".join(row["runs"])},
                metrics={"val_macro_f1_mean": row["val_macro_f1_mean"], "val_macro_f1_std": row["val_macro_f1_std"]},
                tags={"stage": STAGE, "chosen": str(row["chosen"]).lower(), "weighting": row["weighting"],
                      "lambda": str(float(row["lambda"]))})


if __name__ == "__main__":
    run_stage(__doc__, main, STAGE)

"""The labels-per-class curve (study.labels_per_class): every arm and floor trained per seed on that many training
labels per class (drawn by prepare into data/budgets/n<N>-<seed>), the other train texts staying masked-LM text;
compare scores each point against the best other recipe chosen on validation."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from spt import paths
from spt.errors import StudyError
from study.arms import PRETRAINED_ARMS
from study.read import read_floor, read_run
from study.stats import seed_mean
from study.summary import METRICS, VERDICT_LEVEL, adjust, not_converged, not_learning, shown

# per labels-per-class point and seed: the labeled train and validation splits prepare draws
LABELS_DIR = Path("data/budgets")
BUDGET_FIGURE = Path("reports/label_budget.png")
BUDGET_TITLE = "Scarce labels: test accuracy against labels per class"


def labels_dir(labels_per_class: int, seed: int) -> Path:
    """The labeled train and validation splits of one point and seed: ``data/budgets/n<labels_per_class>-<seed>``."""
    return LABELS_DIR / f"n{labels_per_class}-{seed}"


def positive_int(text: str) -> int:
    """``--labels-per-class``: a whole number of labels, at least 1."""
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


def draw_labels(params, labels_per_class: int, seed: int) -> None:
    """data/budgets/n<labels_per_class>-<seed>: that many labels per class of the prepared train split (and
    validation, with study.cap_validation), drawn with ``seed``, and the other train rows ("unlabeled");
    data/processed's row order is kept."""
    import datasets
    import pandas as pd

    from spt.data.splits import sample_per_class
    from spt.data.tokenization import save_dataset
    from spt.outputs import atomic_output, write_json

    splits = datasets.load_from_disk(str(paths.LABELED))
    names = ["train", "validation"] if params.study.cap_validation else ["train"]
    kept = {name: list(range(len(splits[name]))) for name in ("train", "validation")}
    for name in names:
        frame = pd.DataFrame({"label": splits[name]["label"], "row": kept[name]})
        kept[name] = sample_per_class(frame, labels_per_class, seed, "training" if name == "train" else name,
                                      "study.labels_per_class", "study.cap_validation")["row"].tolist()
    drawn = {name: splits[name].select(rows) for name, rows in kept.items()}
    rows = {name: {"rows": len(kept[name]), "of": len(splits[name])} for name in kept}
    # the train rows not drawn: their texts stay masked-LM text in pretrain_sup, their labels are not used
    labeled_rows = set(kept["train"])
    drawn["unlabeled"] = splits["train"].select([row for row in range(len(splits["train"])) if row not in labeled_rows])
    names = paths.label_names()
    report = {"labels_per_class": labels_per_class, "seed": seed, "cap_validation": params.study.cap_validation, **rows,
              "unlabeled_train_texts": len(drawn["unlabeled"]),
              "class_balance": {name: {names[label]: count for label, count in
                                       sorted(pd.Series(part["label"]).value_counts().items())}
                                for name, part in drawn.items() if name != "unlabeled"}}
    with atomic_output(labels_dir(labels_per_class, seed)) as staging:
        staging.mkdir(parents=True)
        save_dataset(datasets.DatasetDict(drawn), staging / paths.LABELED.name)
        write_json(staging / "budget.json", report)


def budget_point(runs: dict[str, list[dict]], floors: dict[str, dict], labels_per_class: int | None,
                 labels_per_class_realised: float, study, seed: int) -> dict:
    """One point of the label-budget curve: every arm's and floor's test scores with seed-level intervals
    (:func:`study.stats.score_interval`), the best other arm or floor chosen on validation (finetune's best
    validation macro-F1, mean over seeds; a floor's at its chosen C) and SPT minus each other
    (:func:`study.stats.paired_difference`), SPT minus the best other first. ``labels_per_class`` is the point
    (None: the full set); ``labels_per_class_realised`` the training labels per class it trained on, mean over
    classes (the budget itself, or the full set's mean: the point's place on the figure's x axis). Holm is applied
    over the whole curve (:func:`label_budget`)."""
    from study.stats import paired_difference, score_interval

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

    differences = {f"spt_minus_{other}": paired_difference(
        actual, predictions["spt"], predictions[other], len(names), study.bootstrap_samples, seed, VERDICT_LEVEL)
        for other in others}
    return {"labels_per_class": labels_per_class, "labels_per_class_realised": labels_per_class_realised,
            "scores": {name: {**score_interval(actual, predictions[name], len(names), study.bootstrap_samples, seed,
                                               VERDICT_LEVEL), "val_macro_f1_mean": validation[name],
                              "floor": name not in runs} for name in predictions},
            "seeds_not_learning": {arm: [s for s, r in zip(study.seeds, arm_runs, strict=True) if not_learning(r)]
                                   for arm, arm_runs in runs.items() if arm != "spt"},
            "seeds_not_converged": {arm: [s for s, r in zip(study.seeds, arm_runs, strict=True) if not_converged(r)]
                                    for arm, arm_runs in runs.items()},
            "best_other": best, "spt_minus_best_other": differences[f"spt_minus_{best}"], "differences": differences}


def label_budget(full: tuple[dict, dict], budgets: dict[int, tuple[dict, dict]], full_set_labels_per_class: float,
                 study, seed: int) -> dict:
    """The label-budget curve (metrics/compare.json ``label_budget``): one :func:`budget_point` per budget of
    study.labels_per_class, smallest first, then the full set (the study's own runs, ``full``). The curve's comparisons
    (every point's SPT minus each other, accuracy and macro-F1) are one family of their own: Holm-adjusted
    together, apart from the arm table's."""
    points = [budget_point(*budgets[n], n, float(n), study, seed) for n in sorted(budgets)]
    points.append(budget_point(*full, None, full_set_labels_per_class, study, seed))
    family = [diff[metric] for point in points for diff in point["differences"].values() for metric in METRICS]
    adjust(family)
    return {"family": {"comparisons": len(family), "correction": "Holm",
                       "members": "every point's SPT − each other arm and floor, accuracy and macro-F1"},
            "criterion": "best other: the arm or floor (spt aside) with the highest validation macro-F1, mean over "
                         "seeds (finetune's kept checkpoint; a floor's at its chosen C); test scores are read after",
            "cap_validation": study.cap_validation, "points": points}


def _budget_name(point: dict) -> str:
    return f"{point['labels_per_class']}" if point["labels_per_class"] is not None else \
        f"all (≈{point['labels_per_class_realised']:.0f})"


def budget_verdicts(curve: dict) -> list[str]:
    """Per budget: does SPT beat the best other arm or floor (chosen on validation), and every other one? Decided on
    p-values Holm-adjusted over the whole curve; with one seed nothing is claimed (training variance not counted)."""
    from study.text import p_is, points

    lines = []
    family = curve["family"]["comparisons"]
    for point in curve["points"]:
        diff, f1 = point["spt_minus_best_other"]["accuracy"], point["spt_minus_best_other"]["macro_f1"]
        where = f"With {_budget_name(point)} labels per class"
        best = point["best_other"]
        interval = f"{points(diff)} points in accuracy, {points(f1)} in macro-F1"
        stalled = [f"{arm} (seed {', '.join(map(str, seeds))})" for arm, seeds in point["seeds_not_learning"].items()
                   if seeds]
        unconverged = [f"{arm} (seed {', '.join(map(str, seeds))})"
                       for arm, seeds in point.get("seeds_not_converged", {}).items() if seeds]
        if unconverged:
            lines.append(f"{where}, **not a fair comparison yet**: {', '.join(unconverged)} not converged: raise "
                         "finetune.max_steps (best validation at its last step).")
        if stalled:
            lines.append(f"{where}, **not a fair comparison yet**: {', '.join(stalled)} never improved on step 0 "
                         "of finetuning; raise finetune.max_steps.")
        if not diff["training_variance_counted"]:
            lines.append(f"{where}, SPT − the best other recipe on validation, {best}: {interval} (95% intervals of "
                         "test-set noise alone: one seed, no claim).")
            continue
        adjusted = f"Holm-adjusted p {p_is(diff['p_holm'])} over the curve's {family} comparisons"
        if shown(diff):
            verdict = (f"SPT is **{'more' if diff['diff'] > 0 else 'less'} accurate** than the best other recipe on "
                       f"validation, {best}")
        else:
            verdict = f"no accuracy difference is shown between SPT and the best other recipe on validation, {best}"
        beaten = [name.removeprefix("spt_minus_") for name, d in point["differences"].items()
                  if shown(d["accuracy"]) and d["accuracy"]["diff"] > 0]
        lines.append(f"{where}, {verdict}: {interval}, {adjusted}; SPT is shown more accurate than "
                     f"{len(beaten)} of the {len(point['differences'])} others ({', '.join(beaten) or 'none'}).")
    return lines


def budget_report(curve: dict) -> list[str]:
    """The report's section on the label-budget curve: one row per budget, every arm and floor."""
    names = list(curve["points"][0]["scores"])
    capped = "capped to the budget per class too (study.cap_validation)" if curve["cap_validation"] else \
        "the full validation split (study.cap_validation: false)"
    lines = [f"## {BUDGET_TITLE}", "",
             "For each budget of study.labels_per_class, every arm and floor trained per seed on that many training "
             "labels per class, drawn per seed (data/budgets/n<N>-<seed>); the other training texts stayed masked-LM "
             f"text. Validation: {capped}. The last row is the full set: the study's runs above. Cells: test accuracy, "
             "mean over seeds [95% interval at the seed level, as for the differences above: t over seeds plus the "
             "test noise they share; a floor of the full set, with no seed, and any one-seed point: test noise "
             "alone]. The best other recipe is chosen on validation macro-F1, before its test score is read. The "
             f"curve's {curve['family']['comparisons']} comparisons (every point's SPT − each other, accuracy and "
             "macro-F1) are a family of their own: the sentences below use p-values Holm-adjusted over them. Read "
             "accuracy with macro-F1: "
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


def read_budget_runs(arms: list[str], floors: list[str], seeds: list[int], labels_per_class: int | None
                     ) -> tuple[dict, dict]:
    """Every arm's runs (one per seed) and every floor's (one per seed; the full set's floors have none) of one
    point of the curve (None: the full set)."""
    from study.run import Run

    runs = {arm: [read_run(Run(arm, seed, labels_per_class=labels_per_class).name, arm in PRETRAINED_ARMS)
                  for seed in seeds] for arm in arms}
    if labels_per_class is None:
        return runs, {floor: [read_floor(Run(floor).name)] for floor in floors}
    return runs, {floor: [read_floor(Run(floor, seed, labels_per_class=labels_per_class).name) for seed in seeds]
                  for floor in floors}

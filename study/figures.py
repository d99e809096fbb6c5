"""The study's figures (reports/compare.png, reports/label_budget.png): validation against compute per arm,
the sweep, the labels-per-class curve. Written without a software version in the PNG, so the same data gives
the same bytes."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from study.arms import ARMS, FLOOR_ARMS


def study_curves(runs: dict[str, list[dict]], path: Path, selection: dict | None = None) -> Path:
    """Validation macro-F1 against cumulative training FLOPs and steps (pretraining included), all arms.

    One line per arm and seed; an arm that pretrains starts where its pretraining ended. With
    ``selection`` (compare's choice among the sweep's settings) a third panel shows each candidate's
    validation macro-F1 against lambda (:func:`sweep_panel`). Written without a software version in
    the PNG, so the same data gives the same bytes.
    """
    figure = Figure(figsize=(18 if selection else 12, 4.5))
    axes = figure.subplots(1, 3 if selection else 2, sharey=True)
    for arm, arm_runs in runs.items():
        color = f"C{ARMS.index(arm)}"  # an arm keeps its colour whichever arms ran
        for index, run in enumerate(arm_runs):
            label = arm if index == 0 else None
            axes[0].plot(run["total_flops"], run["val_macro_f1"], color=color, alpha=0.8, marker=".", label=label)
            axes[1].plot(run["total_steps"], run["val_macro_f1"], color=color, alpha=0.8, marker=".", label=label)
            if run["pretraining_steps"]:
                # the FLOPs and steps panels only: a third (the sweep's) is left out on purpose
                for axis, x in zip(axes, (run["pretraining_flops"], run["pretraining_steps"]), strict=False):
                    axis.axvline(x, color=color, alpha=0.25, linestyle=":")
    axes[0].set_xlabel("training FLOPs since pretrain_unsup (pretraining + finetuning)")
    axes[1].set_xlabel("training steps since pretrain_unsup (pretraining + finetuning)")
    axes[0].set_ylabel("validation macro-F1")
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[1].legend(loc="lower right")
    if selection:
        sweep_panel(axes[2], selection)
    figure.suptitle("Validation during finetuning, placed after each arm's pretraining (dotted: end of pretraining)")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def budget_curve(curve: dict, path: Path) -> Path:
    """The label-budget curve: test accuracy against training labels per class (log scale), one line per arm
    (solid) and floor (dashed) with 95% seed-level intervals; beside it SPT minus the best other arm or floor
    (chosen on validation) per budget, in accuracy and in macro-F1 (a classifier stuck on the majority class
    scores well in the one and badly in the other). The full set is the last point (its x: the mean labels per
    class)."""

    points = curve["points"]
    x = [point["labels_per_class_realised"] for point in points]
    names = list(points[-1]["scores"])
    figure = Figure(figsize=(13, 4.8))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for offset, name in enumerate(names):
        rows = [(xi, point["scores"][name]["accuracy"]) for xi, point in zip(x, points, strict=True)
                if name in point["scores"]]
        shift = 1 + 0.03 * (offset - (len(names) - 1) / 2)  # side by side, so the intervals do not hide each other
        floor = name in FLOOR_ARMS
        color = f"C{len(ARMS) + FLOOR_ARMS.index(name)}" if floor else f"C{ARMS.index(name)}"
        left.errorbar([xi * shift for xi, _ in rows], [row["mean"] * 100 for _, row in rows],
                      yerr=[[(row["mean"] - row["low"]) * 100 for _, row in rows],
                            [(row["high"] - row["mean"]) * 100 for _, row in rows]],
                      color=color, marker="s" if floor else "o", linestyle="--" if floor else "-", capsize=3,
                      linewidth=2.2 if name == "spt" else 1.3, label=f"{name} (floor)" if floor else name)
    for metric, shift, style in (("accuracy", 0.97, "-"), ("macro_f1", 1.03, "--")):
        diffs = [point["spt_minus_best_other"][metric] for point in points]
        right.errorbar([xi * shift for xi in x], [d["diff"] * 100 for d in diffs],
                       yerr=[[(d["diff"] - d["low"]) * 100 for d in diffs],
                             [(d["high"] - d["diff"]) * 100 for d in diffs]],
                       color=f"C{ARMS.index('spt')}", marker="o" if metric == "accuracy" else "D",
                       linestyle=style, capsize=4, label=metric.replace("_", "-"))
    for xi, point in zip(x, points, strict=True):
        top = max(point["spt_minus_best_other"][metric]["high"] for metric in ("accuracy", "macro_f1"))
        right.annotate(f"vs {point['best_other']}", (xi, top * 100), textcoords="offset points",
                       xytext=(0, 6), ha="center", fontsize="small")
    right.legend(loc="lower right", fontsize="small")
    right.axhline(0, color="black", linewidth=0.8)
    right.margins(y=0.15)  # room for the labels above the intervals
    ticks = [f"{point['labels_per_class']}" if point["labels_per_class"] is not None else
             f"all\n(≈{point['labels_per_class_realised']:.0f})" for point in points]
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xticks(x, ticks)
        axis.minorticks_off()
        axis.set_xlabel("training labels per class")
        axis.grid(alpha=0.3)
        axis.margins(x=0.08)
    left.set_ylabel("test accuracy (%)")
    one_seed = all(row["accuracy"]["seeds"] < 2 for point in points for row in point["scores"].values())
    left.set_title("every arm and floor: one seed, 95% interval of test-set noise only (training variance not "
                   "counted)" if one_seed else "every arm and floor: mean over seeds, 95% interval (t over seeds + "
                   "shared test noise)", fontsize="medium")
    left.legend(loc="lower right", fontsize="small")
    right.set_ylabel("difference (points)")
    right.set_title("SPT − the best other recipe on validation: accuracy, macro-F1 (95%)", fontsize="medium")
    figure.suptitle("Scarce labels: test accuracy against training labels per class")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def sweep_panel(axis, selection: dict) -> None:
    """The sweep: each candidate's mean validation macro-F1 over seeds (bars: std) against lambda, one line
    per weighting; a square marks the spt arm's own setting, a ring the chosen one. Log x when lambda varies."""
    from spt.config import WEIGHTINGS

    candidates = selection["candidates"]
    for weighting in dict.fromkeys(row["weighting"] for row in candidates):
        points = sorted((row for row in candidates if row["weighting"] == weighting), key=lambda row: row["lambda"])
        color = f"C{len(ARMS) + WEIGHTINGS.index(weighting)}"  # not an arm's colour
        axis.errorbar([row["lambda"] for row in points], [row["val_macro_f1_mean"] for row in points],
                      yerr=[row["val_macro_f1_std"] or 0.0 for row in points], color=color, marker="o", capsize=3,
                      label=weighting)
    for key, style in (("spt_arm", {"marker": "s", "s": 110, "label": "the spt arm's own setting"}),
                       ("chosen", {"marker": "o", "s": 260, "label": "chosen"})):
        row = next(row for row in candidates if row[key])
        axis.scatter([row["lambda"]], [row["val_macro_f1_mean"]], facecolors="none", edgecolors="black", **style)
    lambdas = sorted({row["lambda"] for row in candidates})
    if len(lambdas) > 1:
        axis.set_xscale("log")
    axis.set_xticks(lambdas, [f"{value:g}" for value in lambdas])  # the values swept, as written
    axis.minorticks_off()
    axis.set_xlabel("λ (pretrain_sup.lambda)")
    axis.set_title("the sweep: best validation macro-F1 of finetuning, mean ± std over seeds", fontsize="medium")
    axis.legend(loc="lower right", fontsize="small")

"""reports/compare.md: the arm table, the differences and the sentences that follow from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spt import paths
from study.arms import CONTROL_ARMS, PRETRAINED_ARMS
from study.curve import budget_report
from study.summary import ALPHA, shown
from study.sweep import chosen_line, selection_report
from study.text import beats, cell, mean_std, p_is, p_value, points, power_line

FIGURE = Path("reports/compare.png")
TIMINGS = Path("reports/timings.md")  # seconds: not a DVC output (see timings_report)


NAMES = {"tapt": "TAPT (the same pretraining budget, masked-LM only: no labels)",
         "baseline": "the standard recipe with the same finetuning steps",
         "baseline_matched": "the standard recipe given as many extra examples as SPT pretrained on",
         "baseline_flops": "the standard recipe given as many extra FLOPs as SPT's pretraining spent"}


FLOOR_NAMES = {"tfidf": "the TF-IDF + logistic regression floor (no pretraining)",
               "embeddings": "the floor of logistic regression on the source model's frozen embeddings"}


def fairness(summary: dict) -> list[str]:
    """The sentences that open the verdicts while the comparison is not fair yet: runs still improving at their
    last validation (not converged), and arms that never learned within their steps."""
    lines = []
    if summary["not_converged"]:
        runs = [f"{row['arm']} (seed {row['seed']}, best validation at step {row['best_step']} of "
                f"{row['last_step']})" for row in summary["not_converged"]]
        lines.append(f"**Not a fair comparison yet**: {', '.join(runs)} not converged: raise finetune.max_steps (best "
                     "validation at its last step). Such a run was still improving when its budget ran out, so a "
                     "difference with it measures the budget, not the recipe.")
    stalled = [f"{arm} (seed {', '.join(map(str, row['seeds_not_learning']))})"
               for arm, row in summary["arms"].items() if row["seeds_not_learning"]]
    if stalled:
        lines.append(f"**Not a fair comparison yet:** finetuning never improved on its untrained start in "
                     f"{', '.join(stalled)}: no validation after step 0 beat step 0, so within these finetuning steps "
                     "that arm did not learn (e.g. it predicts the majority class), and a difference with it measures "
                     "the budget, not the recipe; raise finetune.max_steps.")
    return lines


def controls_missing(summary: dict) -> list[str]:
    """The paragraph naming the controls that did not run, and what a difference with the baseline cannot rule out
    without them."""
    missing = [arm for arm in CONTROL_ARMS if arm not in summary["arms"]]
    if not missing:
        return []
    why = []
    if "tapt" in missing:
        why.append("without tapt (study.pretrained_controls) a difference from the baseline may come from SPT's extra "
                   "masked-LM pretraining rather than from its labels")
    if "baseline_flops" in missing and "baseline_matched" in missing:
        why.append("without a matched baseline (study.matched_baselines) it may come from SPT's extra compute")
    because = "; ".join(why)
    because = f"{because[:1].upper()}{because[1:]}. " if because else ""
    return [f"Controls not run: {', '.join(missing)}. {because}The full study adds them (docs/study.md).", ""]


def _compared(summary: dict) -> dict[str, str]:
    return {**{arm: NAMES[arm] for arm in summary["arms"] if arm != "spt"},
            **{floor: FLOOR_NAMES[floor] for floor in summary["floors"]
               if f"spt_minus_{floor}" in summary["differences"]}}


def difference_verdict(name: str, other: str, diff: dict, macro_f1: dict, family: int) -> str:
    """One comparison's sentence, decided on the Holm-adjusted p (``family``: how many comparisons share it)."""
    interval = f"{points(diff)} points (95% interval)"
    if not diff["training_variance_counted"]:
        return (f"SPT − {name}: {interval} counting test-set noise only: one seed, no claim; "
                f"{power_line(diff, 'SPT', other)}.")
    adjusted = f"Holm-adjusted p {p_is(diff['p_holm'])} over the {family} comparisons of the table"
    chance = f"P(SPT > {other} on a seed) = {beats(diff)}"
    if shown(diff):
        word = "more" if diff["diff"] > 0 else "less"
        return f"SPT is **{word} accurate** than {name}: {interval}, {adjusted}; {chance}."
    excludes = diff["low"] > 0 or diff["high"] < 0
    why = (f"its interval excludes 0 but not after the correction for many comparisons ({adjusted})" if excludes
           else f"the interval includes 0 ({adjusted})")
    line = (f"No accuracy difference is shown between SPT and {name}: {interval}; {why}; {chance}; "
            f"{power_line(diff, 'SPT', other)}.")
    if shown(macro_f1):
        word = "higher" if macro_f1["diff"] > 0 else "lower"
        line += (f" In macro-F1 SPT is shown **{word}**: {points(macro_f1)} points, Holm-adjusted p "
                 f"{p_is(macro_f1['p_holm'])}.")
    return line


TIME_WORDS = {"finetune": "finetuning steps alone", "total": "total training steps (pretraining included)"}


def time_verdicts(summary: dict) -> list[str]:
    """Time to target, SPT against the standard recipe, paired by seed: censored seeds counted, no claim from one
    seed or from a zero-width interval."""
    every = summary["time_to_target"]["validation_every"]
    lines = []
    for kind, row in summary["time_to_target"]["comparisons"].items():
        words = TIME_WORDS[kind]
        seeds = len(row["spt_per_seed"])
        why = None if row["verdict"] else row["why"]
        if why == "censored":
            lines.append(f"Counting {words}, no comparison of time to target: SPT reached it on "
                         f"{seeds - row['censored']['spt']} of {seeds} seeds and the standard recipe on "
                         f"{seeds - row['censored']['baseline']} of {seeds}; a seed that never reached it is censored "
                         "(counted, not dropped), and a mean over the others would flatter its arm.")
        elif why == "one seed":
            lines.append(f"Counting {words}, SPT reached the target at {row['spt_per_seed'][0]:.0f} and the standard "
                         f"recipe at {row['baseline_per_seed'][0]:.0f}: one seed, no claim.")
        elif why == "zero width":
            lines.append(f"Counting {words}, every seed gives SPT − the standard recipe = {row['diff']:+.0f}: a "
                         f"zero-width interval, which at validation every {every} steps measures nothing; no claim.")
        elif row["p_holm"] < ALPHA:
            word = "sooner" if row["diff"] < 0 else "later"
            lines.append(f"Counting {words}, SPT reached the target **{word}** than the standard recipe: "
                         f"{row['diff']:+.0f} steps per seed [{row['low']:+.0f}, {row['high']:+.0f}], Holm-adjusted "
                         f"p {p_is(row['p_holm'])} over the two counts.")
        else:
            lines.append(f"Counting {words}, no difference in time to target is shown: {row['diff']:+.0f} steps per "
                         f"seed [{row['low']:+.0f}, {row['high']:+.0f}], Holm-adjusted p {p_is(row['p_holm'])}.")
    if every is not None:
        lines.append(f"Validation ran every {every} finetuning steps (finetune.save_steps), so a time to target is "
                     f"known to within {every} steps.")
    if "fraction_of_baseline_best_val_macro_f1" in summary["target"]:
        lines.append("The standard recipe reaches the target by construction: it is a share of its own best "
                     "validation score.")
    return lines


def verdicts(summary: dict) -> list[str]:
    """Plain sentences: which claims hold on this data and which do not, each decided on the corrected numbers."""
    lines = fairness(summary)
    if len(summary["seeds"]) < 2:
        lines.append(f"{ONE_SEED} No difference below is claimed: each interval is SPT − the other recipe with "
                     "test-set noise alone.")
    family = summary["family"]["comparisons"]
    for other, name in _compared(summary).items():
        diff = summary["differences"][f"spt_minus_{other}"]
        lines.append(difference_verdict(name, other, diff["accuracy"], diff["macro_f1"], family))
    return lines + time_verdicts(summary)


ONE_SEED = "**One seed: training variance is not counted.**"


def recommendation_report(summary: dict) -> list[str]:
    """The report's last section: the cheapest arm (training FLOPs) not shown worse than the best recipe on
    validation, with the power line beside it."""
    advice = summary["recommendation"]
    lines = ["## Recommendation", ""]
    best = advice.get("best_on_validation")
    if best is None:
        return [*lines, "None: no recipe has a validation score to choose the best by.", ""]
    provisional = ("Provisional: the comparison is not fair yet (see above), so this may change once every run has "
                   "converged. " if summary["not_converged"] or any(row["seeds_not_learning"]
                                                                      for row in summary["arms"].values()) else "")
    rule = ("The rule: among the arms, the one with the fewest training FLOPs that is not shown worse (Holm-adjusted, "
            "in accuracy or macro-F1, over this family: the best against each other recipe) than the best recipe on "
            f"validation macro-F1. The best on validation is **{best}** ({advice['val_macro_f1'][best] * 100:.2f}).")
    arms = advice["arms_by_training_flops"]
    cheapest = arms[0]
    if advice["seeds"] < 2:
        row = advice["comparisons"].get(f"{best}_minus_{cheapest}", {}).get("accuracy")
        power = power_line(row, cheapest, best) if row else ""
        tail = f" {power[:1].upper()}{power[1:]}." if power else ""
        return [*lines, f"**None from one seed**: training variance is not counted. {rule} With one seed no recipe "
                        "can be shown worse than another, so the rule would pick the cheapest arm, "
                        f"{cheapest}, by default, which says nothing about its accuracy.{tail}", ""]
    pick = advice["recommended"]
    if pick is None:
        return [*lines, f"{provisional}{rule} No arm: every arm is shown worse than the {best} floor.", ""]
    flops = summary["arms"][pick]["training_flops"]
    cheaper_worse = [arm for arm in arms[:arms.index(pick)] if advice["shown_worse"].get(arm)]
    text = f"{provisional}**{pick}** ({flops:.3g} training FLOPs). {rule} "
    if pick == best:
        text += "It is the recommendation itself" + (
            f": every cheaper arm ({', '.join(cheaper_worse)}) is shown worse than it." if cheaper_worse else
            ": no arm is cheaper.")
    else:
        row = advice["comparisons"][f"{best}_minus_{pick}"]["accuracy"]
        text += (f"{best} − {pick}: {points(row)} points in accuracy, Holm-adjusted p {p_is(row['p_holm'])}: "
                 f"not shown worse; {power_line(row, pick, best)}.")
        if cheaper_worse:
            text += f" Cheaper arms shown worse: {', '.join(cheaper_worse)}."
    floors = advice["floors_not_shown_worse"]
    if floors:
        text += (f" Not shown worse either: the {' and '.join(floors)} floor{'s' if len(floors) > 1 else ''} (no "
                 "network trained; a floor's cost is not counted in FLOPs).")
    return [*lines, text, ""]


def report(summary: dict) -> str:
    """reports/compare.md."""
    seeds = summary["seeds"]
    one_seed = len(seeds) < 2
    target = summary["target"]
    target_text = (f"validation macro-F1 {target['absolute_val_macro_f1']:.3f}" if "absolute_val_macro_f1" in target
                   else f"{target['fraction_of_baseline_best_val_macro_f1']:.0%} of the baseline's best validation "
                   "macro-F1 (per seed)")
    title = "# Supervised pretraining against the other recipes"
    lines = [f"{title}: one seed, training variance is not counted" if one_seed else title, ""]
    if one_seed:
        lines += [f"{ONE_SEED} Every interval in this report counts test-set noise alone (which examples the test "
                  "split happens to hold), not how a recipe varies from one training seed to another, so no difference "
                  "is claimed and nothing is recommended: this run checks the pipeline, it does not compare recipes. "
                  "Run at least 3 seeds (study.seeds).", ""]
    lines += controls_missing(summary)
    every = summary.get("validation_every")
    lines += [f"Test set: {summary['test_examples']} examples; seeds: {', '.join(map(str, seeds))} (a seed varies "
              f"{', '.join(summary['varied_by_seed'])}; {' and '.join(summary['shared_by_all_seeds'])} are shared). "
              f"Target: {target_text}. Compute is counted from the shared pretrain_unsup checkpoint; FLOPs are "
              "counted on the real batches (forward and backward), validation excluded.", "",
              *([chosen_line(summary["selection"]), ""] if "selection" in summary else []),
              "| arm | test accuracy | test macro-F1 | validation macro-F1 | pretraining steps | finetuning steps | "
              "training FLOPs | best / last validation step | finetuning steps to target | total steps to target | "
              "FLOPs to target | reached target |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, row in summary["arms"].items():
        validation = "–" if row["val_macro_f1_mean"] is None else f"{row['val_macro_f1_mean'] * 100:.2f}"
        converged = ", ".join(f"{best} / {last}" for best, last in row["best_and_last_validation_step"])
        if row["seeds_not_converged"]:
            converged += f" (not converged: seed {', '.join(map(str, row['seeds_not_converged']))})"
        lines.append(f"| {arm} | {mean_std(row['accuracy_mean'], row['accuracy_std'])} | "
                     f"{mean_std(row['macro_f1_mean'], row['macro_f1_std'])} | {validation} | "
                     f"{row['pretraining_steps']} | {row['finetune_steps']:.0f} | {row['training_flops']:.3g} | "
                     f"{converged} | {cell(row['steps_to_target_finetune'])} | {cell(row['steps_to_target_total'])} | "
                     f"{cell(row['flops_to_target_total'], fmt='.3g')} | {row['target_reached']} |")
    for floor, row in summary["floors"].items():
        if "skipped" not in row:
            value = summary["recommendation"].get("val_macro_f1", {}).get(floor)
            validation = "–" if value is None else f"{value * 100:.2f}"
            lines.append(f"| {floor} (floor, C = {row['c']:g}) | {row['accuracy'] * 100:.2f} | "
                         f"{row['macro_f1'] * 100:.2f} | {validation} | – | – | – | – | – | – | – | – |")
    lines += ["", ("Test scores are the mean over seeds (± their standard deviation). " if not one_seed else "")
              + "Validation macro-F1 is finetune's kept checkpoint (a floor's at its chosen C), mean over seeds. Best "
              "/ last validation step, per seed: a run whose best validation is its last one is not converged. "
              "Steps and FLOPs to target: the mean over the seeds that reached it"
              + (" [95% t interval over those seeds]" if not one_seed else "")
              + "; reached counts them, and the others are censored (they never reached the target within their "
              "steps) and are not in the mean"
              + (f"; validation every {every} finetuning steps, so a step count is known to within {every}." if every
                 else ".")]
    if summary["floors"]:
        lines.append("Floors train no network and need no seed: logistic regression on TF-IDF features (tfidf) or on "
                     "the source model's frozen mean-pooled embeddings (embeddings), C chosen on validation.")
    lines += [f"The {floor} floor was skipped: {row['skipped']}." for floor, row in summary["floors"].items()
              if "skipped" in row]
    family = summary["family"]["comparisons"]
    if one_seed:
        how = ("With one seed each interval is d plus or minus 1.96 test-set standard errors: test noise alone "
               "(analytic for accuracy, a paired bootstrap over test examples for macro-F1), no training variance; "
               "so no p-value is given and nothing is claimed.")
    else:
        how = (f"Per seed, d = SPT − the other on the same test examples (a floor: its one prediction set against "
               f"every SPT seed). Interval: the mean of d over the {len(seeds)} seeds plus or minus "
               f"t({len(seeds) - 1}) × se, "
               "where se² = (the variance of d between seeds) / seeds + the test-set noise that every seed shares "
               "(analytic for accuracy, a paired bootstrap over test examples for macro-F1): training variance and "
               "test sampling both count. Its coverage under a null is tested at 3, 5 and 10 seeds. "
               f"The {family} comparisons of this table ({summary['family']['members']}) are one family: their "
               "p-values are Holm-adjusted, and a difference is shown when its adjusted p < 0.05. "
               "P(SPT > other): the share of seeds on which SPT is the more accurate (paired by seed, ties count "
               "half; Bouthillier et al. 2021), with Clopper–Pearson's exact 95% interval. "
               "Seeds for 1 point: how many seeds a two-sided t test (α = 0.05) needs to detect a 1-point accuracy "
               "difference with 80% power, from the measured per-seed SD of d and the shared test noise.")
    lines += ["", "Differences at the seed level, 95% intervals, points. " + how, "",
              "| difference | accuracy | Holm-adjusted p | macro-F1 | Holm-adjusted p | P(SPT > other), accuracy | "
              "seeds for 1 point (80% power) |", "|---|---|---|---|---|---|---|"]
    for name, diff in summary["differences"].items():
        accuracy, macro_f1 = diff["accuracy"], diff["macro_f1"]
        adjusted = ["–" if one_seed else p_value(row["p_holm"]) for row in (accuracy, macro_f1)]
        needed = accuracy["seeds_for_1_point"]
        needed = ("unknown (one seed)" if one_seed else "none: the shared test noise is too large" if needed is None
                  else str(needed))
        lines.append(f"| {name.replace('_minus_', ' − ')} | {points(accuracy)} | {adjusted[0]} | {points(macro_f1)} | "
                     f"{adjusted[1]} | {beats(accuracy)} | {needed} |")
    lines += ["", "## What holds on this data", ""] + [f"- {line}" for line in verdicts(summary)]
    lines += ["", f"![validation macro-F1 against training compute]({FIGURE.name})", "",
              "Steps and FLOPs, not seconds, measure time here: they are reproducible. Wall-clock seconds per "
              f"arm are in `{TIMINGS.name}` beside this report (not a DVC output: they vary) and in MLflow.", ""]
    if "selection" in summary:
        lines += selection_report(summary)
    if "label_budget" in summary:
        lines += budget_report(summary["label_budget"])
    lines += recommendation_report(summary)
    return "\n".join(lines)


def timings_report(arm_runs: dict[str, list[str]]) -> tuple[str, dict[str, float]]:
    """reports/timings.md: wall-clock training seconds per arm (mean over its runs, one per seed), from timings/.

    Not a DVC output and not hashed by the reproducibility gate: seconds differ from run to run and
    machine to machine. Runs whose timings are missing (e.g. trained in another workspace) are left out.
    """
    lines = ["# Wall-clock training time (seconds; varies from run to run, not hashed by DVC)", "",
             "| arm | pretraining s | finetuning s | total s | seeds timed |", "|---|---|---|---|---|"]
    means: dict[str, float] = {}
    for arm, runs in arm_runs.items():
        totals, parts = [], {"pretrain_sup": [], "finetune": []}
        for run in runs:
            stages = ["pretrain_sup", "finetune"] if arm in PRETRAINED_ARMS else ["finetune"]
            files = [paths.timing_file(stage, run) for stage in stages]
            if all(file.is_file() for file in files):
                seconds = [json.loads(file.read_text())["train_runtime"] for file in files]
                for stage, value in zip(stages, seconds, strict=True):
                    parts[stage].append(value)
                totals.append(sum(seconds))
        if totals:
            means[f"{arm}_train_seconds"] = float(np.mean(totals))
            cells = [f"{np.mean(parts[stage]):.0f}" if parts[stage] else "–" for stage in ("pretrain_sup", "finetune")]
            lines.append(f"| {arm} | {cells[0]} | {cells[1]} | {np.mean(totals):.0f} | {len(totals)} |")
    return "\n".join(lines) + "\n", means

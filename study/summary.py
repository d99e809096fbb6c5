"""The study's table as data: per-arm scores per seed, convergence, time to target, the differences with intervals
that hold their coverage (Holm-adjusted as one family), and the recommendation."""

from __future__ import annotations

from collections import Counter

import numpy as np

from spt.errors import StudyError
from study.stats import holm, seed_mean, spread

VERDICT_LEVEL = 0.95
ALPHA = 1 - VERDICT_LEVEL
METRICS = ("accuracy", "macro_f1")
VARIED_BY_SEED = ["study_pretrain", "study_tapt", "study_finetune", "study_tapt_finetune", "study_baseline",
                  "study_matched"]
SHARED = ["prepare", "pretrain_unsup"]
FAMILY = "SPT − each other arm and floor, in accuracy and in macro-F1"


def not_learning(run: dict) -> bool:
    """Finetuning never beat its first validation (step 0): for an arm whose classifier head starts
    untrained (tapt and the baselines) the run did not learn within its steps, e.g. stuck predicting
    the majority class, and a comparison with it measures the budget rather than the recipe."""
    scores = run["val_macro_f1"]
    return len(scores) > 1 and max(scores[1:]) <= scores[0]


def best_step(run: dict) -> int:
    """The step of the checkpoint finetuning kept (finetune.json's best_step); without it, the first validation
    with the best macro-F1 (what the Trainer keeps)."""
    if run.get("best_step") is not None:
        return int(run["best_step"])
    scores = run["val_macro_f1"]
    return run["steps"][scores.index(max(scores))]


def not_converged(run: dict) -> bool:
    """The run's best validation is its last one: it was still improving when finetune.max_steps stopped it, so
    its score measures the budget, not where the recipe ends up."""
    return len(run["steps"]) > 1 and best_step(run) >= run["steps"][-1]


def validation_every(runs: dict[str, list[dict]]) -> int | None:
    """The validation granularity in finetuning steps (finetune.save_steps): the commonest spacing of the validation
    curves' steps (the last one is shorter where max_steps is no multiple of it). None: one validation each."""
    gaps = Counter(int(gap) for arm_runs in runs.values() for run in arm_runs for gap in np.diff(run["steps"]))
    return max(gaps, key=lambda gap: (gaps[gap], gap)) if gaps else None


def adjust(rows: list[dict]) -> None:
    """Holm over ``rows`` (one family of comparisons, each with its p): sets each row's ``p_holm``."""
    for row, adjusted in zip(rows, holm([row["p"] for row in rows]), strict=True):
        row["p_holm"] = adjusted


def shown(row: dict) -> bool:
    """A difference is shown when seeds count training variance and its Holm-adjusted p is under ALPHA."""
    return row["training_variance_counted"] and row["p_holm"] < ALPHA


def _time_to_target(spt: list[int | None], baseline: list[int | None]) -> dict:
    """SPT minus the standard recipe in time to target, paired by seed. No verdict when a seed never reached the
    target (censored: a mean over the others would flatter that arm), with one seed, or when every seed gives the
    same difference (a zero-width interval: the seeds agree to the validation step, nothing is measured)."""
    from study.stats import seed_level_interval

    censored = {"spt": sum(value is None for value in spt), "baseline": sum(value is None for value in baseline)}
    row = {"spt_per_seed": spt, "baseline_per_seed": baseline, "censored": censored}
    if row["censored"]["spt"] or row["censored"]["baseline"]:
        return {**row, "verdict": False, "why": "censored"}
    differences = np.array(spt, dtype=float) - np.array(baseline, dtype=float)
    if differences.size < 2:
        return {**row, "diff": float(differences.mean()), "verdict": False, "why": "one seed"}
    interval = seed_level_interval(differences, 0.0, 0.0, VERDICT_LEVEL)
    row.update(diff=float(interval["mean"]), low=float(interval["low"]), high=float(interval["high"]),
               p=float(interval["p"]), training_variance_counted=True)
    if row["low"] == row["high"]:
        return {**row, "verdict": False, "why": "zero width"}
    return {**row, "verdict": True}


def summarize(runs: dict[str, list[dict]], seeds: list[int], study, seed: int, floors: dict[str, dict] | None = None
              ) -> dict:
    """Everything the report says, as data. ``floors``: :func:`read_floor` per floor (none: no floors)."""
    from study.stats import first_reaching, paired_difference, seed_interval

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
                     "validation_every": validation_every(runs),
                     "not_converged": [{"arm": arm, "seed": s, "run": r.get("run"), "best_step": best_step(r),
                                        "last_step": r["steps"][-1]}
                                       for arm, arm_runs in runs.items()
                                       for s, r in zip(seeds, arm_runs, strict=True) if not_converged(r)],
                     "arms": {}, "floors": {}, "differences": {}}
    to_target: dict[str, dict[str, list]] = {}
    for arm, arm_runs in runs.items():
        accuracy = [r["scores"]["accuracy"] for r in arm_runs]
        macro_f1 = [r["scores"]["macro_f1"] for r in arm_runs]
        reached = [first_reaching(r["val_macro_f1"], t) for r, t in zip(arm_runs, targets, strict=True)]
        to_target[arm] = {kind: [None if i is None else r[key][i] for r, i in zip(arm_runs, reached, strict=True)]
                          for kind, key in (("finetune", "steps"), ("total", "total_steps"),
                                            ("flops", "total_flops"))}

        def interval(values: list) -> dict | None:  # over the seeds that reached the target
            return seed_interval([value for value in values if value is not None], VERDICT_LEVEL)

        summary["arms"][arm] = {
            "accuracy_mean": float(np.mean(accuracy)), "accuracy_std": spread(accuracy),
            "macro_f1_mean": float(np.mean(macro_f1)), "macro_f1_std": spread(macro_f1),
            "accuracy_per_seed": [float(value) for value in accuracy],
            "macro_f1_per_seed": [float(value) for value in macro_f1],
            "val_macro_f1_mean": seed_mean([r["val_best"] for r in arm_runs]) if "val_best" in arm_runs[0] else None,
            "pretraining_steps": int(np.mean([r["pretraining_steps"] for r in arm_runs])),
            "finetune_steps": float(np.mean([r["finetune_steps"] for r in arm_runs])),
            "training_flops": float(np.mean([r["pretraining_flops"] + r["finetune_flops"] for r in arm_runs])),
            "target_reached": f"{sum(i is not None for i in reached)}/{len(arm_runs)}",
            "target_censored": sum(i is None for i in reached),
            "seeds_not_learning": [s for s, r in zip(seeds, arm_runs, strict=True)
                                   if arm != "spt" and not_learning(r)],
            "seeds_not_converged": [s for s, r in zip(seeds, arm_runs, strict=True) if not_converged(r)],
            "best_and_last_validation_step": [[best_step(r), r["steps"][-1]] for r in arm_runs],
            "steps_to_target_finetune": interval(to_target[arm]["finetune"]),
            "steps_to_target_total": interval(to_target[arm]["total"]),
            "flops_to_target_total": interval(to_target[arm]["flops"]),
            "steps_to_target_finetune_per_seed": to_target[arm]["finetune"],
            "steps_to_target_total_per_seed": to_target[arm]["total"],
        }

    def difference(a: np.ndarray, b: np.ndarray) -> dict:
        return paired_difference(actual, a, b, len(labels), study.bootstrap_samples, seed, VERDICT_LEVEL)

    for other in [arm for arm in runs if arm != "spt"]:
        summary["differences"][f"spt_minus_{other}"] = difference(predictions["spt"], predictions[other])
    floor_predictions, floor_validation = {}, {}
    for floor, result in (floors or {}).items():
        if "skipped" in result:
            summary["floors"][floor] = {"skipped": result["skipped"]}
            continue
        if result["actual"] != runs["baseline"][0]["actual"]:
            raise StudyError(f"floor {floor} was scored on other test examples than the study's arms; run `dvc repro`")
        scores = result["scores"]
        summary["floors"][floor] = {"accuracy": float(scores["accuracy"]), "macro_f1": float(scores["macro_f1"]),
                                    "c": scores["c"]}
        floor_validation[floor] = _floor_validation(scores)
        floor_predictions[floor] = np.array([[index[p] for p in result["predicted"]]])  # [1, examples]: no seed
        summary["differences"][f"spt_minus_{floor}"] = difference(predictions["spt"], floor_predictions[floor])
    adjust([diff[metric] for diff in summary["differences"].values() for metric in METRICS])
    summary["family"] = {"members": FAMILY, "comparisons": len(summary["differences"]) * len(METRICS),
                         "correction": "Holm", "level": ALPHA}
    comparisons = {kind: _time_to_target(to_target["spt"][kind], to_target["baseline"][kind])
                   for kind in ("finetune", "total")}
    adjust([row for row in comparisons.values() if "p" in row])
    summary["time_to_target"] = {"validation_every": summary["validation_every"], "comparisons": comparisons}
    summary["recommendation"] = recommendation(summary, {**predictions, **floor_predictions}, floor_validation,
                                               difference)
    return summary


def _floor_validation(scores: dict) -> float | None:
    """A floor's validation macro-F1 at its chosen C (evaluate.json's validation_macro_f1, keyed by C as ``%g``)."""
    by_c = scores.get("validation_macro_f1") or {}
    value = by_c.get(f"{scores['c']:g}")
    return None if value is None else float(value)


def recommendation(summary: dict, predictions: dict[str, np.ndarray], floor_validation: dict[str, float | None],
                   difference) -> dict:
    """The cheapest arm (training FLOPs) not shown worse than the best recipe on validation.

    The best is the arm or floor with the highest validation macro-F1 (mean over seeds; a floor's at its chosen
    C), chosen before any test score is read. Then each other recipe is compared with it on test (best minus it,
    accuracy and macro-F1: a family of its own, Holm-adjusted); one is shown worse when either metric's adjusted
    p is under ALPHA. Arms are ranked by training FLOPs; floors are listed apart (their cost is not counted in
    FLOPs). With one seed nothing can be shown (training variance is not counted), and no arm is recommended.
    """
    validation = {arm: row["val_macro_f1_mean"] for arm, row in summary["arms"].items()}
    validation.update(floor_validation)
    known = {name: value for name, value in validation.items() if value is not None}
    if not known:
        return {"best_on_validation": None}
    best = max(known, key=lambda name: known[name])  # ties: the first listed
    comparisons = {other: difference(predictions[best], predictions[other]) for other in validation if other != best}
    adjust([row[metric] for row in comparisons.values() for metric in METRICS])
    seeds = len(summary["seeds"])
    worse = {other: any(shown(row[m]) and row[m]["diff"] > 0 for m in METRICS) for other, row in comparisons.items()}
    arms = sorted(summary["arms"], key=lambda arm: summary["arms"][arm]["training_flops"])
    eligible = [arm for arm in arms if arm == best or not worse[arm]]
    pick = eligible[0] if eligible and seeds > 1 else None
    return {"criterion": "the arm with the fewest training FLOPs that is not shown worse (Holm-adjusted, accuracy or "
                         "macro-F1) than the best recipe on validation macro-F1",
            "best_on_validation": best, "val_macro_f1": known, "recommended": pick, "seeds": seeds,
            "arms_by_training_flops": arms, "shown_worse": worse,
            "floors_not_shown_worse": [floor for floor in summary["floors"]
                                       if floor in worse and not worse[floor]] if seeds > 1 else [],
            "comparisons": {f"{best}_minus_{other}": row for other, row in comparisons.items()}}

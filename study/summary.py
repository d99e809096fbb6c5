"""The study's table as data: per-arm scores over seeds, time to target, and differences with intervals."""

from __future__ import annotations

import numpy as np

from spt.errors import StudyError
from study.stats import spread

VERDICT_LEVEL = 0.95
VARIED_BY_SEED = ["study_pretrain", "study_tapt", "study_finetune", "study_baseline", "study_matched"]
SHARED = ["prepare", "pretrain_unsup"]


def not_learning(run: dict) -> bool:
    """Finetuning never beat its first validation (step 0): for an arm whose classifier head starts
    untrained (tapt and the baselines) the run did not learn within its steps, e.g. stuck predicting
    the majority class, and a comparison with it measures the budget rather than the recipe."""
    scores = run["val_macro_f1"]
    return len(scores) > 1 and max(scores[1:]) <= scores[0]


def summarize(runs: dict[str, list[dict]], seeds: list[int], study, seed: int, floors: dict[str, dict] | None = None
              ) -> dict:
    """Everything the report says, as data. ``floors``: :func:`read_floor` per floor (none: no floors)."""
    from study.stats import first_reaching, hierarchical_bootstrap, seed_interval

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
        reached = [first_reaching(r["val_macro_f1"], t) for r, t in zip(arm_runs, targets, strict=True)]
        hits = [(r, i) for r, i in zip(arm_runs, reached, strict=True) if i is not None]

        def interval(values: list[float]) -> dict | None:
            return seed_interval(values, study.bootstrap_samples, seed, VERDICT_LEVEL)

        summary["variants"][variant] = {
            "accuracy_mean": float(np.mean(accuracy)), "accuracy_std": spread(accuracy),
            "macro_f1_mean": float(np.mean(macro_f1)), "macro_f1_std": spread(macro_f1),
            "pretraining_steps": int(np.mean([r["pretraining_steps"] for r in arm_runs])),
            "finetune_steps": float(np.mean([r["finetune_steps"] for r in arm_runs])),
            "training_flops": float(np.mean([r["pretraining_flops"] + r["finetune_flops"] for r in arm_runs])),
            "target_reached": f"{len(hits)}/{len(arm_runs)}",
            "seeds_not_learning": [s for s, r in zip(seeds, arm_runs, strict=True)
                                   if variant != "spt" and not_learning(r)],
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

"""The sweep of pretrain_sup's weighting and lambda (study.weightings x study.lambdas), chosen on validation.

Every setting trains as the spt arm does, per seed; compare keeps the setting with the best mean validation
macro-F1 as spt, before any test output is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from spt import paths
from spt.errors import StudyError
from study.arms import MATCHED_ARMS
from study.stats import expected_max, seed_mean, spread
from study.text import mean_std


@dataclass(frozen=True)
class Setting:
    """One setting of the sweep: the weighting and lambda that replace pretrain_sup's own in the spt arm.

    ``lambda_`` keeps the type params.yaml gave it (``1`` or ``1.0``): run names are written with
    ``str``, as dvc.yaml interpolates ``${item.lambda}``, so the code and dvc.yaml name the same paths.
    Settings compare by value (``1 == 1.0``).
    """

    weighting: str
    lambda_: int | float

    @property
    def tag(self) -> str:
        """``<weighting>-l<lambda>``, e.g. ``normalized-l2``: path-safe (weightings are words, lambda a number)."""
        return f"{self.weighting}-l{self.lambda_}"


@dataclass(frozen=True)
class Candidate:
    """A setting the spt arm can train with: its own (``own``: pretrain_sup's weighting and lambda, runs
    ``spt-<seed>``) or one of the sweep's (runs ``spt-<weighting>-l<lambda>-<seed>``)."""

    setting: Setting
    own: bool

    def run(self, seed: int | str) -> str:
        from study.run import Run

        return Run("spt", seed, None if self.own else self.setting).name


def sweep_candidates(study, pretrain_sup) -> list[Candidate]:
    """The spt arm's own setting, then every pair of study.weightings x study.lambdas, in that order, that is
    not the same setting (that one is the spt arm's run); [] without a sweep (both lists empty)."""
    if not (study.weightings and study.lambdas):
        return []
    own = Setting(pretrain_sup.weighting, pretrain_sup.lambda_)
    grid = [Setting(weighting, lambda_) for weighting in study.weightings for lambda_ in study.lambdas]
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
            for index, (c, row, exit_steps) in enumerate(zip(candidates, scores, exits, strict=True))]
    means = [row["val_macro_f1_mean"] for row in rows]
    return {"criterion": "highest mean over seeds of finetune's best validation macro-F1 (metrics/study/<run>/"
                         "finetune.json: val_macro_f1); ties: the spt arm's own setting, then the order listed",
            # Dodge et al. 2019: the expected best validation score of n candidates tried, n = 1 .. all
            "expected_best_val_macro_f1": [expected_max(means, n) for n in range(1, len(means) + 1)],
            "chosen": {key: rows[chosen][key] for key in ("weighting", "lambda", "spt_arm", "run", "runs",
                                                           "val_macro_f1_mean")},
            "candidates": rows}


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
    chosen, spt = selection["chosen"], summary["arms"]["spt"]
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
                     f"{mean_std(row['val_macro_f1_mean'], row['val_macro_f1_std'])} | {per_seed} | {exits} | "
                     f"`{row['run']}` | {'**chosen**' if row['chosen'] else ''} |")
    expected = selection["expected_best_val_macro_f1"]
    others = [arm for arm in summary["arms"] if arm != "spt"]
    lines += ["", "Expected best validation macro-F1 against the number of candidates tried (Dodge et al. 2019; the "
                  "unbiased estimator without replacement over these candidates' mean validation scores): "
              + ", ".join(f"{n}: {value * 100:.2f}" for n, value in enumerate(expected, start=1))
              + f". The other arms ({', '.join(others)}) were tried once each (n = 1): compare them with SPT's "
                f"{expected[0] * 100:.2f} at n = 1 for an equal tuning budget; the rest of SPT's lead on validation "
                "is bought with trials. The sweep claims nothing on test (it chooses on validation), so it needs no "
                "correction for many comparisons; its winner's test scores join the arm table's family above."]
    lines += ["", f"Chosen: {_setting(chosen)}, validation macro-F1 {chosen['val_macro_f1_mean'] * 100:.2f}; "
                  f"its test accuracy is {mean_std(spt['accuracy_mean'], spt['accuracy_std'])} (macro-F1 "
                  f"{mean_std(spt['macro_f1_mean'], spt['macro_f1_std'])}), read after the choice."]
    matched = [arm for arm in summary["arms"] if arm in MATCHED_ARMS]
    if matched and not chosen["spt_arm"]:
        lines.append(f"{' and '.join(matched)} match the spt arm's own pretraining (pretrain_sup's weighting and "
                     "lambda), not the chosen setting's: with another weighting the FLOPs may differ (gradcos "
                     "counts its extra backward passes).")
    lines += ["", "The right panel of the figure above shows these validation scores against λ, one line per "
                  "weighting (the square: the spt arm's own setting; the ring: the chosen one).", ""]
    return lines

"""Every path a stage reads or writes, declared once (tests check dvc.yaml against these).

``run`` names a study run (``<variant>-<seed>``, see stages/compare.py; a floor, which has no seed, is
named ``<variant>``; a setting of the sweep ``spt-<weighting>-l<lambda>-<seed>``; a run of the label-budget
curve ``<variant>-n<labels per class>-<seed>``, floors included); the main chain has none.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml

from stages.common.errors import UserError

PARAMS = Path("params.yaml")
DVC_FILE = Path("dvc.yaml")
PROCESSED = Path("data/processed")
LABELED = PROCESSED / "labeled"  # DatasetDict: train / validation / test
CORPUS = PROCESSED / "corpus"  # Dataset of packed masked-LM blocks
TOKENIZER = PROCESSED / "tokenizer"
LABEL_MAP = PROCESSED / "label_map.json"
DATASET = PROCESSED / "dataset.json"  # the data's name (MLflow dataset inputs) and its data.labeled source
# The label-budget curve (study.n_per_class): per budget and seed, that many training labels per class drawn from
# data/processed's train split (and validation capped alike with study.true_few_shot), by study_budget_prepare
BUDGETS = Path("data/budgets")
DATA_REPORT = Path("reports/prepare.json")  # prepare's full data report; metrics/prepare.json holds its headline
REPORT = Path("reports/compare.md")
TRAINING_STAGES = ("pretrain_unsup", "pretrain_sup", "finetune")
# The study's arms (stages/compare.py). Every arm starts from the shared pretrain_unsup checkpoint:
#   spt: pretrain_sup (lambda > 0) then finetune;  tapt: pretrain_sup's budget with lambda = 0 (masked-LM
#   on the same texts, no labels) then finetune;  baseline: finetune alone, the same steps;
#   baseline_matched: finetune given as many extra examples as SPT's pretrain_sup trained on;
#   baseline_flops: finetune given as many extra FLOPs as SPT's pretrain_sup spent.
PRETRAINED_ARMS = ("spt", "tapt")
BASELINE_ARMS = ("baseline", "baseline_matched", "baseline_flops")
STUDY_VARIANTS = PRETRAINED_ARMS + BASELINE_ARMS
MATCHED_ARMS = BASELINE_ARMS[1:]  # optional: study.matched_baselines lists the ones that run


def study_arms(matched_baselines: list[str]) -> list[str]:
    """The arms a study runs, in report order: spt, tapt, baseline, then ``study.matched_baselines``."""
    return [*PRETRAINED_ARMS, "baseline", *(arm for arm in MATCHED_ARMS if arm in matched_baselines)]
# Floors that need no pretraining and no training seed (stages/common/floors.py), scored by evaluate:
#   tfidf: TF-IDF + logistic regression;  embeddings: logistic regression on the source model's frozen
#   mean-pooled embeddings. Deterministic, so each runs once (run name: the variant alone).
FLOOR_ARMS = ("tfidf", "embeddings")


# The sweep (study.weightings x study.lambdas; compare chooses one setting on validation): the spt arm's
# pretrain_sup with its weighting and lambda replaced, then finetune and evaluate, per seed.
SWEEP_STAGES = {"pretrain_sup": "study_sweep_pretrain", "finetune": "study_sweep_finetune",
                "evaluate": "study_sweep_evaluate"}


@dataclass(frozen=True)
class SweepSetting:
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


def study_run_name(variant: str, seed: int | None, setting: SweepSetting | None = None,
                   budget: int | None = None) -> str:
    """``<variant>-<seed>``; a floor (no seed) is ``<variant>``; a setting of the sweep is
    ``<variant>-<weighting>-l<lambda>-<seed>`` (never an arm's name: no arm or floor is called after a weighting);
    a run of the label-budget curve, ``budget`` labels per class, is ``<variant>-n<budget>-<seed>`` (floors too:
    their training labels differ per seed)."""
    if budget is not None:
        return f"{variant}-n{budget}-{seed}"
    if setting is not None:
        return f"{variant}-{setting.tag}-{seed}"
    return variant if seed is None else f"{variant}-{seed}"


def budget_dir(budget: int, seed: int) -> Path:
    """The labeled train and validation splits of one budget and seed: ``data/budgets/n<budget>-<seed>``."""
    return BUDGETS / f"n{budget}-{seed}"


def labeled_dir(budget: int | None = None, seed: int | None = None) -> Path:
    """Where the train and validation splits come from: data/processed, or a budget's (the test split is always
    data/processed's: every budget is scored on the same examples)."""
    return LABELED if budget is None else budget_dir(budget, seed) / LABELED.name


def model_dir(stage: str, run: str | None = None) -> Path:
    return Path("models") / stage if run is None else Path("models/study") / run / stage


def checkpoint_dir(stage: str, run: str | None = None) -> Path:
    """Intermediate Trainer checkpoints (DVC out with persist: true, cache: false)."""
    return Path("checkpoints") / stage if run is None else Path("checkpoints/study") / run / stage


def metrics_file(stage: str, run: str | None = None) -> Path:
    return Path("metrics") / f"{stage}.json" if run is None else Path("metrics/study") / run / f"{stage}.json"


def timing_file(stage: str, run: str | None = None) -> Path:
    """Wall-clock seconds of a training run. Not a DVC output: seconds differ from run to run."""
    return Path("timings") / f"{stage}.json" if run is None else Path("timings/study") / run / f"{stage}.json"


def plots_dir(stage: str, run: str | None = None) -> Path:
    return Path("plots") / stage if run is None else Path("plots/study") / run / stage


# The dvc.yaml stage a module runs as: the main chain under its own name, study runs in matrix stages.
STUDY_STAGES = {**{("pretrain_sup", arm): "study_pretrain" for arm in PRETRAINED_ARMS},
                **{("finetune", arm): "study_finetune" for arm in PRETRAINED_ARMS},
                ("finetune", "baseline"): "study_baseline",
                **{("finetune", arm): "study_matched" for arm in MATCHED_ARMS},
                **{("evaluate", arm): "study_evaluate" for arm in (*PRETRAINED_ARMS, "baseline")},
                **{("evaluate", arm): "study_evaluate_matched" for arm in MATCHED_ARMS},
                **{("evaluate", arm): "study_floors" for arm in FLOOR_ARMS}}


# The label-budget curve's stages (study.n_per_class x study.seeds): the same arms and floors as the study's,
# each trained on the budget's labels. prepare draws the labels.
BUDGET_STAGES = {("prepare", None): "study_budget_prepare",
                 **{("pretrain_sup", arm): "study_budget_pretrain" for arm in PRETRAINED_ARMS},
                 **{("finetune", arm): "study_budget_finetune" for arm in PRETRAINED_ARMS},
                 ("finetune", "baseline"): "study_budget_baseline",
                 **{("finetune", arm): "study_budget_matched" for arm in MATCHED_ARMS},
                 **{("evaluate", arm): "study_budget_evaluate" for arm in (*PRETRAINED_ARMS, "baseline")},
                 **{("evaluate", arm): "study_budget_evaluate_matched" for arm in MATCHED_ARMS},
                 **{("evaluate", arm): "study_budget_floors" for arm in FLOOR_ARMS}}


def study_variants(module: str) -> list[str]:
    """The ``--variant`` values ``stages.<module>`` accepts."""
    return [variant for (name, variant) in STUDY_STAGES if name == module]


def dvc_stage(module: str, variant: str | None = None, sweep: bool = False, budget: bool = False) -> str:
    """The dvc.yaml stage that runs ``stages.<module>`` (as ``variant``, for a study run; ``sweep``: a setting
    of the sweep, always the spt arm; ``budget``: a run of the label-budget curve)."""
    if budget:
        return BUDGET_STAGES[(module, variant)]
    if sweep:
        return SWEEP_STAGES[module]
    return module if variant is None else STUDY_STAGES[(module, variant)]


def dvc_stage_instance(module: str, variant: str, seed: int, setting: SweepSetting | None = None,
                       budget: int | None = None) -> str:
    """The name DVC gives one study run's matrix stage, e.g. ``study_pretrain@spt-42``,
    ``study_sweep_pretrain@normalized-2-42`` or ``study_budget_pretrain@spt-8-42`` (the matrix keys' values, in
    dvc.yaml's order)."""
    if budget is not None:
        return f"{dvc_stage(module, variant, budget=True)}@{variant}-{budget}-{seed}"
    if setting is None:
        return f"{dvc_stage(module, variant)}@{study_run_name(variant, seed)}"
    return f"{dvc_stage(module, variant, sweep=True)}@{setting.weighting}-{setting.lambda_}-{seed}"


def declared_params(stage: str) -> list[str]:
    """The params dvc.yaml declares for ``stage`` (sections or single keys, as written there)."""
    try:
        spec = yaml.safe_load(DVC_FILE.read_text(encoding="utf-8"))["stages"][stage]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as err:
        raise UserError(f"{DVC_FILE}: cannot read the params of stage '{stage}' ({type(err).__name__}: {err}); "
                        "run from the repository root") from None
    return [entry for item in spec.get("params", [])
            for entry in ([item] if isinstance(item, str) else [key for keys in item.values() for key in keys])]


def dataset_name() -> str:
    """The prepared data's name, e.g. rotten_tomatoes (for MLflow's dataset inputs)."""
    import json

    return json.loads(DATASET.read_text())["name"]


def label_names() -> list[str]:
    """The class names of the prepared data, in class-id order."""
    import json

    id2label = json.loads(LABEL_MAP.read_text())["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]

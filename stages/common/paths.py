"""Every path a stage reads or writes, declared once (tests check dvc.yaml against these).

``run`` names a study run (``<variant>-<seed>``, see stages/compare.py); the main chain has none.
"""

from pathlib import Path

PARAMS = Path("params.yaml")
PROCESSED = Path("data/processed")
LABELED = PROCESSED / "labeled"  # DatasetDict: train / validation / test
CORPUS = PROCESSED / "corpus"  # Dataset of packed masked-LM blocks
TOKENIZER = PROCESSED / "tokenizer"
LABEL_MAP = PROCESSED / "label_map.json"
DATA_REPORT = Path("reports/prepare.json")  # prepare's full data report; metrics/prepare.json holds its headline
REPORT = Path("reports/compare.md")
TRAINING_STAGES = ("pretrain_unsup", "pretrain_sup", "finetune")
# spt: finetune from pretrain_sup; baseline: from pretrain_unsup (the standard recipe);
# baseline_matched: the standard recipe with as many extra finetuning steps as pretrain_sup took.
STUDY_VARIANTS = ("spt", "baseline", "baseline_matched")


def study_run(variant: str, seed: int) -> str:
    return f"{variant}-{seed}"


def model_dir(stage: str, run: str | None = None) -> Path:
    return Path("models") / stage if run is None else Path("models/study") / run


def checkpoint_dir(stage: str, run: str | None = None) -> Path:
    """Intermediate Trainer checkpoints (DVC out with persist: true, cache: false)."""
    return Path("checkpoints") / stage if run is None else Path("checkpoints/study") / run


def metrics_file(stage: str, run: str | None = None) -> Path:
    return Path("metrics") / f"{stage}.json" if run is None else Path("metrics/study") / run / f"{stage}.json"


def plots_dir(stage: str, run: str | None = None) -> Path:
    return Path("plots") / stage if run is None else Path("plots/study") / run / stage

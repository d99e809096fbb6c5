"""Every path a stage reads or writes, declared once (tests check dvc.yaml against these)."""

from pathlib import Path

PARAMS = Path("params.yaml")
PROCESSED = Path("data/processed")
LABELED = PROCESSED / "labeled"  # DatasetDict: train / validation / test
CORPUS = PROCESSED / "corpus"  # Dataset of packed masked-LM blocks
TOKENIZER = PROCESSED / "tokenizer"
LABEL_MAP = PROCESSED / "label_map.json"
TRAINING_STAGES = ("pretrain_unsup", "pretrain_sup", "finetune")


def model_dir(stage: str) -> Path:
    return Path("models") / stage


def checkpoint_dir(stage: str) -> Path:
    """Intermediate Trainer checkpoints (DVC out with persist: true, cache: false)."""
    return Path("checkpoints") / stage


def metrics_file(stage: str) -> Path:
    return Path("metrics") / f"{stage}.json"


def plots_dir(stage: str) -> Path:
    return Path("plots") / stage

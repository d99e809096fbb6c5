"""Every path a stage reads or writes, declared once (tests check dvc.yaml against these).

``run`` is a study run's name (study/run.py: ``Run.name``, e.g. ``spt-42``): its outputs live under
``<kind>/study/<run>/``; the main chain has none.
"""

import os
from pathlib import Path

import yaml

from spt.errors import UserError

PARAMS = Path("params.yaml")
DVC_FILE = Path("dvc.yaml")
PROCESSED = Path("data/processed")
LABELED = PROCESSED / "labeled"  # DatasetDict: train / validation / test
CORPUS = PROCESSED / "corpus"  # Dataset of packed masked-LM blocks
TOKENIZER = PROCESSED / "tokenizer"
LABEL_MAP = PROCESSED / "label_map.json"
DATASET = PROCESSED / "dataset.json"  # the data's name (MLflow dataset inputs) and its data.labeled source
DATA_REPORT = Path("reports/prepare.json")  # prepare's full data report; metrics/prepare.json holds its headline
REPORT = Path("reports/compare.md")
TRAINING_STAGES = ("pretrain_unsup", "pretrain_sup", "finetune")


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


def dvc_stage(module: str) -> str:
    """The dvc.yaml stage this process runs as: DVC names it in $DVC_STAGE (``study_pretrain@spt-42`` is an instance
    of the matrix stage ``study_pretrain``; ``dvc.yaml:name`` when addressed with its file); outside DVC, the stage
    named after the module (``python -m stages.finetune`` by hand: ``finetune``)."""
    addressed = os.environ.get("DVC_STAGE", "").rpartition(":")[2]
    return addressed.partition("@")[0] or module


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

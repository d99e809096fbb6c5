"""The tiny pipeline on every tested architecture, from a user's own checkpoint (the unit tests of each
architecture: tests/spt/model/test_architectures.py)."""

import csv
import json

import pandas as pd
import pytest
import yaml
from transformers import pipeline

from spt.model.source import TESTED_ARCHITECTURES
from tools.sandbox import tiny_repository, write_tiny_encoder

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=TESTED_ARCHITECTURES)
def source(request, tmp_path_factory, tiny_data):
    """(architecture, directory of its tiny checkpoint and tokenizer)."""
    texts = pd.read_csv(tiny_data / "labeled.csv")["text"].tolist()
    directory = tmp_path_factory.mktemp(request.param) / "model"
    return request.param, write_tiny_encoder(directory, request.param, texts)


def test_tiny_pipeline_runs_on_each_architecture(source, tmp_path, tiny_data, monkeypatch):
    """prepare -> pretrain_unsup -> pretrain_sup -> finetune -> evaluate with model.source the
    architecture's checkpoint; plain transformers' pipeline predicts what evaluate scored.

    The stages run in this process, through the command line each has (``run_stage``), in a copy
    of the repository: DVC and five interpreters starting would cost a minute per architecture
    (tests/e2e/test_pipeline.py runs the real ``dvc repro``). MLflow is off (an unusable store with
    tracking.required false), as each stage allows.
    """
    import datasets

    from stages import evaluate, finetune, prepare, pretrain_sup, pretrain_unsup
    from stages.cli import run_stage

    architecture, directory = source
    repo = tiny_repository(tmp_path / "repo", tiny_data)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["source"] = str(directory)
    params["tracking"].update(uri=f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}", required=False)
    for stage in ("pretrain_unsup", "pretrain_sup", "finetune"):
        params[stage].update(max_steps=2, save_steps=2)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(repo)
    for module in (prepare, pretrain_unsup, pretrain_sup, finetune, evaluate):
        run_stage(module.__doc__, module.main, module.STAGE, argv=[])
    finetuned = repo / "models" / "finetune"
    assert json.loads((finetuned / "config.json").read_text())["model_type"] == architecture
    assert json.loads((repo / "metrics" / "finetune.json").read_text())["classifier_carried_over"] is True
    classify = pipeline("text-classification", model=str(finetuned), device="cpu")
    test = datasets.load_from_disk(str(repo / "data" / "processed" / "labeled"))["test"]
    predicted = [row["label"] for row in classify(list(test["text"]), truncation=True, max_length=64)]
    rows = list(csv.DictReader(open(repo / "plots" / "evaluate" / "confusion.csv")))
    assert predicted == [row["predicted"] for row in rows]

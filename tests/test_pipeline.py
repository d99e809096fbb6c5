"""End to end: the real `dvc repro` on the tiny profile in a temporary copy of the repository."""

import csv
import json
import shutil
import sqlite3

import pytest
import yaml
from transformers import pipeline

from stages.common.data import content_sha256

from .conftest import TINY_PARAMS, copy_repository, run

STAGES = ["prepare", "pretrain_unsup", "pretrain_sup", "finetune", "evaluate"]


def ran_stages(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


def lock_outputs(repo) -> dict:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {stage: {out["path"]: out.get("md5") for out in spec.get("outs", [])}
            for stage, spec in lock["stages"].items()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_data):
    repo = copy_repository(tmp_path_factory.mktemp("pipeline") / "repo")
    shutil.copy(TINY_PARAMS, repo / "params.yaml")
    shutil.copytree(tiny_data, repo / "data" / "tiny")
    result = run(repo, "dvc", "repro")
    assert ran_stages(result.stdout) == STAGES
    return repo


def test_every_stage_wrote_its_outputs(repo):
    # later stages only read their inputs: nothing upstream changed under DVC's feet
    assert "up to date" in run(repo, "dvc", "status").stdout
    for stage in ("pretrain_unsup", "pretrain_sup", "finetune"):
        assert (repo / "models" / stage / "model.safetensors").is_file()
        assert [p.name for p in (repo / "checkpoints" / stage).iterdir()] == ["fingerprint"]
        assert json.loads((repo / "metrics" / f"{stage}.json").read_text())["steps"] > 0
    evaluation = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert {"accuracy", "macro_f1", "ece", "per_class", "confusion_matrix"} <= set(evaluation)
    assert 0.0 <= evaluation["accuracy"] <= 1.0
    lambdas = list(csv.DictReader(open(repo / "plots" / "pretrain_sup" / "lambda.csv")))
    assert float(lambdas[0]["lambda"]) > float(lambdas[-1]["lambda"])  # linear_decay in the tiny profile


def test_each_stage_records_the_checkpoint_it_started_from(repo):
    for stage, init in (("pretrain_sup", "pretrain_unsup"), ("finetune", "pretrain_sup")):
        provenance = json.loads((repo / "models" / stage / "provenance.json").read_text())
        assert provenance["init_sha256"] == content_sha256(repo / "models" / init)
    assert json.loads((repo / "metrics" / "finetune.json").read_text())["classifier_carried_over"] is True


def test_plain_transformers_pipeline_agrees_with_evaluate(repo):
    import datasets

    classifier = pipeline("text-classification", model=str(repo / "models" / "finetune"), device="cpu")
    test = datasets.load_from_disk(str(repo / "data" / "processed" / "labeled"))["test"]
    predicted = [row["label"] for row in classifier(list(test["text"]), truncation=True, max_length=64)]
    rows = list(csv.DictReader(open(repo / "plots" / "evaluate" / "confusion.csv")))
    assert predicted == [row["predicted"] for row in rows]
    accuracy = sum(row["predicted"] == row["actual"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(json.loads((repo / "metrics" / "evaluate.json").read_text())["accuracy"])


def test_every_stage_logged_a_run_to_mlflow(repo):
    with sqlite3.connect(repo / "mlflow.db") as db:
        stages = [row[0] for row in db.execute("SELECT value FROM tags WHERE key = 'stage'")]
        metric_keys = {row[0] for row in db.execute("SELECT DISTINCT key FROM metrics")}
    assert sorted(stages) == sorted(STAGES)
    assert {"loss_mlm", "loss_supervised", "lambda", "accuracy", "macro_f1", "ece"} <= metric_keys


def test_forced_rerun_is_byte_identical(repo):
    before = lock_outputs(repo)
    run(repo, "dvc", "repro", "--force")
    assert lock_outputs(repo) == before


def test_changing_lambda_reruns_only_the_stages_after_it(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pretrain_sup"]["lambda"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(repo, "dvc", "repro")
    assert ran_stages(result.stdout) == ["pretrain_sup", "finetune", "evaluate"]

"""End to end: `make repro`'s two steps (`dvc repro`, then `python -m tools.mirror`) on the tiny profile in a
temporary copy, as a fresh clone meets them: every stage of dvc.lock ends up with exactly one keyed run in MLflow,
whether DVC ran it or skipped it, and mirroring again adds nothing. Its parts: tests/tools/test_mirror.py."""

import json
import re
import shutil
import sys

import pytest
import yaml

from spt.tracking import DVC_STAGE_TAG, OUTS_KEY_TAG, outs_key
from spt.train.training_run import scalar_metrics
from tests.support import run_command
from tools.sandbox import git, tiny_repository

pytestmark = pytest.mark.e2e

ARMS = ["spt", "tapt", "baseline", "baseline_matched", "baseline_flops"]
FRESH = "fresh.db"


def repro(repo) -> list[str]:
    """`make repro` in ``repo``: the stages DVC ran."""
    ran = re.findall(r"Running stage '([^']+)'", run_command(repo, "dvc", "repro").stdout)
    print(run_command(repo, sys.executable, "-m", "tools.mirror").stderr)  # what it did, shown when a test fails
    return ran


def commit(repo, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def store(repo, name: str = "mlflow.db") -> tuple:
    """The client of the repository's store (the SQLite file ``name``) and every run in it."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / name}")
    experiment = client.get_experiment_by_name("spt-tests")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def keyed_runs(repo, stages: list[str], name: str = "mlflow.db") -> dict:
    """Each stage's runs in the store ``name`` that carry its key in dvc.lock: exactly one per stage (asserted)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    _, runs = store(repo, name)
    keyed = {stage: [run for run in runs if run.data.tags.get(DVC_STAGE_TAG) == stage
                     and run.data.tags.get(OUTS_KEY_TAG) == outs_key(lock[stage]["outs"])] for stage in stages}
    assert {stage: len(found) for stage, found in keyed.items()} == dict.fromkeys(stages, 1)
    return {stage: found[0] for stage, found in keyed.items()}


def test_every_stage_of_the_lock_has_one_run_whether_dvc_ran_it_or_not(tmp_path, tiny_data):
    repo = tiny_repository(tmp_path / "repo", tiny_data)
    commit(repo, "tiny profile")  # a clean tree, as a fresh clone's: only the pipeline rewrites files

    # 1. Every stage runs and logs itself; the mirror keys those runs and logs nothing of its own.
    stages = repro(repo)
    assert len(stages) == 20 and "compare" in stages
    runs = keyed_runs(repo, stages)
    assert not [name for name, run in runs.items() if "logged_from" in run.data.tags]
    # outputs were rewritten while the pipeline ran, but no code or params changed
    assert {run.data.tags["git_dirty"] for run in runs.values()} == {"false"}
    assert runs["finetune"].info.run_name == "finetune"
    assert runs["study_matched@baseline_flops-7"].info.run_name == "finetune · baseline_flops-7"
    copied = runs["study_pretrain@spt-7"]  # identical to the main chain's pretrain_sup (seed 7): copied
    assert copied.info.run_name == "pretrain_sup · spt-7" and copied.data.tags["reused_from"] == "models/pretrain_sup"
    committed = json.loads((repo / "metrics/study/spt-7/pretrain_sup.json").read_text())
    assert {key: copied.data.metrics[key] for key in scalar_metrics(committed)} == pytest.approx(
        scalar_metrics(committed))
    commit(repo, "outputs")

    # 2. A fresh store (another file: this process keeps the first one open), and a change only compare reads: DVC
    #    runs compare alone and skips the rest, which the mirror logs from dvc.lock under compare's pipeline run.
    shutil.rmtree(repo / "mlartifacts")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"]["bootstrap_samples"] = 100
    params["tracking"]["uri"] = f"sqlite:///{repo / FRESH}"  # no stage reads tracking: DVC reruns nothing for it
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "fewer bootstrap samples, a fresh store")
    assert repro(repo) == ["compare"]
    runs = keyed_runs(repo, stages, FRESH)
    assert sorted(name for name, run in runs.items() if "logged_from" not in run.data.tags) == ["compare"]
    assert {run.data.tags["logged_from"] for name, run in runs.items() if name != "compare"} == {"dvc.lock"}
    client, everything = store(repo, FRESH)
    parents = [run for run in everything if run.data.tags["stage"] == "pipeline"]
    assert len(parents) == 1 and len(everything) == len(stages) + 1
    assert {run.data.tags["mlflow.parentRunId"] for run in runs.values()} == {parents[0].info.run_id}
    # test accuracy and macro-F1 for every arm, and the floors
    for arm in ARMS:
        scores = json.loads((repo / f"metrics/study/{arm}-7/evaluate.json").read_text())
        evaluation = next(run for run in runs.values() if run.data.tags.get("study_run") == f"{arm}-7"
                          and run.data.tags["stage"] == "evaluate")
        assert evaluation.info.run_name == f"evaluate · {arm}-7"
        assert evaluation.data.metrics["accuracy"] == pytest.approx(scores["accuracy"])
        assert evaluation.data.metrics["macro_f1"] == pytest.approx(scores["macro_f1"])
    assert runs["study_floors@tfidf"].data.metrics["accuracy"] > 0
    # the compare run that ran: the verdict table, figures, per-arm intervals
    compare = runs["compare"]
    assert {"compare.md", "plots/compare.png", "plots/label_budget.png"} <= {
        artifact.path for artifact in client.list_artifacts(compare.info.run_id)} | {
        artifact.path for artifact in client.list_artifacts(compare.info.run_id, "plots")}
    assert compare.data.metrics["spt_accuracy_low"] <= compare.data.metrics["spt_accuracy_high"]
    # the main chain's evaluate, skipped: its scores on the pipeline run, its classifier registered
    evaluation = runs["evaluate"]
    assert parents[0].data.metrics["test_accuracy"] == pytest.approx(evaluation.data.metrics["accuracy"])
    assert [version.run_id for version in client.search_model_versions("name = 'spt-classifier'")] == [
        evaluation.info.run_id]
    assert "plots/confusion_matrix.png" in {a.path for a in client.list_artifacts(evaluation.info.run_id, "plots")}

    # 3. Nothing changed: DVC runs nothing and the mirror adds nothing.
    assert repro(repo) == []
    assert len(store(repo, FRESH)[1]) == len(stages) + 1

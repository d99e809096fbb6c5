"""MLflow in-process, on a throw-away SQLite store: the pipeline run, stage runs, their names, dataset inputs; the
git state runs record.

A real tracking server, an unreachable one and DVC temp experiments: tests/e2e/test_tracking_server.py."""

import json
import time
from pathlib import Path

import pytest

from spt.config import DeclaredParams, load_params
from spt.tracking import (
    DVC_STAGE_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    changed_paths,
    flatten,
    git_state,
    tracked_run,
)
from tools.sandbox import TINY_PARAMS


def test_flatten_keeps_every_param():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": None, "e": "[1, 2]"}


# --------------------------------------------------------------------------------------------
# In-process, on a throw-away SQLite store: the stages of one pytest process share a pipeline run
# (the pipeline execution is the dvc process, or this one when there is none).


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite store; its client, and the tiny params (experiment spt-tests)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the repository root: artifacts, git state, and the data files params name
    for name in ("labeled.csv", "unlabeled.txt"):  # only checked to exist
        (tmp_path / "data" / "tiny").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "tiny" / name).touch()
    return mlflow.MlflowClient(tracking_uri=uri), load_params(TINY_PARAMS)


def runs_by_stage(client) -> dict:
    experiment = client.get_experiment_by_name("spt-tests")
    return {r.data.tags["stage"]: r for r in client.search_runs([experiment.experiment_id])}


def test_pipeline_run_spans_its_stages(store):
    client, params = store
    for stage in ("prepare", "pretrain_unsup"):
        with tracked_run(stage, DeclaredParams(params, ["seed"], stage)) as tracker:
            assert tracker.active
            time.sleep(0.5)
    runs = {stage: run.info for stage, run in runs_by_stage(client).items()}
    parent = runs.pop("pipeline")
    assert set(runs) == {"prepare", "pretrain_unsup"} and parent.status == "FINISHED"
    assert parent.start_time <= min(run.start_time for run in runs.values())
    assert parent.end_time >= max(run.end_time for run in runs.values())
    assert parent.end_time - parent.start_time >= sum(run.end_time - run.start_time for run in runs.values()) >= 1000


def test_a_failed_stage_fails_the_pipeline_run(store):
    client, params = store
    with pytest.raises(RuntimeError), tracked_run("prepare", DeclaredParams(params, ["seed"], "prepare")):
        raise RuntimeError("boom")
    with tracked_run("pretrain_unsup", DeclaredParams(params, ["seed"], "pretrain_unsup")):
        pass
    runs = runs_by_stage(client)
    assert runs["prepare"].info.status == "FAILED"
    assert runs["pipeline"].info.status == "FAILED"  # a later stage that finished does not hide it
    assert runs["pipeline"].info.end_time >= runs["pretrain_unsup"].info.end_time


def test_experiment_opens_on_training_runs(store):
    client, params = store
    with tracked_run("prepare", DeclaredParams(params, ["seed"], "prepare")):
        pass
    assert client.get_experiment_by_name("spt-tests").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


@pytest.mark.parametrize("kind, expected", [(None, EXPERIMENT_KIND), ("genai_development_inferred", EXPERIMENT_KIND),
                                            ("genai_development", "genai_development")])
def test_existing_experiment_gets_the_kind_unless_a_person_chose_one(store, kind, expected):
    client, params = store
    client.create_experiment("spt-tests", tags={EXPERIMENT_KIND_TAG: kind} if kind else None)
    with tracked_run("prepare", DeclaredParams(params, ["seed"], "prepare")):
        pass
    assert client.get_experiment_by_name("spt-tests").tags[EXPERIMENT_KIND_TAG] == expected


def test_datasets_are_logged_as_run_inputs(store):
    import mlflow

    client, params = store
    digest = "0123456789abcdef" * 4
    with tracked_run("finetune", DeclaredParams(params, ["seed"], "finetune")) as tracker:
        tracker.log_datasets("rotten_tomatoes", digest, {"train": 120, "validation": 30})
        run_id = mlflow.active_run().info.run_id
    inputs = client.get_run(run_id).inputs.dataset_inputs
    logged = {i.dataset.name: (i.dataset.digest, json.loads(i.dataset.profile),
                               {tag.key: tag.value for tag in i.tags}["mlflow.data.context"]) for i in inputs}
    assert logged == {"rotten_tomatoes/train": (digest[:16], {"num_rows": 120}, "train"),
                      "rotten_tomatoes/validation": (digest[:16], {"num_rows": 30}, "validation")}


def test_a_budget_runs_datasets_name_and_point_at_the_budget_it_read(store):
    """A run of the label-budget curve reads train, validation and unlabeled from data/budgets/n8-42, test from
    data/processed: its dataset inputs say so (they pointed at data/processed for every part)."""
    import mlflow

    client, params = store
    with tracked_run("pretrain_sup", DeclaredParams(params, ["seed"], "pretrain_sup")) as tracker:
        tracker.log_datasets("rotten_tomatoes", "ab" * 32, {"train": 16, "unlabeled": 90, "test": 30},
                             Path("data/budgets/n8-42/labeled"))  # study.run.Run("spt", 42, labels_per_class=8)
        run_id = mlflow.active_run().info.run_id
    logged = {i.dataset.name: json.loads(i.dataset.source)["uri"]
              for i in client.get_run(run_id).inputs.dataset_inputs}
    assert logged == {"rotten_tomatoes/n8-42/train": "data/budgets/n8-42/labeled/train",
                      "rotten_tomatoes/n8-42/unlabeled": "data/budgets/n8-42/labeled/unlabeled",
                      "rotten_tomatoes/test": "data/processed/labeled/test"}


def test_logging_datasets_with_tracking_off_does_nothing(store):
    import mlflow

    client, params = store
    with tracked_run("evaluate", DeclaredParams(params, ["seed"], "evaluate")) as tracker:
        run_id = mlflow.active_run().info.run_id
        tracker.active = False  # as after a failure: warned once, then quiet
        tracker.log_datasets("reviews", "ab" * 32, {"test": 5})
    assert client.get_run(run_id).inputs.dataset_inputs == []


def test_list_metrics_reach_mlflow_as_one_metric_per_element():
    """pretrain_sup's learned_log_variance is a list; MLflow refused it and switched tracking off."""
    from spt.train.training_run import scalar_metrics

    assert scalar_metrics({"steps": 50, "flops": 1.5e12, "learned_log_variance": [1.9, -0.4], "note": "x"}) == {
        "steps": 50, "flops": 1.5e12, "learned_log_variance_0": 1.9, "learned_log_variance_1": -0.4}


def test_a_stage_run_is_named_after_its_stage_and_study_run(store, monkeypatch):
    """Four runs named finetune told nothing apart; the run also records the DVC stage it ran as (tools/mirror.py)."""
    import mlflow

    client, params = store
    monkeypatch.setenv("DVC_STAGE", "dvc.yaml:study_matched@baseline_flops-42")
    with tracked_run("finetune", DeclaredParams(params, ["seed"], "finetune"), study_run="baseline_flops-42"):
        study = mlflow.active_run().info.run_id
    monkeypatch.delenv("DVC_STAGE")
    with tracked_run("finetune", DeclaredParams(params, ["seed"], "finetune")):
        main = mlflow.active_run().info.run_id
    assert client.get_run(study).info.run_name == "finetune · baseline_flops-42"
    assert client.get_run(study).data.tags[DVC_STAGE_TAG] == "study_matched@baseline_flops-42"
    assert client.get_run(main).info.run_name == "finetune"
    assert DVC_STAGE_TAG not in client.get_run(main).data.tags  # run by hand: no DVC stage to key


# --------------------------------------------------------------------------------------------
# git_dirty: code or params differ from the commit, not DVC rewriting the pipeline's outputs

DVC_YAML = """stages:
  train:
    cmd: python train.py
    outs:
      - models/train
      - metrics/train.json:
          cache: false
  study:
    matrix: {arm: [a, b]}
    cmd: python train.py --arm ${item.arm}
    outs:
      - metrics/study/${item.arm}/train.json:
          cache: false
"""


@pytest.fixture
def git_repo(tmp_path, monkeypatch):
    from tools.sandbox import git

    files = {"dvc.yaml": DVC_YAML, "dvc.lock": "schema: '2.0'\n", "params.yaml": "rate: 1\n", "train.py": "pass\n",
             "metrics/train.json": "{}", "metrics/study/a/train.json": "{}", "metrics/.gitignore": "/x\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "pipeline")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tmp_path


def test_git_dirty_ignores_outputs_dvc_rewrites(git_repo):
    assert git_state()["git_dirty"] == "false"
    for name in ("metrics/train.json", "metrics/study/a/train.json", "dvc.lock", "metrics/.gitignore"):
        (git_repo / name).write_text("rewritten by the pipeline\n")
    (git_repo / "metrics/study/a/train.json").unlink()  # DVC removes an output before its stage runs
    state = git_state()
    assert state["git_dirty"] == "false" and len(state["git_commit"]) == 40


@pytest.mark.parametrize("changed", ["train.py", "params.yaml", "dvc.yaml"])
def test_git_dirty_when_code_or_params_changed(git_repo, changed):
    (git_repo / "metrics/train.json").write_text("rewritten by the pipeline\n")
    (git_repo / changed).write_text((git_repo / changed).read_text() + "# changed\n")
    assert git_state()["git_dirty"] == "true"


def test_renamed_files_count_by_both_names():
    assert changed_paths("R  new.py\0old.py\0 M metrics/a.json\0") == ["new.py", "old.py", "metrics/a.json"]

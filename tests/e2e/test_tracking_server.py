"""MLflow end to end: a stage logging to a real tracking server on loopback, an unreachable one, and DVC temp
experiments."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spt.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from tests.support import free_port, run_command
from tools.sandbox import git, stage_env

pytestmark = pytest.mark.e2e


def stage(repo: Path, name: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=repo, env=stage_env(**env),
                          capture_output=True, text=True)


def test_stage_logs_to_a_real_server(tiny_repo, mlflow_server):
    import mlflow

    result = stage(tiny_repo, "prepare", MLFLOW_TRACKING_URI=mlflow_server.uri)
    assert result.returncode == 0, result.stderr
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("spt-tests")
    runs = {r.data.tags["stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"pipeline", "prepare"}
    prepare = runs["prepare"]
    assert prepare.data.tags["mlflow.parentRunId"] == runs["pipeline"].info.run_id
    assert prepare.data.params["prepare.max_length"] == "64"
    assert prepare.data.params["data.unlabeled"] == json.dumps(["data/tiny/unlabeled.txt"])
    assert prepare.data.metrics["rows_read"] > 0
    assert {"git_commit", "git_dirty", "params_hash"} <= set(prepare.data.tags)
    assert not (tiny_repo / "mlflow.db").exists()
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    # what prepare wrote, as dataset inputs: one per split and the corpus, all with data/processed's hash
    inputs = {i.dataset.name: i for i in client.get_run(prepare.info.run_id).inputs.dataset_inputs}
    report = json.loads((tiny_repo / "reports" / "prepare.json").read_text())
    assert set(inputs) == {f"labeled/{part}" for part in ("train", "validation", "test", "corpus")}
    assert len({i.dataset.digest for i in inputs.values()}) == 1
    assert json.loads(inputs["labeled/corpus"].dataset.profile) == {"num_rows": report["corpus"]["blocks"]}
    assert json.loads(inputs["labeled/test"].dataset.source) == {"uri": "data/processed/labeled/test"}


def test_unreachable_server_stops_before_any_work(tiny_repo):
    dead = f"http://127.0.0.1:{free_port()}"
    result = stage(tiny_repo, "prepare", MLFLOW_TRACKING_URI=dead)
    assert result.returncode == 2
    assert "is not usable" in result.stderr and "tracking.required: false" in result.stderr
    assert not (tiny_repo / "data" / "processed").exists()


def test_optional_tracking_continues_without_the_server(tiny_repo):
    params = (tiny_repo / "params.yaml").read_text().replace("required: true", "required: false")
    (tiny_repo / "params.yaml").write_text(params)
    result = stage(tiny_repo, "prepare", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 0, result.stderr
    assert "continuing without MLflow" in result.stderr
    assert (tiny_repo / "metrics" / "prepare.json").is_file()


def test_temp_experiment_lands_in_the_repository_store(tiny_repo):
    import mlflow

    git(tiny_repo, "add", "-A")  # a temp experiment sees committed files only
    git(tiny_repo, "commit", "-qm", "tiny data")
    run_command(tiny_repo, "dvc", "exp", "run", "--temp", "-n", "tmp-exp", "-S", "prepare.val_fraction=0.25", "prepare")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tiny_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("spt-tests")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'prepare'")
    assert [r.data.tags.get("dvc_experiment") for r in runs] == ["tmp-exp"]
    assert runs[0].data.params["prepare.val_fraction"] == "0.25"

"""A training stage killed with SIGKILL (or stopped with Ctrl-C) resumes to byte-identical weights (CPU).

Which checkpoint a resume picks: tests/spt/train/test_resume.py and test_checkpoint_faults.py."""

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml
from safetensors import safe_open

from spt.train.resume import COMPLETE_FILE
from tests.support import run_command
from tools.sandbox import TRAINING_STAGES, longer_runs, stage_env, tiny_repository

pytestmark = pytest.mark.e2e


def kill_after_first_checkpoint(repo, stage):
    process = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=repo, env=stage_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    complete = repo / "checkpoints" / stage / "checkpoint-10" / COMPLETE_FILE  # written once the Trainer is done
    deadline = time.monotonic() + 300
    while not complete.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, f"{stage} finished before it could be killed"


@pytest.fixture(scope="module")
def trained_repo(tmp_path_factory, tiny_data):
    """The tiny pipeline up to finetune, uninterrupted: the reference weights."""
    repo = tiny_repository(tmp_path_factory.mktemp("resume") / "repo", tiny_data)
    longer_runs(repo)
    run_command(repo, "dvc", "repro", "finetune")
    return repo


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_killed_stage_resumes_to_identical_weights(trained_repo, stage):
    weights = trained_repo / "models" / stage / "model.safetensors"
    reference = weights.read_bytes()
    records = {path: path.read_bytes() for path in [trained_repo / "metrics" / f"{stage}.json",
                                                    *(trained_repo / "plots" / stage).iterdir()]}
    weights.unlink()
    kill_after_first_checkpoint(trained_repo, stage)
    assert not weights.exists()  # nothing half-written where the next stage would read it
    resumed = run_command(trained_repo, sys.executable, "-m", f"stages.{stage}")
    assert "resuming from checkpoints" in resumed.stderr
    assert weights.read_bytes() == reference
    # the metrics and the learning curves keep what was logged before the kill
    assert {path: path.read_bytes() for path in records} == records


def test_ctrl_c_saves_a_checkpoint_and_the_next_run_resumes(trained_repo):
    stage = "pretrain_unsup"
    weights = trained_repo / "models" / stage / "model.safetensors"
    reference = weights.read_bytes()
    weights.unlink()
    process = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=trained_repo, env=stage_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = trained_repo / "checkpoints" / stage / "checkpoint-10" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not progress.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted at step" in stderr and "Run `dvc repro` again to resume" in stderr
    saved = sorted(int(p.name.split("-")[1]) for p in (trained_repo / "checkpoints" / stage).glob("checkpoint-*"))
    assert saved and saved[-1] > 10  # a checkpoint at the step where Ctrl-C landed, not only the periodic one
    assert not weights.exists()
    resumed = run_command(trained_repo, sys.executable, "-m", f"stages.{stage}")
    assert f"resuming from checkpoints/{stage}/checkpoint-{saved[-1]}" in resumed.stderr
    assert weights.read_bytes() == reference


@pytest.fixture(scope="module")
def uncertainty_repo(tmp_path_factory, tiny_data):
    """pretrain_sup with learned (uncertainty) loss weights, uninterrupted: the reference."""
    repo = tiny_repository(tmp_path_factory.mktemp("resume-uncertainty") / "repo", tiny_data)
    longer_runs(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pretrain_sup"].update(weighting="uncertainty", uncertainty_learning_rate=0.1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_command(repo, "dvc", "repro", "pretrain_sup")
    return repo


def test_learned_loss_weights_resume_byte_identically_after_sigkill(uncertainty_repo):
    """The log-variances ride in the Trainer checkpoint (and its optimizer state), not in the saved model."""
    stage = "pretrain_sup"
    weights = uncertainty_repo / "models" / stage / "model.safetensors"
    metrics = uncertainty_repo / "metrics" / f"{stage}.json"
    reference = weights.read_bytes()
    learned = json.loads(metrics.read_text())["learned_log_variance"]
    assert learned and all(value > 0.05 for value in learned)  # they moved: a resume that lost them would differ
    records = {path: path.read_bytes() for path in [metrics, *(uncertainty_repo / "plots" / stage).iterdir()]}
    with safe_open(str(weights), framework="pt") as saved:
        keys = list(saved.keys())
    assert keys and not any("loss_weighting" in key for key in keys)
    weights.unlink()
    kill_after_first_checkpoint(uncertainty_repo, stage)
    checkpoint = uncertainty_repo / "checkpoints" / stage / "checkpoint-10" / "model.safetensors"
    with safe_open(str(checkpoint), framework="pt") as saved:
        assert "loss_weighting.log_variance" in saved.keys()
    resumed = run_command(uncertainty_repo, sys.executable, "-m", f"stages.{stage}")
    assert "resuming from checkpoints" in resumed.stderr
    assert weights.read_bytes() == reference
    assert {path: path.read_bytes() for path in records} == records  # learned_log_variance and weight_* curves too

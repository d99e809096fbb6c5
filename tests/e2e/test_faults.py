"""Faults end to end: a killed prepare leaves no partial output; a stage stopped by a full disk says so in one line,
and its rerun resumes to the output of an uninterrupted run; a tracking server that dies mid-run neither stops
training, nor loses DVC files, nor stalls the stage on HTTP retries; two queued experiments at once lose no MLflow
run or metric point.

Checkpoints a kill leaves behind: tests/spt/train/test_checkpoint_faults.py; SIGKILL at random moments in every
stage, with byte-identical results afterwards: tools/kill_trials.py.
"""

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.support import REPO, MlflowServer, run_command
from tools.sandbox import stage_env

pytestmark = pytest.mark.e2e


def test_prepare_killed_mid_write_leaves_no_partial_output(tiny_repo):
    data = tiny_repo / "data"
    process = subprocess.Popen([sys.executable, "-m", "stages.prepare"], cwd=tiny_repo, env=stage_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staged = []
    deadline = time.monotonic() + 120
    while not staged and process.poll() is None and time.monotonic() < deadline:
        try:  # the staging directory, once it holds something: the kill lands mid-write
            staged = [path for path in data.glob(".processed.partial-*") if any(path.iterdir())]
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
    assert staged, "killed before prepare started writing"

    assert not (data / "processed").exists()  # nothing half-written where the next stage reads
    run_command(tiny_repo, sys.executable, "-m", "stages.prepare")
    assert json.loads((data / "processed" / "label_map.json").read_text())["label2id"] == {"fresh": 0, "rotten": 1}
    assert not list(data.glob(".processed.partial-*"))  # the stale staging directory is gone too


# The real stage in its own process, with torch.save filling the disk at the file named by argv[1].
FULL_DISK_STAGE = """
import errno, sys
from pathlib import Path
import torch
real_save = torch.save
def save(obj, f, *args, **kwargs):
    if str(f).endswith(sys.argv[1]):
        Path(f).write_bytes(bytes(1000))
        raise OSError(errno.ENOSPC, "No space left on device", str(f))
    return real_save(obj, f, *args, **kwargs)
torch.save = save
from stages import pretrain_unsup
from stages.cli import run_stage
run_stage(pretrain_unsup.__doc__, pretrain_unsup.main, "pretrain_unsup", [])
"""


def test_a_stage_stopped_by_a_full_disk_says_so_once_and_its_rerun_matches_an_uninterrupted_run(tiny_repo):
    stage = "pretrain_unsup"
    run_command(tiny_repo, sys.executable, "-m", "stages.prepare")
    run_command(tiny_repo, sys.executable, "-m", f"stages.{stage}")
    output = tiny_repo / "models" / stage
    reference = {path.name: path.read_bytes() for path in output.iterdir()}
    checkpoints = tiny_repo / "checkpoints" / stage

    full = run_command(tiny_repo, sys.executable, "-c", FULL_DISK_STAGE, "checkpoint-4/optimizer.pt", check=False)
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: the disk is full: writing {checkpoints.relative_to(tiny_repo)} "
        f"({checkpoints.relative_to(tiny_repo)}/checkpoint-4/optimizer.pt) failed"), full.stderr[-3000:]
    assert "removed the partial checkpoint-4; checkpoint-2 is complete and kept" in errors[0]
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint-2", "fingerprint"]
    assert {path.name: path.read_bytes() for path in output.iterdir()} == reference  # the previous output, intact
    assert not list(tiny_repo.rglob("*.partial*"))

    rerun = run_command(tiny_repo, sys.executable, "-m", f"stages.{stage}")  # after freeing space
    assert f"resuming from {checkpoints.relative_to(tiny_repo)}/checkpoint-2" in rerun.stderr
    assert {path.name: path.read_bytes() for path in output.iterdir()} == reference


def test_training_survives_the_tracking_server_dying(tiny_repo, tmp_path):
    import mlflow

    stage = "pretrain_unsup"
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params[stage].update(max_steps=200, save_steps=10, logging_steps=1)
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    server = MlflowServer(tmp_path / "server")  # starts while prepare runs (into the repo's own store)
    process = None
    try:
        run_command(tiny_repo, sys.executable, "-m", "stages.prepare")
        server.wait_ready()
        log = tmp_path / "stage.log"
        with open(log, "w") as stderr:
            process = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=tiny_repo, stderr=stderr,
                                       stdout=subprocess.DEVNULL, env=stage_env(MLFLOW_TRACKING_URI=server.uri))
            first = tiny_repo / "checkpoints" / stage / "checkpoint-10"
            deadline = time.monotonic() + 180
            while not first.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            server.stop()
            died = time.monotonic()
            assert process.poll() is None, "the stage ended before the server died; make the run longer"
            process.wait(timeout=300)
        after_death = time.monotonic() - died
    finally:
        server.stop()
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()

    assert process.returncode == 0, output[-3000:]
    assert after_death < 60, f"the stage took {after_death:.0f} s after the server died: HTTP retries"
    assert output.count("tracking is off") == 1, output[-3000:]
    metrics = json.loads((tiny_repo / "metrics" / f"{stage}.json").read_text())
    assert metrics["steps"] == 200
    assert (tiny_repo / "models" / stage / "model.safetensors").is_file()
    assert (tiny_repo / "plots" / stage / "loss.csv").read_text().count("\n") == 201  # header + every step
    # The run had started logging to the server before it died.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{server.store}")
    runs = client.search_runs([client.get_experiment_by_name("spt-tests").experiment_id],
                              filter_string=f"tags.stage = '{stage}'")
    assert len(runs) == 1
    assert 0 < len(client.get_metric_history(runs[0].info.run_id, "loss")) < 200


def test_two_queued_experiments_at_once_lose_no_run_and_no_metric():
    # tools/queue_trial.py on prepare and pretrain_unsup: two experiments from `dvc queue start
    # -j 2` write to one SQLite store at the same time; it exits 1 on any lost run or metric point.
    result = subprocess.run([sys.executable, "-m", "tools.queue_trial", "--stages", "prepare",
                             "pretrain_unsup", "--param", "pretrain_unsup.learning_rate", "--values", "0.001", "0.002"],
                            cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert "experiments ran at the same time: yes" in result.stdout
    assert "total: runs expected 6, found 6;" in result.stdout

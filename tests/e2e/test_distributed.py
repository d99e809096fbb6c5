"""A global batch split over processes (torchrun) or accumulation steps trains like one batch.

End to end: the tiny profile's training stages run through the real `dvc repro`, once as
`python -m` with batch 8 and once with `runtime.launch: torchrun ... --nproc_per_node 2` and batch
4 per process (2 CPU processes, gloo: the same global batch of 8). Only rank 0 may write outputs
and log to MLflow, and the first logged training loss and gradient norm of each stage must match
the single-process run. Both start from identically seeded weights and see the same examples in
step 1, so what differs is:

- the mean over a batch: one process averages the loss over all masked tokens (labeled rows) of
  its batch; under DDP each process averages over its half and the gradients are averaged, which
  weighs tokens differently when the halves hold different numbers of them;
- dropout: each process draws its own masks;
- pretrain_sup and finetune start from the previous stage's output, which carries both effects.

Measured on the tiny profile: losses within 0.2%, gradient norms of the pretraining stages within
3.3%, hence LOSS_TOLERANCE = 1% and GRAD_NORM_TOLERANCE = 10%. The error this guards against (the
Trainer treating our per-batch means as sums over tokens: loss and gradients multiplied by the
number of processes) is +100%. finetune's gradient norm is not compared: its classifier starts
near chance, where the gradient is small (~0.1) and the per-process dropout draws alone move it
by ~45% (with dropout off the two runs agree to every printed digit).

Gradient accumulation in one process: tests/spt/train/test_trainers.py.
"""

import json
import re

import pytest
import yaml

from spt.hashing import content_sha256
from tests.support import run_command
from tools.sandbox import tiny_repository

pytestmark = pytest.mark.e2e

# --standalone: a free local port for the rendezvous, so concurrent runs do not collide.
LAUNCH = "torchrun --standalone --nproc_per_node 2"
PROCESSES = 2
TRAINING_STAGES = ["pretrain_unsup", "pretrain_sup", "finetune"]
LOSS_TOLERANCE = 0.01
GRAD_NORM_TOLERANCE = 0.10
GRAD_NORM_COMPARED = ["pretrain_unsup", "pretrain_sup"]
# Held-out losses after training (rank 0's evaluate() gathers every process's share).
FINAL_LOSS = {"pretrain_unsup": "eval_loss", "finetune": "val_loss"}


def mlflow_client(repo):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    return client, client.get_experiment_by_name("spt-tests").experiment_id


def pipeline_runs(repo) -> list[dict[str, list]]:
    """Per pipeline execution (oldest first): stage -> its child runs."""
    client, experiment = mlflow_client(repo)
    runs = client.search_runs([experiment], order_by=["attribute.start_time ASC"])
    parents = [r.info.run_id for r in runs if r.data.tags["stage"] == "pipeline"]
    executions = []
    for parent in parents:
        children: dict[str, list] = {}
        for r in runs:
            if r.data.tags.get("mlflow.parentRunId") == parent:
                children.setdefault(r.data.tags["stage"], []).append(r)
        executions.append(children)
    return executions


def first_logged(repo, child, key: str) -> float:
    client, _ = mlflow_client(repo)
    history = sorted(client.get_metric_history(child.info.run_id, key), key=lambda m: m.step)
    assert history and history[0].step == 1, f"{child.data.tags['stage']}: {key} not logged at step 1"
    return history[0].value


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_data):
    """The tiny training stages once with one process, then again with two (same global batch)."""
    repo = tiny_repository(tmp_path_factory.mktemp("distributed") / "repo", tiny_data)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["runtime"]["launch"] == "python"
    run_command(repo, "dvc", "repro", "finetune")
    per_process = {stage: params[stage]["batch_size"] // PROCESSES for stage in TRAINING_STAGES}
    settings = [f"runtime.launch={LAUNCH}", *[f"{stage}.batch_size={size}" for stage, size in per_process.items()]]
    flags = [arg for setting in settings for arg in ("-S", setting)]
    result = run_command(repo, "dvc", "exp", "run", *flags, "finetune")
    repo.joinpath("exp_run.log").write_text(result.stdout + result.stderr)
    return repo


def test_two_processes_train_like_one(repo):
    single, distributed = pipeline_runs(repo)[-2:]
    for stage in TRAINING_STAGES:
        one, two = single[stage][0], distributed[stage][0]
        assert one.data.metrics["world_size"] == 1 and two.data.metrics["world_size"] == PROCESSES
        keys = ["loss"] + (["grad_norm"] if stage in GRAD_NORM_COMPARED else [])
        for key in keys:
            expected, actual = first_logged(repo, one, key), first_logged(repo, two, key)
            tolerance = LOSS_TOLERANCE if key == "loss" else GRAD_NORM_TOLERANCE
            assert actual == pytest.approx(expected, rel=tolerance), (
                f"{stage}: first {key} is {actual:.5g} with {PROCESSES} processes, {expected:.5g} with one "
                f"({actual / expected:.3f}x); a factor near {PROCESSES} means the loss is scaled by the "
                "number of processes")
        if stage in FINAL_LOSS:
            key = FINAL_LOSS[stage]
            assert two.data.metrics[key] == pytest.approx(one.data.metrics[key], rel=LOSS_TOLERANCE), key


def test_only_rank_zero_writes_and_logs(repo):
    log = (repo / "exp_run.log").read_text()
    assert sorted(re.findall(r"Running stage '([^']+)'", log)) == sorted(TRAINING_STAGES)
    # one child run per stage and pipeline execution: rank 1 neither opened a run nor a second parent
    single, distributed = pipeline_runs(repo)[-2:]
    assert {stage: len(children) for stage, children in distributed.items()} == dict.fromkeys(TRAINING_STAGES, 1)
    assert "prepare" in single  # the single-process execution ran prepare; it was not rerun
    client, _ = mlflow_client(repo)
    for stage in TRAINING_STAGES:
        child = distributed[stage][0]
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss")]
        assert sorted(steps) == sorted(set(steps)), f"{stage}: a step was logged twice"
        assert child.data.tags["output_checkpoint_sha256"] == content_sha256(repo / "models" / stage)
        assert [p.name for p in (repo / "checkpoints" / stage).iterdir()] == ["fingerprint"]
        metrics = json.loads((repo / "metrics" / f"{stage}.json").read_text())
        assert metrics["steps"] == yaml.safe_load((repo / "params.yaml").read_text())[stage]["max_steps"]
    # no half-written output left beside any target, and the outputs are the ones dvc.lock records
    assert not [str(p) for p in repo.rglob(".*.partial-*")]
    assert "up to date" in run_command(repo, "dvc", "status", "finetune").stdout

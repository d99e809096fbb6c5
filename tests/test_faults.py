"""Faults: what a kill, a dying tracking server or experiments run at once can and cannot do.

A kill mid-save never yields a checkpoint that is resumed, and a run resumed mid-epoch replays
that epoch's data order; a killed prepare leaves no partial output; a tracking server that dies
mid-run neither stops training, nor loses DVC files, nor stalls the stage on HTTP retries; two
queued experiments at once lose no MLflow run or metric point. (SIGKILL at random moments in every
stage, with byte-identical results afterwards, is scripts/kill_trials.py.)
"""

import json
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import datasets
import pytest
import torch
import yaml
from safetensors.torch import save_file

from stages.common.resume import (
    COMPLETE_FILE,
    MarkCompleteCheckpoints,
    is_complete_checkpoint,
    mark_complete,
    resumable_checkpoint,
)
from stages.common.sandbox import REPO, stage_env

from .conftest import MlflowServer, run_command


def write_checkpoint(directory, step, files=("model", "optimizer", "scheduler", "rng", "state")):
    """A checkpoint as the Trainer writes it: weights, optimizer, scheduler, RNG, then trainer_state.json."""
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    writers = {
        "model": lambda: save_file({"weight": torch.full((32, 32), float(step))}, path / "model.safetensors"),
        "optimizer": lambda: torch.save({"state": {0: torch.ones(32, 32) * step}}, path / "optimizer.pt"),
        "scheduler": lambda: torch.save({"last_epoch": step}, path / "scheduler.pt"),
        "rng": lambda: torch.save({"cpu": torch.random.get_rng_state()}, path / "rng_state.pth"),
        "state": lambda: (path / "trainer_state.json").write_text(json.dumps({"global_step": step})),
    }
    for name in files:
        writers[name]()
    return path


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Ways a kill (or a kill during the deletion of an old checkpoint) can leave checkpoint-20.
FAULTS = {
    # killed while writing the optimizer: no trainer_state.json, no completion record
    "killed mid-save": lambda path: truncate(path / "optimizer.pt"),
    # every Trainer file written, killed before the completion record (e.g. while rotating old ones)
    "not marked complete": lambda path: (path / COMPLETE_FILE).unlink(),
    # a kill during shutil.rmtree of the checkpoint: some files already gone
    "missing optimizer": lambda path: (path / "optimizer.pt").unlink(),
    "missing rng state": lambda path: (path / "rng_state.pth").unlink(),
    "truncated safetensors": lambda path: truncate(path / "model.safetensors"),
    "no trainer_state": lambda path: (path / "trainer_state.json").unlink(),
    "truncated completion record": lambda path: truncate(path / COMPLETE_FILE),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_partial_checkpoint_is_removed_and_the_previous_complete_one_resumed(tmp_path, fault):
    directory = tmp_path / "checkpoints"
    resumable_checkpoint(directory, "f1")
    previous = write_checkpoint(directory, 10)
    mark_complete(previous)
    if fault == "killed mid-save":
        partial = write_checkpoint(directory, 20, files=("model", "optimizer"))
    else:
        partial = write_checkpoint(directory, 20)
        mark_complete(partial)
    assert is_complete_checkpoint(partial) == (fault != "killed mid-save")
    FAULTS[fault](partial)

    assert not is_complete_checkpoint(partial)
    assert resumable_checkpoint(directory, "f1") == str(previous)
    assert not partial.exists()
    assert is_complete_checkpoint(previous)  # untouched


def test_trainer_state_alone_does_not_make_a_checkpoint_complete(tmp_path):
    # What the old check accepted: trainer_state.json parses, yet the weights are cut short.
    path = write_checkpoint(tmp_path, 30)
    truncate(path / "model.safetensors")
    assert json.loads((path / "trainer_state.json").read_text()) == {"global_step": 30}
    assert not is_complete_checkpoint(path)


def test_on_save_marks_the_checkpoint_the_trainer_just_wrote(tmp_path):
    written = write_checkpoint(tmp_path, 40)
    older = write_checkpoint(tmp_path, 30)
    state = SimpleNamespace(global_step=40, is_world_process_zero=True)
    MarkCompleteCheckpoints().on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
    assert is_complete_checkpoint(written)
    assert not is_complete_checkpoint(older)
    recorded = json.loads((written / COMPLETE_FILE).read_text())
    assert recorded == {name: (written / name).stat().st_size for name in
                        ("model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt", "trainer_state.json")}


@pytest.mark.e2e
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


@pytest.mark.e2e
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


def tiny_classifier_run(output_dir, kill_at_step=None):
    """A tiny BERT classifier trained 30 steps (3 epochs) with length-grouped batches, through train_resumably.

    ``kill_at_step``: die at the end of that step, leaving the checkpoints saved before it.
    """
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from stages.common.resume import train_resumably

    class Killed(Exception):
        pass

    class Die(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == kill_at_step:
                raise Killed

    set_seed(7)
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 12, (40,), generator=generator).tolist()
    data = datasets.Dataset.from_dict({
        "input_ids": [torch.randint(1, 50, (n,), generator=generator).tolist() for n in lengths],
        "label": torch.randint(0, 2, (40,), generator=generator).tolist()})

    def pad(rows):
        width = max(len(row["input_ids"]) for row in rows)
        ids = torch.tensor([row["input_ids"] + [0] * (width - len(row["input_ids"])) for row in rows])
        labels = torch.tensor([row["label"] for row in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": labels}

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32,
                                                     max_position_embeddings=16))
    args = TrainingArguments(output_dir=str(output_dir), max_steps=30, per_device_train_batch_size=4, save_steps=5,
                             save_total_limit=2, learning_rate=1e-2, seed=7, data_seed=7, use_cpu=True,
                             report_to="none", train_sampling_strategy="group_by_length", logging_steps=5,
                             disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=pad,
                      callbacks=[Die()] if kill_at_step else [])
    sigint = signal.getsignal(signal.SIGINT)  # train_resumably's Ctrl-C handler stays set when it dies
    try:
        train_resumably(trainer, output_dir, "tiny")
    except Killed:
        return None
    finally:
        signal.signal(signal.SIGINT, sigint)
    return {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}


def test_resume_after_the_first_epoch_draws_the_same_length_grouped_order(tmp_path):
    # group_by_length draws each epoch's order from the global torch RNG when the epoch starts; a
    # run resumed mid-epoch must draw the order the uninterrupted run drew, not a new one.
    reference = tiny_classifier_run(tmp_path / "reference")
    assert tiny_classifier_run(tmp_path / "resumed", kill_at_step=17) is None
    assert is_complete_checkpoint(tmp_path / "resumed" / "checkpoint-15")  # in the second epoch (10 steps each)
    resumed = tiny_classifier_run(tmp_path / "resumed")
    assert all(torch.equal(reference[name], resumed[name]) for name in reference)


@pytest.mark.e2e
def test_two_queued_experiments_at_once_lose_no_run_and_no_metric():
    # scripts/queue_trial.py on prepare and pretrain_unsup: two experiments from `dvc queue start
    # -j 2` write to one SQLite store at the same time; it exits 1 on any lost run or metric point.
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "queue_trial.py"), "--stages", "prepare",
                             "pretrain_unsup", "--param", "pretrain_unsup.learning_rate", "--values", "0.001", "0.002"],
                            env=stage_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert "experiments ran at the same time: yes" in result.stdout
    assert "total: runs expected 6, found 6;" in result.stdout

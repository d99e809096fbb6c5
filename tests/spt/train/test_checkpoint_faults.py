"""Checkpoint faults (spt/train/resume.py): a kill mid-save never yields a checkpoint that is resumed, nor does one
whose file has the recorded size but other content; a checkpoint record is published durably; a full disk
mid-checkpoint removes the partial checkpoint, says so once, and the rerun resumes; a run resumed mid-epoch replays
that epoch's data order.

Killed stages, a full disk in a real stage, a dying tracking server and experiments run at once:
tests/e2e/test_faults.py; SIGKILL at random moments in every stage, with byte-identical results afterwards:
tools/kill_trials.py.
"""

import errno
import json
import signal
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from safetensors.torch import save_file

from spt.errors import DiskFullError
from spt.hashing import content_sha256
from spt.train.resume import (
    COMPLETE_FILE,
    MarkCompleteCheckpoints,
    checkpoint_bytes,
    checkpoint_problem,
    is_complete_checkpoint,
    mark_complete,
    resumable_checkpoint,
)
from tests.support import SyncLog


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


def corrupt_same_size(path):
    """Bytes that never reached the disk read back as zeros after a power cut: the size is right, the content not."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64) if any(data[middle:middle + 64]) else b"\xff" * 64
    path.write_bytes(bytes(data))


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
    # a power cut after the record was written: every size right, a block of the weights or optimizer lost
    "corrupted optimizer, same size": lambda path: corrupt_same_size(path / "optimizer.pt"),
    "corrupted safetensors, same size": lambda path: corrupt_same_size(path / "model.safetensors"),
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
    assert recorded == {name: {"size": (written / name).stat().st_size, "sha256": content_sha256(written / name)}
                        for name in ("model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt",
                                     "trainer_state.json")}


def test_a_corrupt_checkpoint_is_named_in_the_log_and_the_previous_one_resumed(tmp_path, caplog):
    resumable_checkpoint(tmp_path, "f1")
    previous, latest = write_checkpoint(tmp_path, 10), write_checkpoint(tmp_path, 20)
    mark_complete(previous)
    mark_complete(latest)
    corrupt_same_size(latest / "optimizer.pt")
    with caplog.at_level("WARNING", logger="spt.train.resume"):
        assert resumable_checkpoint(tmp_path, "f1") == str(previous)
    assert f"not resuming {latest}: optimizer.pt has the recorded size but not the recorded content" in caplog.text


def test_a_size_only_record_of_an_older_version_is_not_resumed(tmp_path):
    path = write_checkpoint(tmp_path, 10)
    sizes = {name.name: name.stat().st_size for name in path.iterdir()}
    (path / COMPLETE_FILE).write_text(json.dumps(sizes))
    assert checkpoint_problem(path) == f"{COMPLETE_FILE} records no content hashes (an older format)"


def test_a_checkpoint_record_is_published_after_its_files_are_fsynced(tmp_path, monkeypatch):
    checkpoint = write_checkpoint(tmp_path, 10)
    log = SyncLog(monkeypatch)
    mark_complete(checkpoint)
    files = {str(path) for path in checkpoint.iterdir() if path.name != COMPLETE_FILE}
    record, staging = checkpoint / COMPLETE_FILE, checkpoint / f"{COMPLETE_FILE}.partial"
    synced_files = log.events[:len(files)]
    assert {event[1] for event in synced_files} == files
    assert log.events[len(files):] == [
        ("fsync", str(checkpoint)), ("fsync", str(staging)), ("replace", str(staging), str(record)),
        ("fsync", str(checkpoint)), ("fsync", str(tmp_path))]


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

    from spt.train.resume import train_resumably

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


def full_disk_at(suffix, real_save):
    """torch.save that fills the disk while writing the file whose path ends with ``suffix``: part of it is
    written, then ENOSPC."""
    def save(obj, f, *args, **kwargs):
        if str(f).endswith(suffix):
            Path(f).write_bytes(bytes(1000))
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)
    return save


def test_a_full_disk_mid_checkpoint_removes_the_partial_one_and_the_rerun_resumes(tmp_path, monkeypatch, caplog):
    reference = tiny_classifier_run(tmp_path / "reference")
    run = tmp_path / "full"
    real_save = torch.save
    monkeypatch.setattr(torch, "save", full_disk_at("checkpoint-15/optimizer.pt", real_save))
    with pytest.raises(DiskFullError) as raised:
        tiny_classifier_run(run)
    message = str(raised.value)
    assert message.startswith(f"the disk is full: writing {run} ({run}/checkpoint-15/optimizer.pt) failed, ")
    assert " free on that filesystem; a checkpoint of this model takes about " in message
    assert "(weights " in message and "+ optimizer state, about 3x the weights)" in message
    assert "removed the partial checkpoint-15; checkpoint-10 is complete and kept: the rerun resumes from it" in message
    assert "free space there" in message
    assert sorted(path.name for path in run.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    assert is_complete_checkpoint(run / "checkpoint-10")

    monkeypatch.setattr(torch, "save", real_save)  # space freed
    with caplog.at_level("INFO", logger="spt.train.resume"):
        resumed = tiny_classifier_run(run)
    assert f"resuming from {run}/checkpoint-10" in caplog.text
    assert reference and all(torch.equal(reference[name], resumed[name]) for name in reference)


def test_checkpoint_size_is_the_weights_and_two_optimizer_moments():
    model = torch.nn.Linear(10, 10)  # 110 float32 parameters: 440 bytes
    assert checkpoint_bytes(model) == 3 * 440


def test_resume_after_the_first_epoch_draws_the_same_length_grouped_order(tmp_path):
    # group_by_length draws each epoch's order from the global torch RNG when the epoch starts; a
    # run resumed mid-epoch must draw the order the uninterrupted run drew, not a new one.
    reference = tiny_classifier_run(tmp_path / "reference")
    assert tiny_classifier_run(tmp_path / "resumed", kill_at_step=17) is None
    assert is_complete_checkpoint(tmp_path / "resumed" / "checkpoint-15")  # in the second epoch (10 steps each)
    resumed = tiny_classifier_run(tmp_path / "resumed")
    assert reference and all(torch.equal(reference[name], resumed[name]) for name in reference)



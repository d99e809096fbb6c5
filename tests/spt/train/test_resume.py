"""Resumable checkpoints are keyed by fingerprint; incomplete ones are never resumed."""

import json

from spt.train.resume import (
    clear_checkpoints,
    fingerprint,
    mark_complete,
    resumable_checkpoint,
)


def make_checkpoint(directory, step, complete=True):
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        mark_complete(path)
    return path


def test_fingerprint_changes_with_params_and_inputs():
    base = fingerprint({"lambda": 1.0}, {"data": "abc"})
    assert base == fingerprint({"lambda": 1.0}, {"data": "abc"})
    assert base != fingerprint({"lambda": 0.5}, {"data": "abc"})
    assert base != fingerprint({"lambda": 1.0}, {"data": "abd"})


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    directory = tmp_path / "ckpt"
    assert resumable_checkpoint(directory, "f1") is None  # creates the directory and its marker
    make_checkpoint(directory, 2)
    make_checkpoint(directory, 10)
    make_checkpoint(directory, 12, complete=False)  # killed while saving
    assert resumable_checkpoint(directory, "f1") == str(directory / "checkpoint-10")
    assert not (directory / "checkpoint-12").exists()


def test_checkpoint_of_another_run_is_never_resumed(tmp_path):
    directory = tmp_path / "ckpt"
    resumable_checkpoint(directory, "f1")
    make_checkpoint(directory, 4)
    assert resumable_checkpoint(directory, "f2") is None
    assert not (directory / "checkpoint-4").exists()
    assert (directory / "fingerprint").read_text().strip() == "f2"


def test_clear_keeps_only_the_fingerprint(tmp_path):
    directory = tmp_path / "ckpt"
    resumable_checkpoint(directory, "f1")
    make_checkpoint(directory, 4)
    clear_checkpoints(directory)
    assert [p.name for p in directory.iterdir()] == ["fingerprint"]

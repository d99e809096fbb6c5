"""Outputs are published durably (spt/outputs.py): staged, every file and directory fsynced, renamed into place,
then the parent directory fsynced, so after a power cut an output is the previous one or the whole new one. A full
disk while writing one is one message; the staged part is removed and the previous output stays.

A checkpoint's record, published the same way: tests/spt/train/test_checkpoint_faults.py."""

import errno

import pytest

from spt.errors import DiskFullError
from spt.outputs import atomic_output, is_disk_full
from tests.support import SyncLog


def test_an_output_is_written_fsynced_renamed_then_its_directory_fsynced(tmp_path, monkeypatch):
    log = SyncLog(monkeypatch)
    target = tmp_path / "metrics.json"
    with atomic_output(target) as staging:
        log.write(staging, "{}")
    assert log.events == [("write", str(staging)), ("fsync", str(staging)), ("replace", str(staging), str(target)),
                          ("fsync", str(tmp_path))]


def test_an_output_directory_is_fsynced_file_by_file_and_directory_by_directory_before_the_rename(tmp_path,
                                                                                                 monkeypatch):
    log = SyncLog(monkeypatch)
    target = tmp_path / "models" / "finetune"
    with atomic_output(target) as staging:
        log.write(staging / "model.safetensors", "w")
        log.write(staging / "tokenizer" / "vocab.txt", "v")
    writes, syncs, rest = log.events[:2], log.events[2:6], log.events[6:]
    assert [event[0] for event in writes] == ["write", "write"]
    assert sorted(syncs) == sorted(("fsync", str(path)) for path in (
        staging / "model.safetensors", staging / "tokenizer" / "vocab.txt", staging / "tokenizer", staging))
    assert syncs[-1] == ("fsync", str(staging))  # the directory after the names it holds
    assert rest == [("replace", str(staging), str(target)), ("fsync", str(target.parent))]


def test_a_full_disk_leaves_the_previous_output_as_it_was(tmp_path):
    target = tmp_path / "models" / "finetune"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"previous weights")
    with pytest.raises(DiskFullError) as raised, atomic_output(target) as staging:
        staging.mkdir()
        (staging / "model.safetensors").write_bytes(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device", str(staging / "model.safetensors"))
    assert str(raised.value).startswith(f"the disk is full: writing {target} (")
    assert (target / "model.safetensors").read_bytes() == b"previous weights"
    assert [path.name for path in target.parent.iterdir()] == ["finetune"]  # no staging directory left


@pytest.mark.parametrize("error, full", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, ... })"), True),  # safetensors
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 149641600 vs 149641488"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (RuntimeError("CUDA out of memory"), False),
])
def test_what_reads_as_a_full_disk(tmp_path, monkeypatch, error, full):
    monkeypatch.setattr("spt.outputs.free_bytes", lambda path: 4096)  # torch's writer drops the errno
    assert is_disk_full(error, tmp_path) == full
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = error
    assert is_disk_full(wrapped, tmp_path) == full
    monkeypatch.setattr("spt.outputs.free_bytes", lambda path: 10 * 2**30)
    assert is_disk_full(RuntimeError("unexpected pos 1 vs 2"), tmp_path) is False  # space left: another fault

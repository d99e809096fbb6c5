"""Outputs are published durably (spt/outputs.py): staged, every file and directory fsynced, renamed into place,
then the parent directory fsynced, so after a power cut an output is the previous one or the whole new one.

A checkpoint's record, published the same way: tests/spt/train/test_checkpoint_faults.py."""

from spt.outputs import atomic_output
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

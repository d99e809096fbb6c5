"""The stale-lock check (make lock-check): code, params and commands against dvc.lock; its parts on constructed
input. On a lock a real `dvc repro` wrote: tests/e2e/test_lock_check_on_a_real_lock.py."""

from tools.lock_check import stale_commands, stale_dependencies


def test_changed_and_missing_stages():
    lock = {"stages": {"first": {"cmd": "python -m stages.first"}}}
    assert stale_commands({"first": "python -m stages.first"}, lock) == []
    assert stale_commands({"first": "python -m stages.first --fast", "second": "x"}, lock) == [
        "first: command changed: dvc.lock has 'python -m stages.first', dvc.yaml 'python -m stages.first --fast'",
        "second: stage not in dvc.lock"]


def test_outputs_of_other_stages_are_not_checked():
    status = {"train": [{"changed deps": {"data/processed": "deleted", "spt": "modified",
                                          "params.yaml": {"train.rate": "modified"}}},
                        {"changed outs": {"models/train": "deleted"}}]}
    assert stale_dependencies(status, outputs={"data/processed", "models/train"}) == [
        "train: param train.rate (params.yaml) modified", "train: dependency spt modified"]

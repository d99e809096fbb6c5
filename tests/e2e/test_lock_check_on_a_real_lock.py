"""The stale-lock check (make lock-check) on a two-stage DVC project whose dvc.lock a real `dvc repro` wrote.
Its parts on constructed input: tests/tools/test_lock_check.py."""

import pytest
import yaml

from tests.support import run_command
from tools.lock_check import check
from tools.sandbox import git

pytestmark = pytest.mark.e2e

PIPELINE = {"stages": {
    "first": {"cmd": "cp stages/first.py first.out", "deps": ["stages/first.py"], "params": ["seed", "first.size"],
              "outs": ["first.out"]},
    "second": {"cmd": "cp first.out second.out", "deps": ["first.out", "stages"], "params": ["second"],
               "outs": ["second.out"]},
}}
PARAMS = {"seed": 1, "first": {"size": 2, "unused": 3}, "second": {"rate": 0.5}}


def locked_repository(root):
    """A two-stage DVC project whose dvc.lock was just written by `dvc repro`."""
    (root / "stages").mkdir(parents=True)
    (root / "stages" / "first.py").write_text("print('first')\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    git(root, "init", "-q")
    run_command(root, "dvc", "init", "-q")
    run_command(root, "dvc", "repro", "-q")
    return root


def test_a_fresh_lock_passes_and_every_stale_entry_is_named(tmp_path):
    root = locked_repository(tmp_path)
    assert check(root) == []
    for output in ("first.out", "second.out"):  # a clone has no outputs: not a stale lock
        (root / output).unlink()
    assert check(root) == []
    (root / "stages" / "first.py").write_text("print('changed')\n")
    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "seed": 2, "second": {"rate": 0.1}}))
    assert check(root) == ["first: param seed (params.yaml) modified",
                           "first: dependency stages/first.py modified",
                           "second: param second (params.yaml) modified",
                           "second: dependency stages modified"]


def test_params_the_stages_do_not_read_are_ignored(tmp_path):
    root = locked_repository(tmp_path)
    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "first": {"size": 2, "unused": 4}}))
    assert check(root) == []

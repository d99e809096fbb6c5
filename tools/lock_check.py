"""Check that dvc.lock is not stale: every stage's code and params dependencies match the tree.

dvc.lock records, for each stage, the hash of every dependency and the value of every param it
read. If code under stages/ or a value in params.yaml changed after the lock was written, the
committed lock (and the metrics and plots committed with it) no longer describe this commit.
This check asks DVC (`dvc status` semantics) which dependencies differ from the lock and reports
every one that is code or params. Dependencies that are outputs of other stages (data/processed,
models/...) are not checked: a fresh checkout does not have them. A stage whose command differs
from the lock, or that the lock lacks, is stale too, and so is a lock entry of a stage that dvc.yaml no longer
has. `make lock-check` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
FIX = "run `make repro` and commit dvc.lock with the metrics and plots it wrote"


def stale_dependencies(status: dict[str, list[Any]], outputs: set[str]) -> list[str]:
    """One line per stage and code or params dependency that differs from the lock.

    ``status``: what ``dvc status --json`` (``Repo.status()``) returns; ``outputs``: paths that
    stages write, whose changes are ignored.
    """
    lines = []
    for stage, entries in sorted(status.items()):
        for entry in entries:
            if isinstance(entry, str):  # "changed checksum", "always changed", ...
                lines.append(f"{stage}: {entry}")
                continue
            for path, change in sorted(entry.get("changed deps", {}).items()):
                if isinstance(change, dict):  # a params file: key -> change
                    lines.extend(f"{stage}: param {key} ({path}) {what}" for key, what in sorted(change.items()))
                elif path not in outputs:
                    lines.append(f"{stage}: dependency {path} {change}")
    return lines


def stale_commands(stages: dict[str, str], lock: dict[str, Any]) -> list[str]:
    """One line per stage (name -> command, from dvc.yaml) missing from the lock or run differently, and one per
    lock entry of a stage dvc.yaml no longer has (DVC keeps such entries; they describe nothing that runs)."""
    recorded = lock.get("stages", {})
    lines = [f"{name}: in dvc.lock but no longer a stage of dvc.yaml (remove its entry)"
             for name in sorted(set(recorded) - set(stages))]
    for name, command in sorted(stages.items()):
        if name not in recorded:
            lines.append(f"{name}: stage not in dvc.lock")
        elif recorded[name].get("cmd") != command:
            lines.append(f"{name}: command changed: dvc.lock has {recorded[name].get('cmd')!r}, "
                         f"dvc.yaml {command!r}")
    return lines


def check(root: Path) -> list[str]:
    """Every stale entry of ``root``'s dvc.lock (empty when the lock matches the tree)."""
    from dvc.repo import Repo

    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return [f"{lock_file}: missing"]
    lock = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    with contextlib.chdir(root), Repo() as repo:  # stage names are relative to the working directory
        stages = {stage.addressing: stage.cmd for stage in repo.index.stages}
        outputs = {str(out.def_path) for stage in repo.index.stages for out in stage.outs}
        status = repo.status()
    return stale_commands(stages, lock) + stale_dependencies(status, outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="repository root (default: this one)")
    args = parser.parse_args(argv)
    stale = check(args.repo)
    if stale:
        print(f"lock-check: FAILED, dvc.lock is stale ({len(stale)} entries differ from the working tree):")
        print("\n".join(f"  {line}" for line in stale))
        print(f"lock-check: {FIX}")
        return 1
    print("lock-check: every code and params dependency in dvc.lock matches the working tree")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproducibility gate: run the tiny profile twice in clean copies and compare every output hash.

Each copy is a fresh repository (tracked files only, tests/tiny_params.yaml as params.yaml, the
tiny rotten_tomatoes sample as data) in a temporary directory; both run the whole pipeline with
`dvc repro` at the same time. The check fails, naming each output whose hash in dvc.lock differs,
unless every output of every stage is byte-identical. `make repro-check` runs it; so does CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from stages.common.sandbox import stage_env, tiny_repository, write_tiny_data


def output_hashes(repo: Path) -> dict[str, str]:
    """``stage: path`` -> the hash dvc.lock records for that output."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {f"{stage}: {out['path']}": out.get("md5") or out.get("hash", "")
            for stage, spec in lock["stages"].items() for out in spec.get("outs", [])}


def differences(first: dict[str, str], second: dict[str, str]) -> list[str]:
    """One line per output that is missing from a run or whose hash differs."""
    lines = []
    for name in sorted(first.keys() | second.keys()):
        if first.get(name) != second.get(name):
            lines.append(f"{name}: {first.get(name, 'missing')} != {second.get(name, 'missing')}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the two temporary copies for inspection")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scratch = Path(tempfile.mkdtemp(prefix="repro-check-"))
    try:
        write_tiny_data(scratch / "data")
        repos = [tiny_repository(scratch / name, scratch / "data") for name in ("first", "second")]
        started = time.monotonic()
        runs = [subprocess.Popen(["dvc", "repro"], cwd=repo, env=stage_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for repo in repos]
        logs = [run.communicate()[0] for run in runs]
        for repo, run, log in zip(repos, runs, logs):
            if run.returncode != 0:
                print(f"repro-check: `dvc repro` failed in {repo} (exit {run.returncode}):\n{log[-4000:]}")
                return 1
        first, second = (output_hashes(repo) for repo in repos)
        print(f"repro-check: two clean runs of the tiny profile, {len(first)} outputs, "
              f"{time.monotonic() - started:.0f} s")
        differing = differences(first, second)
        if differing:
            print(f"repro-check: FAILED, {len(differing)} outputs differ between two runs of the same inputs:")
            print("\n".join(f"  {line}" for line in differing))
            return 1
        print("repro-check: every output hash in dvc.lock is identical")
        return 0
    finally:
        if args.keep:
            print(f"repro-check: copies kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Wall time of the whole pipeline on a GPU profile (benchmarks/gpu_profile.yaml over params.yaml).

Copies the repository (tracked files) to a temporary directory, applies the profile, runs
`dvc repro` and prints each stage's wall time (from one "Running stage" line to the next) and
the total. Same data and model as the default run, so it needs no network.

    .venv/bin/python benchmarks/gpu_pipeline.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tools.sandbox import REPO, copy_repository, stage_env

PROFILE = REPO / "benchmarks" / "gpu_profile.yaml"


def apply_profile(params_file: Path, profile: Path) -> None:
    params = yaml.safe_load(params_file.read_text())
    for section, values in yaml.safe_load(profile.read_text()).items():
        params[section].update(values)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", type=Path, default=PROFILE, help="params overrides (default: %(default)s)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="gpu-pipeline-") as scratch:
        repo = copy_repository(Path(scratch) / "repo")
        apply_profile(repo / "params.yaml", args.profile.resolve())
        start = time.perf_counter()
        marks: list[tuple[str, float]] = []
        process = subprocess.Popen(["dvc", "repro"], cwd=repo, env=stage_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        for line in process.stdout:
            tail = (tail + [line])[-40:]
            found = re.search(r"Running stage '([^']+)'", line)
            if found:
                marks.append((found.group(1), time.perf_counter()))
        process.wait()
        total = time.perf_counter() - start
        if process.returncode != 0:
            print("".join(tail))
            print(f"gpu_pipeline: dvc repro failed (exit {process.returncode})")
            return 1
        evaluation = json.loads((repo / "metrics" / "evaluate.json").read_text())
        print(f"\n{'stage':<40} {'seconds':>8}")
        for (name, began), (_, ended) in zip(marks, marks[1:] + [("end", start + total)], strict=True):
            print(f"{name:<40} {ended - began:>8.1f}")
        print(f"{'whole pipeline (dvc repro)':<40} {total:>8.1f}")
        print(f"test accuracy {100 * evaluation['accuracy']:.2f}%, macro-F1 {100 * evaluation['macro_f1']:.2f}%")
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproducibility gate: outputs depend on inputs and params only, not on where or how the pipeline runs.

Two checks, run at the same time in clean temporary copies of the repository (tracked files only):

1. The tiny profile (tests/tiny_params.yaml as params.yaml, the tiny rotten_tomatoes sample as
   data), whole pipeline, twice: the copies sit at paths of different lengths and run in different
   environments (HF_HUB_OFFLINE set in one only; different TMPDIR and HOME). Same machine, so
   every output hash in the two dvc.lock files must be identical, and every metric equal.
2. `dvc repro prepare` with the repository's own params.yaml: its outputs must have the hashes the
   committed dvc.lock records (prepare does no floating-point training, so this holds on any
   machine), and metrics/prepare.json must match the committed one within --rel-tol.

The check fails naming each output and each metric that differs (with both values). `make
repro-check` runs it; so does CI. `--compare-metrics OTHER` only compares this repository's
metrics with another checkout's (e.g. a fresh default `make repro` elsewhere) within --rel-tol.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tools.sandbox import REPO, copy_repository, stage_env, tiny_repository, write_tiny_data

# Across machines, float results agree only to about 1e-7 (summation order in BLAS and threads,
# CPU instruction sets); on one machine they are identical.
ACROSS_MACHINES = 1e-5
DEFAULT_STAGE = "prepare"


def output_hashes(repo: Path, stage: str | None = None) -> dict[str, str]:
    """``stage: path`` -> the hash dvc.lock records for that output (of every stage, or of ``stage``)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {f"{name}: {out['path']}": out.get("md5") or out.get("hash", "")
            for name, spec in lock["stages"].items() if stage in (None, name) for out in spec.get("outs", [])}


def differences(first: dict[str, str], second: dict[str, str]) -> list[str]:
    """One line per output that is missing from a run or whose hash differs."""
    lines = []
    for name in sorted(first.keys() | second.keys()):
        if first.get(name) != second.get(name):
            lines.append(f"{name}: {first.get(name, 'missing')} != {second.get(name, 'missing')}")
    return lines


def read_metrics(repo: Path, pattern: str = "metrics/**/*.json") -> dict[str, Any]:
    """``file: key.subkey`` -> value, for every JSON metrics file under ``repo`` matching ``pattern``."""
    values: dict[str, Any] = {}
    for path in sorted(repo.glob(pattern)):
        _flatten(json.loads(path.read_text(encoding="utf-8")), f"{path.relative_to(repo)}: ", values)
    return values


def _flatten(value: Any, prefix: str, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}{key}.", into)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}{index}.", into)
    else:
        into[prefix.rstrip(".")] = value


def metric_differences(first: dict[str, Any], second: dict[str, Any], rel_tol: float = 0.0) -> list[str]:
    """One line per metric missing from one side or differing by more than ``rel_tol`` (relative,
    with an absolute floor of ``rel_tol * 1e-3`` for values near zero); 0 asks for equality."""
    lines = []
    for name in sorted(first.keys() | second.keys()):
        a, b = first.get(name, "missing"), second.get(name, "missing")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if a == b or (numbers and math.isclose(a, b, rel_tol=rel_tol, abs_tol=rel_tol * 1e-3)):
            continue
        relative = f" (relative difference {abs(a - b) / max(abs(a), abs(b)):.1e})" if numbers else ""
        lines.append(f"{name}: {a!r} != {b!r}{relative}")
    return lines


def environments(scratch: Path) -> list[dict[str, str]]:
    """Two environments that must not change any output: offline or not, other temp and home dirs."""
    environments = []
    for name, offline in (("a", True), ("another-longer-name", False)):
        env = stage_env(TMPDIR=str(scratch / f"tmp-{name}"), HOME=str(scratch / f"home-{name}"))
        env.pop("HF_HUB_OFFLINE", None)
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        for directory in ("TMPDIR", "HOME"):
            Path(env[directory]).mkdir(parents=True)
        environments.append(env)
    return environments


def start(command: list[str], repo: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def tiny_profile_problems(repos: list[Path]) -> list[str]:
    """Outputs and metrics that differ between the two tiny-profile runs (same machine: exact)."""
    first, second = (output_hashes(repo) for repo in repos)
    lines = [f"output {line}" for line in differences(first, second)]
    lines += [f"metric {line}" for line in metric_differences(*(read_metrics(repo) for repo in repos))]
    return lines


def default_prepare_problems(repo: Path, rel_tol: float) -> list[str]:
    """prepare's fresh outputs against the committed dvc.lock, its report against metrics/prepare.json."""
    committed, fresh = output_hashes(REPO, DEFAULT_STAGE), output_hashes(repo, DEFAULT_STAGE)
    report = f"{DEFAULT_STAGE}: metrics/{DEFAULT_STAGE}.json"
    lines = [f"output {line}" for line in differences({k: v for k, v in committed.items() if k != report},
                                                       {k: v for k, v in fresh.items() if k != report})]
    pattern = f"metrics/{DEFAULT_STAGE}.json"
    lines += [f"metric {line}" for line in metric_differences(read_metrics(REPO, pattern), read_metrics(repo, pattern),
                                                              rel_tol)]
    return lines


def run_gate(scratch: Path, rel_tol: float, default: bool) -> int:
    write_tiny_data(scratch / "data")
    # Paths of different lengths: anything that hashes an absolute path shows up as a difference.
    tiny = [tiny_repository((scratch / name / "repo"), scratch / "data")
            for name in ("a", "a-copy-at-a-longer-path")]
    started = time.monotonic()
    runs = {repo: start(["dvc", "repro"], repo, env) for repo, env in zip(tiny, environments(scratch), strict=True)}
    if default:
        default_repo = copy_repository(scratch / "default")
        runs[default_repo] = start(["dvc", "repro", DEFAULT_STAGE], default_repo, stage_env())
    logs = {repo: run.communicate()[0] for repo, run in runs.items()}
    for repo, run in runs.items():
        if run.returncode != 0:
            print(f"repro-check: `dvc repro` failed in {repo} (exit {run.returncode}):\n{logs[repo][-4000:]}")
            return 1
    failed = False
    problems = tiny_profile_problems(tiny)
    print(f"repro-check: two runs of the tiny profile at different paths and environments, "
          f"{len(output_hashes(tiny[0]))} outputs{' and the default prepare' if default else ''}: "
          f"{time.monotonic() - started:.0f} s")
    if problems:
        failed = True
        print(f"repro-check: FAILED, {len(problems)} outputs/metrics differ between two runs of the same inputs "
              "on one machine (they must be identical; first copy != second copy):")
        print("\n".join(f"  {line}" for line in problems))
    else:
        print("repro-check: every output hash and every metric is identical")
    if default:
        problems = default_prepare_problems(default_repo, rel_tol)
        if problems:
            failed = True
            print(f"repro-check: FAILED, a fresh `dvc repro {DEFAULT_STAGE}` with params.yaml differs from the "
                  f"committed dvc.lock / metrics (tolerance {rel_tol:g} for metrics; committed != fresh):")
            print("\n".join(f"  {line}" for line in problems))
            print("  If prepare's code or params changed since dvc.lock was written (make lock-check), run "
                  "`make repro` and commit dvc.lock; otherwise prepare is not reproducible.")
        else:
            print(f"repro-check: a fresh `dvc repro {DEFAULT_STAGE}` matches the committed dvc.lock "
                  f"(outputs exact, metrics within {rel_tol:g})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies for inspection")
    parser.add_argument("--no-default", action="store_true", help="skip check 2 (the default prepare)")
    parser.add_argument("--rel-tol", type=float, default=ACROSS_MACHINES,
                        help=f"relative tolerance for metrics across machines (default {ACROSS_MACHINES:g})")
    parser.add_argument("--compare-metrics", type=Path, metavar="OTHER",
                        help="only compare metrics/**/*.json here with OTHER's, within --rel-tol")
    args = parser.parse_args(argv)
    if args.compare_metrics:
        lines = metric_differences(read_metrics(REPO), read_metrics(args.compare_metrics), args.rel_tol)
        print("\n".join(lines) or f"repro-check: every metric agrees within {args.rel_tol:g}")
        return 1 if lines else 0
    scratch = Path(tempfile.mkdtemp(prefix="repro-check-"))
    try:
        return run_gate(scratch, args.rel_tol, default=not args.no_default)
    finally:
        if args.keep:
            print(f"repro-check: copies kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""SIGKILL each stage at random moments; after a rerun its outputs must be byte-identical.

On the tiny profile (tests/tiny_params.yaml, made longer as in tests/test_resume.py) in a temporary
copy of the repository, this runs the chain prepare -> pretrain_unsup -> pretrain_sup -> finetune
once uninterrupted (the reference, timing each stage), then for each stage runs ``--trials``
trials: start the stage, SIGKILL it (its whole process group) after a delay drawn uniformly over
that stage's uninterrupted duration (seeded by ``--seed``; so kills land in start-up, mid-step and
during checkpoint saves), look at what is on disk, run the stage again and compare.

A trial passes when
  - training stages: nothing half-written sits at models/<stage> after the kill (absent, or the
    complete reference), and the rerun (resuming from the last complete checkpoint, if any)
    gives a model.safetensors and metrics file byte-identical to the reference;
  - prepare: data/processed after the kill is absent or the complete previous output (same
    content hash), never partial, and the rerun gives byte-identical data/processed and report.

Prints one row per trial and exits 1 if any trial failed.

    nice -n 19 .venv/bin/python -m tools.kill_trials --trials 4
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from spt.hashing import content_sha256
from spt.train.resume import is_complete_checkpoint
from tools.sandbox import TRAINING_STAGES, longer_runs, stage_env, tiny_repository

RESUMED = re.compile(r"resuming from \S*checkpoint-(\d+)")


def build_repository(directory: Path, steps: int) -> Path:
    """A repository copy with the tiny profile, ``steps`` optimizer steps per training stage."""
    repo = tiny_repository(directory)
    longer_runs(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for stage in TRAINING_STAGES:
        params[stage]["max_steps"] = steps
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def start(repo: Path, stage: str, capture: bool) -> subprocess.Popen:
    """The stage as its own process group (a kill takes its children too); stderr piped if ``capture``."""
    return subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=repo, env=stage_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
                            text=True, start_new_session=True)


def run_stage(repo: Path, stage: str) -> tuple[int, str, float]:
    """Run a stage to the end: (exit status, stderr, seconds)."""
    began = time.monotonic()
    process = start(repo, stage, capture=True)
    _, stderr = process.communicate()
    return process.returncode, stderr, time.monotonic() - began


def kill_after(repo: Path, stage: str, delay: float) -> bool:
    """Start ``stage``, SIGKILL its process group after ``delay`` s; False if it had already ended."""
    process = start(repo, stage, capture=False)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def snapshot(repo: Path, stage: str) -> dict[str, str | None]:
    """What a rerun must reproduce: the weights and metrics file (training) or data and report (prepare)."""
    if stage == "prepare":
        processed = repo / "data" / "processed"
        return {"data": content_sha256(processed) if processed.is_dir() else None,
                "report": sha256(repo / "reports" / "prepare.json")}
    return {"weights": sha256(repo / "models" / stage / "model.safetensors"),
            "metrics": sha256(repo / "metrics" / f"{stage}.json")}


def describe_training_disk(repo: Path, stage: str, reference: dict) -> tuple[str, bool]:
    """(what the kill left, whether models/<stage> is clean: absent or the complete reference)."""
    checkpoints = sorted(repo.glob(f"checkpoints/{stage}/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p.name.split("-")[1] for p in checkpoints if is_complete_checkpoint(p)]
    partial = [p.name.split("-")[1] for p in checkpoints if not is_complete_checkpoint(p)]
    parts = [f"ckpt {complete[-1]} complete" if complete else "no complete ckpt"]
    if partial:
        parts.append(f"ckpt {','.join(partial)} partial")
    model = repo / "models" / stage
    clean = True
    if model.exists():
        clean = snapshot(repo, stage)["weights"] == reference["weights"]
        parts.append("model complete" if clean else "MODEL HALF-WRITTEN")
    if list(model.parent.glob(f".{stage}.partial-*")):
        parts.append("hidden model staging")
    return "; ".join(parts), clean


def describe_prepare_disk(repo: Path, reference: dict) -> tuple[str, bool]:
    processed = repo / "data" / "processed"
    staging = " + hidden staging" if list(processed.parent.glob(".processed.partial-*")) else ""
    if not processed.exists():
        return f"data/processed absent{staging}", True
    if content_sha256(processed) == reference["data"]:
        return f"data/processed complete (previous){staging}", True
    return f"data/processed PARTIAL{staging}", False


def training_trial(repo: Path, stage: str, delay: float, reference: dict) -> dict:
    shutil.rmtree(repo / "models" / stage, ignore_errors=True)  # whatever sits there afterwards, the killed run wrote
    killed = kill_after(repo, stage, delay)
    on_disk, clean = describe_training_disk(repo, stage, reference)
    status, stderr, _ = run_stage(repo, stage)
    resumed = RESUMED.search(stderr)
    row = {"kill": f"{delay:.2f}" if killed else f"{delay:.2f} (ended first)", "disk": on_disk,
           "resumed": resumed.group(1) if resumed else "-"}
    if status != 0:
        return {**row, "outcome": f"error (exit {status}): {stderr.strip().splitlines()[-1:]}"}
    if not clean:
        return {**row, "outcome": "DIFFERENT (half-written model after the kill)"}
    different = [name for name, value in snapshot(repo, stage).items() if value != reference[name]]
    return {**row, "outcome": f"DIFFERENT ({', '.join(different)})" if different else "identical"}


def prepare_trial(repo: Path, delay: float, reference: dict) -> dict:
    killed = kill_after(repo, "prepare", delay)
    on_disk, clean = describe_prepare_disk(repo, reference)
    status, stderr, _ = run_stage(repo, "prepare")
    row = {"kill": f"{delay:.2f}" if killed else f"{delay:.2f} (ended first)", "disk": on_disk, "resumed": "-"}
    if status != 0:
        return {**row, "outcome": f"error (exit {status}): {stderr.strip().splitlines()[-1:]}"}
    if not clean:
        return {**row, "outcome": "DIFFERENT (partial data/processed after the kill)"}
    different = [name for name, value in snapshot(repo, "prepare").items() if value != reference[name]]
    leftovers = list((repo / "data").glob(".processed.partial-*"))
    if different or leftovers:
        return {**row, "outcome": f"DIFFERENT ({', '.join(different) or 'staging left behind'})"}
    return {**row, "outcome": "identical"}


def print_table(rows: list[dict]) -> None:
    columns = [("stage", "stage"), ("trial", "trial"), ("kill", "kill at (s)"), ("disk", "on disk after the kill"),
               ("resumed", "resumed from step"), ("outcome", "outcome")]
    widths = {key: max(len(title), *(len(str(row[key])) for row in rows)) for key, title in columns}
    print(" | ".join(title.ljust(widths[key]) for key, title in columns))
    print("-|-".join("-" * widths[key] for key, _ in columns))
    for row in rows:
        print(" | ".join(str(row[key]).ljust(widths[key]) for key, _ in columns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4, help="kills per stage (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=120,
                        help="optimizer steps per training stage, a checkpoint every 10 (default: %(default)s)")
    parser.add_argument("--stages", nargs="+", default=["prepare", *TRAINING_STAGES],
                        choices=["prepare", *TRAINING_STAGES], help="stages to kill (default: all four)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repository and print its path")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="kill-trials-"))
    repo = build_repository(workdir / "repo", args.steps)
    durations, references = {}, {}
    for stage in ["prepare", *TRAINING_STAGES]:
        status, stderr, durations[stage] = run_stage(repo, stage)
        if status != 0:
            print(f"error: the uninterrupted reference run of {stage} failed (exit {status}):\n{stderr[-3000:]}",
                  file=sys.stderr)
            return 2
        references[stage] = snapshot(repo, stage)
        print(f"reference {stage}: {durations[stage]:.1f} s", file=sys.stderr, flush=True)

    rows = []
    # prepare last: the training stages' inputs stay the reference's throughout their trials
    chosen = [*[s for s in TRAINING_STAGES if s in args.stages], *(["prepare"] if "prepare" in args.stages else [])]
    for stage in chosen:
        for trial in range(1, args.trials + 1):
            delay = rng.uniform(0.0, durations[stage])
            if stage == "prepare":
                row = prepare_trial(repo, delay, references[stage])
            else:
                row = training_trial(repo, stage, delay, references[stage])
            rows.append({"stage": stage, "trial": trial, **row})
            print(f"{stage} trial {trial}: {row['outcome']}", file=sys.stderr, flush=True)

    print(f"\n{args.trials} SIGKILL trials per stage, seed {args.seed}, {args.steps} steps per training stage; "
          f"uninterrupted durations: " + ", ".join(f"{s} {d:.1f} s" for s, d in durations.items()))
    print_table(rows)
    failed = [row for row in rows if row["outcome"] != "identical"]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} trials identical to the uninterrupted run")
    if args.keep or failed:
        print(f"repository kept in {repo}")
    else:
        shutil.rmtree(workdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

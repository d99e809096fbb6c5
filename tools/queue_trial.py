"""Run queued DVC experiments in parallel against one embedded SQLite MLflow store; count what arrived.

In a temporary, git-committed copy of the repository on the tiny profile (tests/tiny_params.yaml),
this queues ``--experiments`` experiments that differ in one param (``--param``, ``--values``),
runs them with ``dvc queue start -j --jobs`` (two at once by default), waits for them, and then
opens the repository's mlflow.db with MlflowClient and compares, per experiment:

  - pipeline parent runs: exactly one, named after the experiment;
  - child runs per stage: one per stage the experiment ran (its `dvc queue logs`; study runs
    counted per arm and seed);
  - metric history points: for every stage that trained, each per-step metric has as many points
    as its DVC plots CSV has values (a study run copied from the main chain logs none); prepare,
    evaluate and the parent run have their final metrics once each.

Prints expected against found and exits 1 on any loss (or if an experiment failed).

    nice -n 19 .venv/bin/python -m tools.queue_trial                       # 2 experiments, whole pipeline
    nice -n 19 .venv/bin/python -m tools.queue_trial --stages prepare pretrain_unsup \\
        --param pretrain_unsup.learning_rate --values 0.001 0.002
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from tools.sandbox import git, stage_env, tiny_repository

TRAINING = {"pretrain_unsup", "pretrain_sup", "finetune"}
# Final metrics each stage logs once (beside per-step histories), and the parent run's.
FINAL = {"prepare": ["rows_read", "corpus_tokens", "rows_train", "rows_validation", "rows_test"],
         "evaluate": ["accuracy", "macro_f1", "ece"], "pretrain_unsup": ["steps", "flops"],
         "pretrain_sup": ["steps", "flops"], "finetune": ["steps", "flops"]}
PARENT = ["test_accuracy", "test_macro_f1", "test_ece"]  # logged by the main chain's evaluate
COMMAND = re.compile(r"-m stages\.(?:launch )?(\w+)(?: --arm (\w+) --seed (\d+))?")  # launch: training
RAN = re.compile(r"^Running stage '[^']+':\s*\n> (.+)$", re.MULTILINE)  # in `dvc queue logs`


def dvc(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["dvc", *args], cwd=repo, env=stage_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"error: dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def build_repository(directory: Path) -> Path:
    """Tiny profile and data, committed: a queued experiment sees committed files only."""
    repo = tiny_repository(directory)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tiny profile and data")
    return repo


def wait_for(repo: Path, names: list[str], timeout: float) -> dict[str, str]:
    """Poll `dvc queue status` until every experiment has ended; their final statuses."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = {}
        for line in dvc(repo, "queue", "status").splitlines():
            words = line.split()
            for name in names:
                if name in words:
                    statuses[name] = words[-1]
        if all(statuses.get(name) in ("Success", "Failed") for name in names):
            return statuses
        if time.monotonic() > deadline:
            return {name: statuses.get(name, "missing") + " (timed out)" for name in names}
        time.sleep(5)


def git_show(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout


def experiment_ref(repo: Path, name: str) -> str:
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.split()
    matches = [ref for ref in refs if ref.rsplit("/", 1)[-1] == name]
    if len(matches) != 1:
        raise SystemExit(f"error: expected one git ref for experiment {name}, found {matches}")
    return matches[0]


def expected_runs(repo: Path, ref: str, log: str, seed: int) -> dict[tuple[str, str], dict[str, int]]:
    """{(stage, study run): {metric: points}} for every stage the experiment's log says it ran."""
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", ref, "plots"], cwd=repo, capture_output=True,
                           text=True, check=True).stdout.split()
    expected: dict[tuple[str, str], dict[str, int]] = {}
    for command in RAN.findall(log):
        stage, arm, run_seed = COMMAND.search(command).groups()
        run = f"{arm}-{run_seed}" if arm else "main"
        # the spt arm of the main seed copies the main chain (docs/pipeline.md)
        if stage in ("pretrain_sup", "finetune") and arm == "spt" and int(run_seed) == seed:
            expected[(stage, run)] = {}
            continue
        points = dict.fromkeys(FINAL.get(stage, []), 1)
        if stage in TRAINING:
            plots = f"plots/{stage}/" if run == "main" else f"plots/study/{run}/{stage}/"
            for path in (name for name in files if name.startswith(plots) and name.endswith(".csv")):
                for row in csv.DictReader(io.StringIO(git_show(repo, ref, path))):
                    for key, value in row.items():
                        if key != "step" and value != "":
                            points[key] = points.get(key, 0) + 1
        expected[(stage, run)] = points
    return expected


def found_runs(client, experiment_id: str, name: str) -> tuple[list, dict[tuple[str, str], list]]:
    """(parent runs, {(stage, study run): [child runs]}) tagged with this DVC experiment."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.dvc_experiment = '{name}'", max_results=5000)
    parents = [run for run in runs if run.data.tags.get("stage") == "pipeline"]
    children: dict[tuple[str, str], list] = {}
    for run in runs:
        if run.data.tags.get("stage") != "pipeline":
            key = (run.data.tags["stage"], run.data.tags.get("study_run", "main"))
            children.setdefault(key, []).append(run)
    return parents, children


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=2, help="experiments to queue (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="experiments run at once (default: %(default)s)")
    parser.add_argument("--param", default="pretrain_sup.lambda", help="the param that differs (default: %(default)s)")
    parser.add_argument("--values", nargs="+", default=["0.5", "2.0", "1.5", "3.0", "0.25", "4.0"],
                        help="its value per experiment, in order (default: %(default)s)")
    parser.add_argument("--stages", nargs="*", default=[], help="dvc.yaml stages to run (default: the whole pipeline)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds to wait for the queue (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repository and print its path")
    args = parser.parse_args(argv)
    if args.experiments > len(args.values):
        parser.error(f"--experiments {args.experiments} needs as many --values (got {len(args.values)})")

    import mlflow

    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="queue-trial-"))
    repo = build_repository(workdir / "repo")
    seed = yaml.safe_load((repo / "params.yaml").read_text())["seed"]
    names = []
    for index, value in enumerate(args.values[: args.experiments]):
        names.append(f"q{index}-{args.param.replace('.', '-')}-{value}".replace(".", "_"))
        dvc(repo, "exp", "run", "--queue", "-n", names[-1], "-S", f"{args.param}={value}", *args.stages)
    dvc(repo, "queue", "start", "-j", str(args.jobs))
    statuses = wait_for(repo, names, args.timeout)
    dvc(repo, "queue", "stop", check=False)
    elapsed = time.monotonic() - began

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment_name = yaml.safe_load((repo / "params.yaml").read_text())["tracking"]["experiment"]
    experiment = client.get_experiment_by_name(experiment_name)
    problems: list[str] = []
    totals = Counter()
    print(f"{args.experiments} queued experiments ({args.param} = {', '.join(args.values[:args.experiments])}), "
          f"dvc queue start -j {args.jobs}, stages: {' '.join(args.stages) or 'all'}; {elapsed:.0f} s")
    for name in names:
        logs = dvc(repo, "queue", "logs", name, check=False)
        locked, tracking_off = logs.count("database is locked"), logs.count("tracking is off")
        print(f"\n{name}: {statuses[name]}; in its log: {locked} 'database is locked', "
              f"{tracking_off} 'tracking is off'")
        if statuses[name] != "Success":
            problems.append(f"{name}: {statuses[name]}\n{logs[-3000:]}")
            continue
        if tracking_off:
            problems.append(f"{name}: tracking switched off in {tracking_off} stage(s)")
        expected = expected_runs(repo, experiment_ref(repo, name), logs, seed)
        parents, children = found_runs(client, experiment.experiment_id, name) if experiment else ([], {})
        parent_points = {key: len(client.get_metric_history(parents[0].info.run_id, key))
                         for key in PARENT} if len(parents) == 1 else {}
        expect_parent = dict.fromkeys(PARENT, 1) if ("evaluate", "main") in expected else {}
        rows = [("pipeline (parent)", 1, len(parents), sum(expect_parent.values()),
                 sum(parent_points.get(key, 0) for key in expect_parent))]
        if len(parents) != 1 or any(parent_points.get(k, 0) != n for k, n in expect_parent.items()):
            problems.append(f"{name}: parent runs {len(parents)}, parent metrics {parent_points}")
        for key in sorted(set(expected) | set(children)):
            points = expected.get(key, {})
            runs = children.get(key, [])
            found = {metric: len(client.get_metric_history(runs[0].info.run_id, metric)) for metric in points} \
                if len(runs) == 1 else {}
            label = key[0] if key[1] == "main" else f"{key[0]} {key[1]}"
            rows.append((label, 1 if key in expected else 0, len(runs), sum(points.values()), sum(found.values())))
            lost = {metric: (n, found.get(metric, 0)) for metric, n in points.items() if found.get(metric, 0) != n}
            if len(runs) != (1 if key in expected else 0) or lost:
                problems.append(f"{name} {label}: {len(runs)} runs; metric points (expected, found) {lost}")
        print(f"  {'run':<32} {'runs exp.':>9} {'found':>6} {'points exp.':>11} {'found':>6}")
        for label, runs_expected, runs_found, points_expected, points_found in rows:
            print(f"  {label:<32} {runs_expected:>9} {runs_found:>6} {points_expected:>11} {points_found:>6}")
            totals.update(runs_expected=runs_expected, runs_found=runs_found, points_expected=points_expected,
                          points_found=points_found)
    spans = [(min(r.info.start_time for r in runs), max(r.info.end_time or 0 for r in runs))
             for runs in (client.search_runs([experiment.experiment_id], f"tags.dvc_experiment = '{name}'")
                          for name in names) if runs] if experiment else []
    overlapped = len(spans) > 1 and max(start for start, _ in spans) < min(end for _, end in spans)
    print(f"\nexperiments ran at the same time: {'yes' if overlapped else 'no'}")
    print(f"total: runs expected {totals['runs_expected']}, found {totals['runs_found']}; "
          f"metric points expected {totals['points_expected']}, found {totals['points_found']}")
    for problem in problems:
        print(f"LOSS: {problem}")
    if args.keep or problems:
        print(f"repository kept in {repo}")
    else:
        shutil.rmtree(workdir)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

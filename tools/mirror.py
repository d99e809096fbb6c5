"""After `dvc repro`: make the MLflow store mirror dvc.lock. `make repro` runs it (`python -m tools.mirror`).

A stage logs itself to MLflow when DVC runs it. DVC skips a stage whose dependencies and outputs match dvc.lock: on
a fresh clone whose training reproduces the committed bytes it skips evaluate, every study evaluation and compare,
and the store would hold no test score, no verdict and no registered classifier. For every stage of dvc.lock that
dvc.yaml defines, this makes sure the store holds a run of it keyed by the hash of the outputs dvc.lock records for
it (tags ``dvc_stage`` and ``dvc_outs_md5``, spt.tracking.outs_key):

- the stage ran and logged itself, and the metrics file its run wrote is the one dvc.lock records (tag
  ``metrics_md5``): that run gets the key;
- a run with the key is there already: nothing more (a second `make repro` adds nothing);
- otherwise one run is logged from the committed outputs, tagged ``logged_from: dvc.lock``: the stage's params in
  dvc.lock, its metrics file's numbers as metrics, its small outputs (plots, reports, metrics) as artifacts.
  compare's carries the per-arm means and intervals (stages.compare.flat_metrics); the main chain's evaluate the
  confusion matrix, the test scores on the pipeline run and, when the registry holds no version of
  ``tracking.registered_model``, the classifier in MLflow's transformers flavour, registered.

Those runs are children of the pipeline run of the stages that ran in the same `dvc repro`, or of a new pipeline
run when none did. A store that cannot be used fails the command with ``tracking.required: true``, as it stops a
stage, and only warns with false; DVC's outputs are written either way, and running this again later catches up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from spt import paths
from spt.config import Params, load_params
from spt.errors import UserError
from spt.tracking import (
    DVC_STAGE_TAG,
    LOGGED_FROM_TAG,
    METRICS_MD5_TAG,
    OUTS_KEY_TAG,
    connect_experiment,
    create_pipeline_run,
    extend_parent,
    fail_fast_http,
    file_md5,
    flatten,
    git_state,
    log_classifier,
    log_params_batched,
    outs_key,
    pipeline_execution_id,
    run_name,
    tracking_uri,
)
from spt.train.training_run import scalar_metrics
from study.arms import ARMS_OF
from study.run import Run, study_tags

LOCK = Path("dvc.lock")
LOGGED_FROM = "dvc.lock"
COMMAND_MODULE = re.compile(r"-m\s+stages\.(\w+)")
# a study run's outputs: <kind>/study/<run>/... (spt.paths)
STUDY_OUTPUT = re.compile(r"(?:models|checkpoints|metrics|plots)/study/([^/]+)/")
# the small outputs (kept in git, cache: false) worth showing, by suffix -> their folder among the run's artifacts
ARTIFACT_FOLDERS = {".csv": "plots", ".png": "plots", ".json": None, ".md": None}
MAIN_EVALUATE = "evaluate"  # the main chain's evaluate: its classifier is the one registered
CLASSIFIER = paths.model_dir("finetune")
HEADLINE = ("accuracy", "macro_f1", "ece")  # evaluate's numbers on the pipeline run, as test_<name>


@dataclass(frozen=True)
class LockedStage:
    """A stage as dvc.lock records it, with what its MLflow run needs."""

    name: str  # the dvc.yaml stage, as dvc.lock names it (a matrix stage's instance: study_finetune@spt-42)
    module: str  # the stages.<module> its command runs: the run's ``stage`` tag
    params: dict[str, Any]  # its params in dvc.lock, flattened
    outs: list[dict[str, Any]]  # its outs in dvc.lock (path, md5)
    small: tuple[str, ...]  # those DVC keeps out of its cache (cache: false): in git, cheap to log

    @property
    def key(self) -> str:
        return outs_key(self.outs)

    @property
    def study_run(self) -> str | None:
        """The study run whose outputs it writes (study/run.py's name), None outside the study."""
        return next((match[1] for out in self.outs if (match := STUDY_OUTPUT.match(out["path"]))), None)

    @property
    def label(self) -> str | None:
        """What tells it apart from the other runs of its module: the study run, else the matrix item
        (study_budget_prepare@8-42: 8-42); None for the main chain."""
        return self.study_run or (self.name.partition("@")[2] or None)

    @property
    def metrics_out(self) -> dict[str, Any] | None:
        """Its metrics file (metrics/...json) as dvc.lock records it; None when it writes none."""
        return next((out for out in self.outs if out["path"].startswith("metrics/") and out["path"].endswith(".json")),
                    None)

    def tags(self) -> dict[str, str]:
        """The tags the stage sets on its own run that tell it apart (stage, study run, arm, ...), and that it was
        logged from dvc.lock."""
        tags = {"stage": self.module, DVC_STAGE_TAG: self.name, LOGGED_FROM_TAG: LOGGED_FROM}
        if self.study_run is not None:
            try:
                tags.update(Run.from_name(self.study_run).tags())
            except ValueError:
                tags["study_run"] = self.study_run
        elif "@" not in self.name and self.module in ARMS_OF:  # a stage that runs as a study run, here the main chain
            tags.update(study_tags(None))
        return tags


def locked_stages(root: Path) -> list[LockedStage]:
    """The stages of ``root``'s dvc.lock that its dvc.yaml defines, in dvc.yaml's order (entries of stages dvc.yaml
    no longer has are left out); [] without a dvc.lock."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    if not (root / LOCK).is_file():
        return []
    try:
        locked = (yaml.safe_load((root / LOCK).read_text(encoding="utf-8")) or {}).get("stages") or {}
        with Repo(str(root)) as repo:
            defined = [(stage.addressing, stage.cmd, [(out.def_path, out.use_cache) for out in stage.outs])
                       for stage in repo.index.stages if stage.cmd]
    except (OSError, yaml.YAMLError, DvcException) as err:
        raise UserError(f"cannot read the pipeline in {root} ({type(err).__name__}: {err}); run from the "
                        "repository root") from None
    stages = []
    for name, command, outs in defined:
        if name not in locked:
            continue
        entry = locked[name]
        command = " ".join(command) if isinstance(command, list) else command
        module = match[1] if (match := COMMAND_MODULE.search(command)) else name
        params = {key: value for file, values in (entry.get("params") or {}).items()
                  for key, value in (values if file == str(paths.PARAMS) else {file: values}).items()}
        stages.append(LockedStage(name, module, flatten(params), list(entry.get("outs") or []),
                                  tuple(path for path, cached in outs if not cached)))
    return stages


def committed_metrics(stage: LockedStage, root: Path) -> dict[str, float]:
    """The numbers of the stage's metrics file as MLflow metrics (lists element by element, as the stages log them;
    compare's: stages.compare.flat_metrics)."""
    from stages.compare import flat_metrics

    if stage.metrics_out is None:
        return {}
    data = json.loads((root / stage.metrics_out["path"]).read_text(encoding="utf-8"))
    return flat_metrics(data) if stage.module == "compare" else scalar_metrics(data)


def committed_artifacts(stage: LockedStage, root: Path) -> list[tuple[Path, str | None]]:
    """The stage's small outputs worth showing (plots, reports, metrics), each with its folder among the run's
    artifacts."""
    found = []
    for out in stage.small:
        path = root / out
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and file.suffix in ARTIFACT_FOLDERS:
                found.append((file, ARTIFACT_FOLDERS[file.suffix]))
    return found


def stale_outputs(stage: LockedStage, root: Path) -> str | None:
    """Why the workspace does not hold the outputs dvc.lock records for the stage (its metrics file is missing or
    differs), None when it does."""
    out = stage.metrics_out
    if out is None:
        return None
    path = root / out["path"]
    if not path.is_file():
        return f"{out['path']} is missing"
    return None if file_md5(path) == out.get("md5") else f"{out['path']} differs from dvc.lock"


def all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


@dataclass
class Outcome:
    """What the mirror did, stage by stage."""

    ran: list[str]  # ran and logged themselves: their runs got the key
    present: list[str]  # a run with the key was there already
    logged: list[str]  # logged from dvc.lock
    skipped: list[str]  # not logged: the workspace lacks what dvc.lock records (why, per stage)

    def __str__(self) -> str:
        lines = [f"mirror: {len(self.ran) + len(self.present) + len(self.logged)} stages of dvc.lock in MLflow: "
                 f"{len(self.ran)} that ran, {len(self.logged)} logged from dvc.lock, "
                 f"{len(self.present)} there already"]
        lines += [f"mirror: logged from dvc.lock: {name}" for name in self.logged]
        lines += [f"mirror: not logged: {line}" for line in self.skipped]
        return "\n".join(lines)


def mirror(stages: list[LockedStage], params: Params, uri: str, root: Path) -> Outcome:
    """Key the runs of the stages that ran, log the others from their committed outputs (see the module's doc)."""
    import mlflow

    outcome = Outcome([], [], [], [])
    if not stages:
        return outcome
    experiment_id = connect_experiment(uri, params.tracking.experiment)
    client = mlflow.MlflowClient()
    own: dict[str, list[Any]] = {}
    for run in all_runs(client, experiment_id):
        if DVC_STAGE_TAG in run.data.tags:
            own.setdefault(run.data.tags[DVC_STAGE_TAG], []).append(run)
    parent, latest, missing = None, -1, []
    for stage in stages:
        runs = own.get(stage.name, [])
        metrics = stage.metrics_out
        ran = [run for run in runs if OUTS_KEY_TAG not in run.data.tags and run.info.status == "FINISHED"
               and metrics is not None and run.data.tags.get(METRICS_MD5_TAG) == metrics.get("md5")]
        if ran:  # the newest run that wrote these outputs: a stage DVC ran in this `dvc repro`
            run = max(ran, key=lambda run: run.info.start_time)
            client.set_tag(run.info.run_id, OUTS_KEY_TAG, stage.key)
            outcome.ran.append(stage.name)
            if run.info.start_time > latest:
                parent, latest = run.data.tags.get("mlflow.parentRunId"), run.info.start_time
        elif any(run.data.tags.get(OUTS_KEY_TAG) == stage.key for run in runs):
            outcome.present.append(stage.name)
        elif (why := stale_outputs(stage, root)) is not None:
            outcome.skipped.append(f"{stage.name}: {why} (run `dvc repro` or `dvc checkout`)")
        else:
            missing.append(stage)
    if not missing:
        return outcome
    if parent is None:  # nothing ran: this `make repro` gets a pipeline run of its own
        parent = create_pipeline_run(experiment_id, params, pipeline_execution_id(), {LOGGED_FROM_TAG: LOGGED_FROM})
    name = params.tracking.registered_model
    register = not client.search_model_versions(f"name = '{name}'", max_results=1)
    git = git_state()
    for stage in missing:
        log_stage(client, experiment_id, parent, stage, root, name if register else None, git)
        outcome.logged.append(stage.name)
    extend_parent(parent, "FINISHED")
    return outcome


def log_stage(client: Any, experiment_id: str, parent: str, stage: LockedStage, root: Path,
              register_as: str | None, git: dict[str, str]) -> None:
    """One run for ``stage`` under the pipeline run ``parent``, from its committed outputs; the key last, so a run
    cut short is logged again next time (and marked FAILED)."""
    from mlflow.entities import Metric

    run = client.create_run(experiment_id, run_name=run_name(stage.module, stage.label),
                            tags={"mlflow.parentRunId": parent, **git, **stage.tags()})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        log_params_batched(client, run_id, stage.params)
        metrics = committed_metrics(stage, root)
        numbers = [Metric(key, float(value), now, 0) for key, value in metrics.items() if value is not None]
        for start in range(0, len(numbers), 1000):  # MLflow's most metrics per batch
            client.log_batch(run_id, metrics=numbers[start:start + 1000])
        for path, folder in committed_artifacts(stage, root):
            client.log_artifact(run_id, str(path), folder)
        on_parent = {}
        if stage.module == "compare":
            on_parent = metrics
        elif stage.name == MAIN_EVALUATE:
            on_parent = {f"test_{key}": metrics[key] for key in HEADLINE if key in metrics}
            log_main_evaluation(client, run_id, stage, root, register_as)
        if on_parent:
            client.log_batch(parent, metrics=[Metric(key, float(value), now, 0) for key, value in on_parent.items()
                                              if value is not None])
        client.set_tag(run_id, OUTS_KEY_TAG, stage.key)
        client.set_terminated(run_id)
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise


def log_main_evaluation(client: Any, run_id: str, stage: LockedStage, root: Path, register_as: str | None) -> None:
    """The main chain's evaluate, as the stage logs it: the confusion-matrix PNG and, with ``register_as``, the
    classifier (models/finetune), registered under that name."""
    import tempfile

    import mlflow

    from spt.figures import confusion_matrix

    report = json.loads((root / stage.metrics_out["path"]).read_text(encoding="utf-8"))
    labels = paths.label_names() if (root / paths.LABEL_MAP).is_file() else list(report["per_class"])
    with tempfile.TemporaryDirectory() as scratch:
        figure = Path(scratch) / "confusion_matrix.png"
        client.log_artifact(run_id, str(confusion_matrix(report["confusion_matrix"], labels, "test set", figure)),
                            "plots")
    if register_as is None:
        return
    if not (root / CLASSIFIER / "config.json").is_file():
        print(f"mirror: {CLASSIFIER} is not in the workspace (`dvc pull` or `dvc repro` writes it): the classifier is "
              f"not registered as {register_as}", file=sys.stderr)
        return
    with mlflow.start_run(run_id=run_id):
        log_classifier(root / CLASSIFIER, register_as)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mirror", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(paths.PARAMS), help="the params file (default: %(default)s)")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        params = load_params(args.params)
        stages = locked_stages(root)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    uri = tracking_uri(params.tracking)
    try:
        with fail_fast_http():  # a server that does not answer: seconds, not minutes
            outcome = mirror(stages, params, uri, root)
    except Exception as err:  # noqa: BLE001 - any failure of the store means the same to the user
        message = f"could not mirror dvc.lock into the MLflow store at {uri} ({type(err).__name__}: {err})"
        fix = ("start the server or fix tracking.uri / $MLFLOW_TRACKING_URI, then run `python -m tools.mirror` "
               "(or `make repro` again: DVC skips what is current)")
        if params.tracking.required:
            print(f"error: {message}. The pipeline's outputs are written; {fix}. Or set tracking.required: false "
                  "to go on without MLflow", file=sys.stderr)
            return 2
        print(f"warning: {message}; going on without MLflow (tracking.required is false). To mirror later: {fix}",
              file=sys.stderr)
        return 0
    print(outcome, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

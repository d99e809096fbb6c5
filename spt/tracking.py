"""MLflow tracking: one parent run per pipeline execution, one child run per stage that ran.

A stage DVC skipped logs nothing itself: tools/mirror.py (``make repro`` runs it after ``dvc repro``) then logs
it from its committed outputs, and tags each stage's run with the hash of the outputs dvc.lock records for it
(:func:`outs_key`), so the store holds one run per stage of dvc.lock.

With nothing configured runs go to ``sqlite:///mlflow.db`` at the repository root (``$DVC_ROOT``
when DVC runs the stage in a temporary experiment copy), artifacts to ``mlartifacts/`` beside it.
``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` point to a server instead.

A pipeline execution is the ``dvc`` process that runs the stages (``dvc repro``, ``dvc exp run``,
a queue worker): the first stage it runs creates the parent run, later ones find it by that
process's identity. The parent run spans the pipeline: it starts with the first stage and its end
time moves to the end of each stage that finishes. The experiment is tagged as model development
(``mlflow.experimentKind``) so the MLflow UI opens on its training runs, not on the GenAI overview.

Logging never kills training: after a failure mid-run the tracker warns once and goes quiet, and
the DVC metrics and plots are still written. Under torchrun only rank 0 logs.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from spt import paths
from spt.config import DeclaredParams, Params, TrackingConfig, section_dict
from spt.errors import UserError
from spt.outputs import is_disk_full, write_json

log = logging.getLogger(__name__)
PIPELINE_TAG = "pipeline_execution"
# The MLflow UI opens an experiment on the page for its kind; without this tag it guesses GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# Logged as dataset digests: a prefix of the data/processed content hash (MLflow stores at most 36 chars).
DIGEST_LENGTH = 16
# A stage's run is tagged with the dvc.yaml stage DVC ran it as ($DVC_STAGE, e.g. study_finetune@spt-42) and the md5
# of the metrics file it wrote; tools/mirror.py adds the hash of the stage's outputs in dvc.lock (outs_key) once that
# md5 matches dvc.lock, and tags a run it logs from committed outputs as such.
DVC_STAGE_TAG = "dvc_stage"
METRICS_MD5_TAG = "metrics_md5"
OUTS_KEY_TAG = "dvc_outs_md5"
LOGGED_FROM_TAG = "logged_from"
# MLflow's HTTP settings while a stage runs (see fail_fast_http); the user's own values win.
HTTP_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class TrackingError(UserError):
    """The tracking store cannot be reached and ``tracking.required`` is true."""


def repository_root() -> Path:
    """The main repository, also when DVC runs a stage in a temporary experiment copy."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri(cfg: TrackingConfig) -> str:
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repository_root() / 'mlflow.db'}"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become JSON strings."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return flat


def params_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def git_state() -> dict[str, str]:
    """Commit and dirty flag of the repository, when it is a git checkout.

    ``git_dirty`` says whether code or params differ from the commit: a tracked file changed that is no output of
    the pipeline. DVC's own writes do not count: the outputs dvc.yaml declares (they are rewritten while the pipeline
    runs, often byte for byte), dvc.lock, and the .gitignore files DVC keeps.
    """
    try:
        root = repository_root()
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "-z", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    outputs = dvc_output_patterns(root / paths.DVC_FILE)
    changed = [path for path in changed_paths(status) if not is_dvc_output(path, outputs)]
    return {"git_commit": commit, "git_dirty": str(bool(changed)).lower()}


def changed_paths(porcelain: str) -> list[str]:
    """The paths of ``git status --porcelain -z`` output (a rename lists its new and its old path)."""
    entries, paths_found = porcelain.split("\0"), []
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        paths_found.append(entry[3:])
        if entry[0] in "RC" or entry[1] in "RC":  # the old path follows as an entry of its own
            paths_found.append(entries[index])
            index += 1
    return paths_found


def dvc_output_patterns(dvc_file: Path) -> list[str]:
    """The outputs (outs, metrics, plots) of every stage of ``dvc_file``, a ``${...}`` interpolation (a matrix stage's
    item) as the wildcard ``*``; none when it cannot be read."""
    try:
        stages = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    patterns = []
    for spec in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for out in (spec or {}).get(kind) or []:
                path = out if isinstance(out, str) else next(iter(out))
                patterns.append(re.sub(r"\$\{[^}]*\}", "*", path).rstrip("/"))
    return patterns


def is_dvc_output(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` (relative to the repository root) is DVC's to write: dvc.lock, a .gitignore, or an output
    of ``patterns`` (:func:`dvc_output_patterns`) or a file inside one."""
    if path == "dvc.lock" or PurePosixPath(path).name == ".gitignore":
        return True
    return any(fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, f"{pattern}/*") for pattern in patterns)


def run_name(stage: str, study_run: str | None = None) -> str:
    """A run's name: the stage, and the study run it belongs to (``finetune · baseline_flops-42``); the main chain's
    is the stage's alone (``finetune``)."""
    return stage if study_run is None else f"{stage} · {study_run}"


def file_md5(path: Path) -> str:
    """The md5 of a file's bytes: what dvc.lock records for a file output (``hash: md5``)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def outs_key(outs: list[dict[str, Any]]) -> str:
    """The key of a stage's outputs as dvc.lock records them (its ``outs`` entries: path and md5): equal exactly when
    every output has the same path and content, whatever order they are listed in."""
    listing = sorted((str(out["path"]), str(out.get("md5"))) for out in outs)
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def pipeline_execution_id() -> str:
    """Identity of the dvc process running this stage (host, pid, start time); this process if none."""
    import psutil

    process = psutil.Process()
    for ancestor in process.parents():
        try:
            command = ancestor.cmdline()
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if any(Path(part).name == "dvc" or part.endswith("dvc/__main__.py") for part in command[:3]):
            process = ancestor
            break
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.3f}"


class Tracker:
    """Guards every mlflow call: a failure warns once and switches tracking off for the stage."""

    def __init__(self, active: bool):
        self.active = active

    def guard(self, what: str, call: Callable[[], Any]) -> Any:
        """Run ``call`` (which uses mlflow) unless tracking is off; never raise."""
        if not self.active:
            return None
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - the store failing must not stop training
            cause = f"the disk is full: {err}" if is_disk_full(err) else f"{type(err).__name__}: {err}"
            warnings.warn(f"MLflow {what} failed ({cause}); tracking is off for the rest "
                          "of this stage, DVC metrics and plots are still written", stacklevel=3)
            self.active = False
            return None

    def log_params(self, params: dict[str, Any]) -> None:
        self.guard("log_params", lambda: _mlflow().log_params(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {key: value for key, value in metrics.items() if value is not None}
        self.guard("log_metrics", lambda: _mlflow().log_metrics(values, step=step))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.guard("set_tags", lambda: _mlflow().set_tags(tags))

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self.guard("log_dict", lambda: _mlflow().log_dict(data, name))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.guard("log_artifact", lambda: _mlflow().log_artifact(str(path), artifact_path))

    def write_metrics(self, path: Path, data: dict[str, Any]) -> None:
        """Write the stage's metrics file (a DVC output) and record its md5 (:meth:`wrote_metrics`)."""
        write_json(path, data)
        self.wrote_metrics(path)

    def wrote_metrics(self, path: Path) -> None:
        """Record the md5 of the metrics file this stage wrote (a DVC output): tools/mirror.py knows by it that this
        run made the outputs dvc.lock records."""
        self.set_tags({METRICS_MD5_TAG: file_md5(path)})

    def log_datasets(self, name: str, digest: str, rows: dict[str, int], labeled: Path = paths.LABELED) -> None:
        """Log the parts of data/processed this stage used as MLflow dataset inputs (the UI's Dataset column).

        ``name`` names the data (:func:`dataset_name`; prepare records it in data/processed);
        ``digest`` is the content hash of the data the run read (``data_sha256``); ``rows`` maps each part used
        (train, validation, test: labeled splits; corpus: packed masked-LM blocks; unlabeled: a budget's
        other train texts) to its row count, which becomes the context. ``labeled`` is where the labeled parts
        but test come from (a point of the labels-per-class curve reads its own). Nothing
        is read: every run of the same data logs the same names and digest, so MLflow links them.
        """
        def log() -> None:  # builds mlflow objects, so only when tracking is on
            inputs = [processed_dataset(name, part, digest, count, labeled) for part, count in rows.items()]
            _mlflow().log_inputs(datasets=inputs, contexts=list(rows), tags_list=[None] * len(rows))

        self.guard("log_inputs", log)

    def end_run(self, status: str) -> None:
        """End the stage's run (and its system-metrics monitor); never raises.

        Tried even after a failure switched tracking off, since the store may be back; a failure
        then stays silent (the stage has warned once already).
        """
        if self.active:
            self.guard("end_run", lambda: _mlflow().end_run(status))
        else:
            with contextlib.suppress(Exception):
                _mlflow().end_run(status)

    def log_child_run(self, name: str, params: dict[str, Any], metrics: dict[str, float | None],
                      tags: dict[str, str]) -> None:
        """A run nested under this stage's run, started, logged and ended at once (compare logs one per
        candidate of its choice). Nothing when tracking is off."""

        def log() -> None:
            mlflow = _mlflow()
            stage_run = mlflow.active_run().info
            client = mlflow.MlflowClient()
            child = client.create_run(stage_run.experiment_id, run_name=name,
                                      tags={"mlflow.parentRunId": stage_run.run_id, **tags})
            now = int(time.time() * 1000)
            client.log_batch(child.info.run_id,
                             metrics=[mlflow.entities.Metric(key, float(value), now, 0)
                                      for key, value in metrics.items() if value is not None],
                             params=[mlflow.entities.Param(key, str(value)) for key, value in params.items()])
            client.set_terminated(child.info.run_id)

        self.guard("log_child_run", log)

    def log_to_parent(self, metrics: dict[str, float]) -> None:
        """Final metrics of the pipeline on its parent run, to compare whole pipelines side by side."""

        def log() -> None:
            mlflow = _mlflow()
            parent = mlflow.active_run().data.tags.get("mlflow.parentRunId")
            now = int(time.time() * 1000)
            if parent:
                mlflow.MlflowClient().log_batch(parent, metrics=[
                    mlflow.entities.Metric(key, float(value), now, 0)
                    for key, value in metrics.items() if value is not None])

        self.guard("log_to_parent", log)


def log_classifier(model_dir: Path, registered_model: str) -> None:
    """Log the classifier in ``model_dir`` to the active run in MLflow's transformers flavour and register it as a
    new version of ``registered_model`` (``mlflow.pyfunc.load_model("models:/<name>/<version>")`` then predicts)."""
    import mlflow
    import torch
    import transformers

    # an absolute path: a relative one such as models/finetune looks like a Hub id, and MLflow
    # would spend a minute of retries fetching its model card from the Hub when offline
    classifier = transformers.pipeline("text-classification", model=str(Path(model_dir).resolve()), device="cpu")
    mlflow.transformers.log_model(
        classifier, name="model", task="text-classification", registered_model_name=registered_model,
        # listing them skips MLflow's slow requirement inference (it imports the model anew)
        pip_requirements=[f"transformers=={transformers.__version__}", f"torch=={torch.__version__.split('+')[0]}"])


def _mlflow() -> Any:
    import mlflow

    return mlflow


def processed_dataset(name: str, part: str, digest: str, rows: int, labeled: Path = paths.LABELED) -> Any:
    """An MLflow dataset for one part of the data, by reference: name, digest, path, row count. A budget's
    parts (``labeled`` is data/budgets/n8-42/labeled; test is always data/processed's) are named after it:
    'rotten_tomatoes/n8-42/train'."""
    from mlflow.data.sources import LocalArtifactDatasetSource

    if part == "corpus":
        location = paths.CORPUS
    elif labeled == paths.LABELED or part == "test":
        location = paths.LABELED / part
    else:
        location, name = labeled / part, f"{name}/{labeled.parent.name}"
    return _processed_dataset_class()(LocalArtifactDatasetSource(location.as_posix()), name=f"{name}/{part}",
                                      digest=digest[:DIGEST_LENGTH], rows=rows)


@functools.cache
def _processed_dataset_class() -> type:
    """A MetaDataset with a row count as its profile (defined on first use: mlflow loads lazily)."""
    from mlflow.data.meta_dataset import MetaDataset

    class ProcessedDataset(MetaDataset):
        def __init__(self, source: Any, name: str, digest: str, rows: int):
            self.rows = rows
            super().__init__(source, name=name, digest=digest)

        @property
        def profile(self) -> dict[str, int]:
            return {"num_rows": self.rows}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    return ProcessedDataset


@contextlib.contextmanager
def tracked_run(stage: str, params: DeclaredParams, system_metrics: bool = False,
                study_run: str | None = None) -> Iterator[Tracker]:
    """An MLflow child run for one stage (see :func:`_tracked_run`), under fail-fast HTTP settings."""
    with fail_fast_http():
        yield from _tracked_run(stage, params, system_metrics, study_run)


def _tracked_run(stage: str, params: DeclaredParams, system_metrics: bool, study_run: str | None
                 ) -> Iterator[Tracker]:
    """An MLflow child run for one stage, named after it and the study run it belongs to (``study_run``: a name of
    study/run.py, None for the main chain), logging the params its dvc.yaml stage declares (flattened) and
    lineage tags.

    The store is checked here, before the stage does any work: unreachable with
    ``tracking.required`` raises TrackingError, otherwise tracking is switched off with a warning.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        yield Tracker(active=False)
        return
    cfg = params.tracking
    uri = tracking_uri(cfg)
    stage_params = params.declared()
    try:
        experiment_id, parent_id = _connect(uri, cfg.experiment, params.everything())
    except Exception as err:  # noqa: BLE001 - any failure to reach the store means the same thing
        message = f"MLflow tracking store {uri} is not usable ({type(err).__name__}: {err})"
        if cfg.required:
            raise TrackingError(f"{message}. Start the server, fix tracking.uri / $MLFLOW_TRACKING_URI, or set "
                                "tracking.required: false to continue without MLflow") from None
        warnings.warn(f"{message}; continuing without MLflow (tracking.required is false)", stacklevel=3)
        yield Tracker(active=False)
        return
    import mlflow

    tags = {"stage": stage, "params_hash": params_hash(stage_params), "mlflow.parentRunId": parent_id,
            **git_state(), **_experiment_tag()}
    if os.environ.get("DVC_STAGE"):  # the stage instance, as dvc.lock names it (dvc.yaml:name addresses it too)
        tags[DVC_STAGE_TAG] = os.environ["DVC_STAGE"].rpartition(":")[2]
    tracker = Tracker(active=True)
    # Not `with mlflow.start_run()`: its exit (end_run) calls the store and would raise if it died.
    run = tracker.guard("start_run", lambda: mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name(stage, study_run), tags=tags,
        log_system_metrics=system_metrics))
    if run is not None:
        log.info("MLflow run %s of pipeline run %s (%s)", run.info.run_id, parent_id, uri)
    tracker.log_params(flatten(stage_params))
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        tracker.end_run(status)
        if tracker.active:
            tracker.guard("extend the pipeline run", lambda: extend_parent(parent_id, status))


def extend_parent(parent_id: str, status: str) -> None:
    """Move the pipeline run's end to now, so MLflow shows first stage start to last stage end.

    The run stays terminated between stages (a killed pipeline leaves no run RUNNING for ever);
    a failed stage marks it FAILED for good.
    """
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_id).info
    failed = status == "FAILED" or parent.status == "FAILED"
    client.set_terminated(parent_id, "FAILED" if failed else "FINISHED",
                          end_time=max(int(time.time() * 1000), parent.end_time or 0))


def _experiment_tag() -> dict[str, str]:
    return {"dvc_experiment": os.environ["DVC_EXP_NAME"]} if os.environ.get("DVC_EXP_NAME") else {}


def _connect(uri: str, experiment_name: str, params: Params) -> tuple[str, str]:
    """Set the store up (once, under a lock) and return (experiment id, parent run id): the run of this pipeline
    execution, created by its first stage."""
    import mlflow

    with _store_lock(uri):
        experiment_id = connect_experiment(uri, experiment_name)
        client = mlflow.MlflowClient()
        execution = pipeline_execution_id()
        found = client.search_runs([experiment_id], filter_string=f"tags.{PIPELINE_TAG} = '{execution}'",
                                   max_results=1)
        if found:
            return experiment_id, found[0].info.run_id
        return experiment_id, create_pipeline_run(experiment_id, params, execution)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """A brand-new SQLite store created by two processes at once can be corrupted: serialise setting it up."""
    from filelock import FileLock

    if not uri.startswith("sqlite:///"):
        yield
        return
    with FileLock(str(Path(uri.removeprefix("sqlite:///")).with_suffix(".db.lock"))):
        yield


def connect_experiment(uri: str, experiment_name: str) -> str:
    """Point mlflow at ``uri`` and return the id of the experiment ``experiment_name``, created if need be (tagged as
    model development; artifacts beside a SQLite store). A store that does not answer fails at once: no retries."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    saved = {key: os.environ.get(key) for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    try:
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            artifacts = (repository_root() / "mlartifacts").as_uri() if uri.startswith("sqlite") else None
            return client.create_experiment(experiment_name, artifact_location=artifacts,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        if _kind_unset(experiment.tags.get(EXPERIMENT_KIND_TAG)):
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def create_pipeline_run(experiment_id: str, params: Params, execution: str, tags: dict[str, str] | None = None
                        ) -> str:
    """A pipeline execution's parent run (named after the DVC experiment, or ``pipeline``): all of params.yaml,
    flattened, as params; terminated at once (see :func:`extend_parent`). Its id."""
    import mlflow

    client = mlflow.MlflowClient()
    name = os.environ.get("DVC_EXP_NAME") or "pipeline"
    parent = client.create_run(experiment_id, run_name=name, tags={
        PIPELINE_TAG: execution, "stage": "pipeline", "params_hash": params_hash(section_dict(params)),
        **git_state(), **_experiment_tag(), **(tags or {})})
    log_params_batched(client, parent.info.run_id, flatten(section_dict(params)))
    client.set_terminated(parent.info.run_id, end_time=parent.info.start_time)
    return parent.info.run_id


def log_params_batched(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """Log ``params`` on a run through ``client``, in batches of 100 (MLflow's most per batch)."""
    import mlflow

    flat = [mlflow.entities.Param(key, str(value)) for key, value in params.items()]
    for start in range(0, len(flat), 100):
        client.log_batch(run_id, params=flat[start:start + 100])


def _kind_unset(kind: str | None) -> bool:
    """No kind, or only one the UI inferred: a kind a person chose in the UI is kept."""
    return kind is None or kind.endswith("_inferred") or kind == "no_inferred_type"


@contextlib.contextmanager
def fail_fast_http() -> Iterator[None]:
    """MLflow's HTTP settings for a stage (and tools/mirror.py): two quick retries and a 10 s timeout, unless set
    by the user.

    MLflow reads them at every request. Its defaults (7 retries with exponential backoff, 120 s
    timeout) would stall the stage for minutes at each call once a tracking server has died.
    """
    saved = {key: os.environ.get(key) for key in HTTP_FAIL_FAST}
    os.environ.update({key: value for key, value in HTTP_FAIL_FAST.items() if saved[key] is None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)

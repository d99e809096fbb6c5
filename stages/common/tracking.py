"""MLflow tracking: one run per stage execution; start, log, end.

With nothing configured runs go to ``sqlite:///mlflow.db`` at the repository root (``$DVC_ROOT``
when DVC runs the stage in a temporary experiment copy), artifacts to ``mlartifacts/`` beside it.
``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` point to a server instead. Logging never kills
training: after a failure mid-run the tracker warns once and goes quiet, and the DVC metrics and
plots are still written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.common.config import Params, TrackingConfig, section_dict

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
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


def git_state() -> dict[str, str]:
    """Commit and dirty flag of the repository, when it is a git checkout."""
    try:
        root = repository_root()
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}
    except (OSError, subprocess.CalledProcessError):
        return {}


class Tracker:
    """Thin guard around mlflow calls; ``None`` client means tracking is off."""

    def __init__(self, active: bool):
        self.active = active

    def _call(self, function: str, *args: Any, **kwargs: Any) -> None:
        if not self.active:
            return
        import mlflow

        try:
            getattr(mlflow, function)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the store failing must not stop training
            warnings.warn(f"MLflow {function} failed ({err}); tracking is off for the rest of this stage, "
                          "DVC metrics and plots are still written", stacklevel=2)
            self.active = False

    def log_params(self, params: dict[str, Any]) -> None:
        self._call("log_params", params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._call("log_metrics", {k: v for k, v in metrics.items() if v is not None}, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("set_tags", tags)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self._call("log_dict", data, name)

    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self._call("log_artifacts", str(path), artifact_path)
        elif Path(path).is_file():
            self._call("log_artifact", str(path), artifact_path)


@contextlib.contextmanager
def stage_run(stage: str, params: Params, sections: list[str]) -> Iterator[Tracker]:
    """An MLflow run for one stage, logging the params of ``sections`` (flattened) and lineage tags.

    Reachability is checked here, before the stage does any work.
    """
    cfg = params.tracking
    uri = tracking_uri(cfg)
    stage_params = {name: section_dict(getattr(params, name)) if name != "seed" else params.seed
                    for name in sections}
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        experiment = mlflow.get_experiment_by_name(cfg.experiment)
        if experiment is None:
            artifacts = (repository_root() / "mlartifacts").as_uri() if uri.startswith("sqlite") else None
            experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
    except Exception as err:  # noqa: BLE001
        message = f"MLflow tracking store {uri} is not usable ({type(err).__name__}: {err})"
        if cfg.required:
            raise TrackingError(f"{message}. Start the server, fix tracking.uri / $MLFLOW_TRACKING_URI, or set "
                                "tracking.required: false to continue without MLflow") from None
        warnings.warn(f"{message}; continuing without MLflow (tracking.required is false)", stacklevel=2)
        yield Tracker(active=False)
        return
    params_hash = hashlib.sha256(json.dumps(stage_params, sort_keys=True).encode()).hexdigest()[:16]
    tags = {"stage": stage, "params_hash": params_hash, **git_state()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags) as run:
        log.info("MLflow run %s (%s)", run.info.run_id, uri)
        tracker = Tracker(active=True)
        tracker.log_params(flatten(stage_params))
        yield tracker

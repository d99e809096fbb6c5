"""Shared fixtures: tiny real data, a throw-away copy of the repository to run DVC in, a real MLflow server.

The copies themselves are built by tools.sandbox, which the tools and benchmarks share; helpers that are no
fixtures live in tests/support.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import MlflowServer
from tools.sandbox import tiny_repository, write_tiny_data

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(autouse=True)
def mlflow_uri_restored():
    """mlflow.set_tracking_uri exports $MLFLOW_TRACKING_URI; a test that tracks to a store of its own must not leave it
    behind for the tests after it (monkeypatch.delenv of an unset variable does not undo a later set)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(autouse=True)
def outside_dvc(monkeypatch):
    """Tests call stages by hand: the stage is the module's (spt.paths.dvc_stage), even when pytest itself runs
    inside a DVC stage; a test that plays a DVC stage sets $DVC_STAGE itself."""
    monkeypatch.delenv("DVC_STAGE", raising=False)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-data")
    write_tiny_data(directory)
    return directory


@pytest.fixture
def tiny_repo(tmp_path, tiny_data) -> Path:
    """A fresh repository copy with the tiny profile as params.yaml and the tiny data in place."""
    return tiny_repository(tmp_path / "repo", tiny_data)


@pytest.fixture
def mlflow_server(tmp_path) -> MlflowServer:
    server = MlflowServer(tmp_path)
    server.wait_ready()
    yield server
    server.stop()

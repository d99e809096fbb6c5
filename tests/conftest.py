"""Shared fixtures: tiny real data, and a throw-away copy of the repository to run DVC in.

The copies themselves are built by stages.common.sandbox, which the scripts and benchmarks share."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from stages.common.sandbox import stage_env, tiny_repository, write_tiny_data

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def run_command(cwd: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with :func:`stage_env`; fail with its output unless ``check`` is off."""
    result = subprocess.run(command, cwd=cwd, env=stage_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-data")
    write_tiny_data(directory)
    return directory


@pytest.fixture
def tiny_repo(tmp_path, tiny_data) -> Path:
    """A fresh repository copy with the tiny profile as params.yaml and the tiny data in place."""
    return tiny_repository(tmp_path / "repo", tiny_data)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` on a free loopback port, its SQLite store and artifacts in ``directory``.

    It runs in its own process group, so :meth:`stop` ends its workers too and the port goes dead.
    """

    def __init__(self, directory: Path):
        self.store = directory / "server.db"
        self.uri = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", self.uri.rsplit(":", 1)[1], "--backend-store-uri", f"sqlite:///{self.store}",
             "--default-artifact-root", (directory / "artifacts").as_uri(), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail("mlflow server did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # workers that outlived their parent


@pytest.fixture
def mlflow_server(tmp_path) -> MlflowServer:
    server = MlflowServer(tmp_path)
    server.wait_ready()
    yield server
    server.stop()


def labeled_frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["text", "label"])

"""Shared fixtures: tiny real data, and a throw-away copy of the repository to run DVC in."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_PARAMS = REPO / "tests" / "tiny_params.yaml"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def write_tiny_data(directory: Path, movies: int = 40) -> None:
    """A few hundred real rotten_tomatoes reviews (labeled, with movie_name) and plot synopses."""
    from stages.common.sources import BUILTINS, iter_unlabeled, read_labeled

    frame = read_labeled("builtin:rotten_tomatoes", "text", "label", "auto").frame
    frame = frame[frame["label"].isin(["fresh", "rotten"])]
    chosen = sorted(frame["group"].unique())[:movies]
    tiny = frame[frame["group"].isin(chosen)].rename(columns={"group": "movie_name"})
    directory.mkdir(parents=True, exist_ok=True)
    tiny.to_csv(directory / "labeled.csv", index=False)
    plots = [text.replace("\n", " ") for text, _ in zip(iter_unlabeled("builtin:rotten_tomatoes", "text"),
                                                         range(120))]
    (directory / "unlabeled.txt").write_text("\n".join(plots) + "\n", encoding="utf-8")
    assert BUILTINS  # the builtins were verified by sha256 on the way


def copy_repository(target: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of the repo, then make it a git repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "commit", "-qm", "copy")
    return target


def git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def stage_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: the venv first on PATH (DVC stages call `python`), and no
    MLflow URI inherited from an in-process test (mlflow.set_tracking_uri exports it)."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}


def run(cwd: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with :func:`stage_env`; fail with its output unless ``check`` is off."""
    result = subprocess.run(command, cwd=cwd, env=stage_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-data")
    write_tiny_data(directory)
    return directory


def tiny_repository(target: Path, data: Path | None = None) -> Path:
    """A repository copy with the tiny profile as params.yaml and the tiny data in data/tiny:
    copied from ``data`` (written by :func:`write_tiny_data`), or written afresh when None."""
    repo = copy_repository(target)
    shutil.copy(TINY_PARAMS, repo / "params.yaml")
    if data is None:
        write_tiny_data(repo / "data" / "tiny")
    else:
        shutil.copytree(data, repo / "data" / "tiny")
    return repo


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

"""Helpers the tests share; the fixtures themselves live in conftest.py.

- the repository root, and commands run in a copy of it as DVC runs a stage (:func:`run_command`);
- a real ``mlflow server`` on a free loopback port (:class:`MlflowServer`);
- params files (:func:`default_params`, :func:`write_params`) and a prepare run on the tiny data (:func:`run_prepare`);
- dvc.yaml's commands: how one starts a stage module and which module one runs (:func:`stage_command`,
  :func:`stage_module`);
- the order of writes, fsyncs and renames a durable write makes (:class:`SyncLog`);
- a study's outputs built by hand, with known answers, as its stages write them (:func:`write_run`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tools.sandbox import stage_env

REPO = Path(__file__).resolve().parents[1]


def run_command(cwd: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with :func:`stage_env`; fail with its output unless ``check`` is off."""
    result = subprocess.run(command, cwd=cwd, env=stage_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


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


# --------------------------------------------------------------------------------------------
# params files


def default_params() -> dict:
    """params.yaml of the repository, as a dict to change."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(tmp_path: Path, data: dict) -> Path:
    """``data`` as ``tmp_path/params.yaml``."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_prepare(repo: Path, monkeypatch, **changes) -> None:
    """prepare's main on ``repo`` (the working directory from now on), with ``section.key=value`` changes to its
    params.yaml."""
    from spt.config import load_params
    from stages import prepare
    from stages.cli import stage_params

    monkeypatch.chdir(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    prepare.main(stage_params(load_params(repo / "params.yaml"), "prepare"))


# --------------------------------------------------------------------------------------------
# dvc.yaml's commands


def stage_command(module: str) -> str:
    """How dvc.yaml starts ``stages.<module>``: a training stage through stages.launch (which runs it under
    runtime.launch, without a shell), the others with python."""
    from spt import paths

    return f"python -m stages.launch {module}" if module in paths.TRAINING_STAGES else f"python -m stages.{module}"


def stage_module(command: str) -> str:
    """The stage module a dvc.yaml command runs: ``<name>`` of ``python -m stages.<name>`` or of
    ``python -m stages.launch <name>``."""
    return re.match(r"python -m stages\.(?:launch )?(\w+)", command)[1]


# --------------------------------------------------------------------------------------------
# durable writes


class SyncLog:
    """Records, in order, each write the test makes, each os.fsync (by path) and each os.replace."""

    def __init__(self, monkeypatch):
        self.events = []
        fsync, replace = os.fsync, os.replace

        def logged_fsync(descriptor):
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
            fsync(descriptor)

        def logged_replace(source, target):
            self.events.append(("replace", str(source), str(target)))
            replace(source, target)

        monkeypatch.setattr(os, "fsync", logged_fsync)
        monkeypatch.setattr(os, "replace", logged_replace)

    def write(self, path, text):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.events.append(("write", str(path)))


# --------------------------------------------------------------------------------------------
# a study's outputs, built by hand (compare reads them as its stage does)

ACTUAL = ["fresh", "rotten"] * 20  # the test split's labels, 40 examples


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_run(root: Path, run: str, validation: float, predicted: list[str], actual: list[str],
              pretrained: bool) -> None:
    """One study run's outputs as its stages write them (only the fields compare reads)."""
    from spt import paths

    write_json(root / paths.metrics_file("finetune", run), {"val_macro_f1": validation, "steps": 8, "flops": 4e9})
    if pretrained:
        write_json(root / paths.metrics_file("pretrain_sup", run), {"steps": 6, "flops": 3e9})
    curve = root / paths.plots_dir("finetune", run) / "validation.csv"
    curve.parent.mkdir(parents=True, exist_ok=True)
    curve.write_text(f"step,flops,eval_macro_f1\n0,0,0.5\n4,2000000000,{validation}\n8,4000000000,{validation}\n")
    write_test_outputs(root, run, predicted, actual)


def write_test_outputs(root: Path, run: str, predicted: list[str], actual: list[str]) -> None:
    """evaluate's outputs for ``run``: scores from its predictions against ``actual`` (the test labels)."""
    from spt import paths

    accuracy = sum(p == a for p, a in zip(predicted, actual, strict=True)) / len(actual)
    write_json(root / paths.metrics_file("evaluate", run), {"accuracy": accuracy, "macro_f1": accuracy})
    confusion = root / paths.plots_dir("evaluate", run) / "confusion.csv"
    confusion.parent.mkdir(parents=True, exist_ok=True)
    confusion.write_text("actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in zip(actual, predicted, strict=True)))


def predictions(seed: int) -> list[str]:
    """Predictions for :data:`ACTUAL`, right on about 3 in 4, drawn with ``seed``."""
    rng = random.Random(seed)
    return [a if rng.random() < 0.75 else ("rotten" if a == "fresh" else "fresh") for a in ACTUAL]

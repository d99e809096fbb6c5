"""Throwaway repository copies with the tiny profile, to run the real pipeline in.

The tests, the scripts (repro_check, kill_trials, queue_trial) and the benchmarks each copy this
repository to a temporary directory, put the tiny profile (tests/tiny_params.yaml) in place of
params.yaml and a few hundred real rows in data/tiny, then run `dvc repro` or single stages there
as child processes. This module is what they share; the pipeline itself never imports it.

It works on a checkout (the editable install of ``make setup``): the repository it copies is the
one this file lies in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from spt.paths import TRAINING_STAGES

REPO = Path(__file__).resolve().parents[1]
TINY_PARAMS = REPO / "tests" / "tiny_params.yaml"
# What a child process gets unless the caller's environment says otherwise: no hub, no telemetry,
# no tokenizer threads fighting the stage's own.
CHILD_DEFAULTS = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "DVC_NO_ANALYTICS": "1"}


def write_tiny_data(directory: Path, movies: int = 40) -> None:
    """A few hundred real rotten_tomatoes reviews (labeled, with movie_name) and plot synopses.

    Writes ``labeled.csv`` and ``unlabeled.txt`` in ``directory``; the built-in data is checked
    against its sha256 when it is read.
    """
    from spt.data.sources import iter_unlabeled, read_labeled

    frame = read_labeled("builtin:rotten_tomatoes", "text", "label", "auto").frame
    frame = frame[frame["label"].isin(["fresh", "rotten"])]
    chosen = sorted(frame["group"].unique())[:movies]
    tiny = frame[frame["group"].isin(chosen)].rename(columns={"group": "movie_name"})
    directory.mkdir(parents=True, exist_ok=True)
    tiny.to_csv(directory / "labeled.csv", index=False)
    # the first 120 texts of the stream: the range stops the zip on purpose
    plots = [text.replace("\n", " ") for text, _ in zip(iter_unlabeled("builtin:rotten_tomatoes", "text"),
                                                         range(120), strict=False)]
    (directory / "unlabeled.txt").write_text("\n".join(plots) + "\n", encoding="utf-8")


def write_tiny_encoder(directory: Path, architecture: str, texts: list[str]) -> Path:
    """A tiny random masked-LM checkpoint of ``architecture`` (a model_type: 2 layers, hidden 32),
    written with ``save_pretrained`` beside a tokenizer of that architecture's kind trained on
    ``texts``: what a user's own model directory looks like, for ``model.source``."""
    import torch
    from transformers import AutoModelForMaskedLM

    from spt.config import ScratchConfig
    from spt.data.tokenization import SCRATCH_TOKENIZERS, save_tokenizer, train_tokenizer
    from spt.model.encoders import scratch_config

    tokenizer = train_tokenizer(SCRATCH_TOKENIZERS[architecture], lambda: iter([texts]), 500, 64)
    sizes = ScratchConfig(architecture=architecture, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(scratch_config(sizes, tokenizer, 64)).save_pretrained(directory)
    save_tokenizer(tokenizer, directory)
    return directory


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
    """Run git in ``cwd`` with a fixed author, so commits work on a machine with no git identity."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def stage_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: the venv first on PATH (DVC stages call `python`), offline
    defaults (:data:`CHILD_DEFAULTS`), and no MLflow URI inherited from an in-process test
    (mlflow.set_tracking_uri exports it)."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return {**CHILD_DEFAULTS, **env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            **extra}


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


def longer_runs(repo: Path) -> None:
    """Edit ``repo``'s params.yaml for enough steps, and a model large enough, that a kill lands mid-run."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["scratch"].update(hidden_size=64, intermediate_size=128)
    for stage in TRAINING_STAGES:
        params[stage].update(max_steps=30, save_steps=10, batch_size=16)
    params["finetune"]["early_stopping_patience"] = None
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

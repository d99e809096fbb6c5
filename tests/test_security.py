"""No pickles, no remote code, no listening beyond loopback."""

import json
import os
import pickle
import re
from pathlib import Path

import pytest

from spt.errors import ModelError
from spt.model.source import check_encoder_config
from tests.support import REPO

# the code that runs: the stages, the library, the study and the tools
SOURCES = sorted(path for package in ("stages", "spt", "study", "tools") for path in (REPO / package).rglob("*.py"))


def test_nothing_loads_a_pickle_or_runs_remote_code():
    assert {path.relative_to(REPO).parts[0] for path in SOURCES} == {"stages", "spt", "study", "tools"}
    for path in SOURCES:
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M), path
        assert "pickle.load" not in text and "trust_remote_code=True" not in text, path


class _MakesADirectoryWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_pickled_weights_are_refused_unopened(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    marker = tmp_path / "unpickled"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_MakesADirectoryWhenUnpickled(marker)))
    with pytest.raises(ModelError, match=r"pickled weights \(pytorch_model.bin\) are refused"):
        check_encoder_config(model, "my-model")
    assert not marker.exists()


def test_ui_binds_to_loopback_only(monkeypatch, capsys):
    """`make ui` runs tools.ui, which serves on 127.0.0.1 unless told otherwise."""
    from tools import ui

    [recipe] = [line for line in (REPO / "Makefile").read_text().splitlines() if "tools.ui" in line]
    assert "--host" not in recipe
    started = []
    monkeypatch.setattr(ui.os, "execv", lambda path, argv: started.append(argv))
    monkeypatch.setattr(ui, "experiment_id", lambda uri, name: "1")
    assert ui.main(["--params", str(REPO / "params.yaml")]) == 0
    [argv] = started
    assert argv[argv.index("--host") + 1] == "127.0.0.1"

"""`make ui` (tools/ui.py) prints the address that opens the study's runs on MLflow's Model-training side."""

import pytest

from tools.ui import main, runs_address


def test_the_address_selects_the_model_training_side():
    assert runs_address("http://127.0.0.1:5000", "3") == \
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    # a store without the experiment yet: the experiment list, on the same side
    assert runs_address("http://h:1/", None) == "http://h:1/#/experiments?workflowType=machine_learning"


def test_it_finds_the_experiment_of_params_yaml(tmp_path, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment("other")
    wanted = mlflow.MlflowClient(tracking_uri=uri).create_experiment("mine")
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{labeled: builtin:rotten_tomatoes}}\ntracking: {{uri: '{uri}', experiment: mine}}\n")
    assert main(["--params", str(params), "--port", "5123", "--print-only"]) == 0
    assert f"open http://127.0.0.1:5123/#/experiments/{wanted}/runs?workflowType=machine_learning" in \
        capsys.readouterr().out


def test_a_bad_params_file_is_one_message(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("data: {labeled: builtin:rotten_tomatoes}\ntracking: {experimnt: x}\n")
    assert main(["--params", str(params), "--print-only"]) == 2
    assert "tracking.experimnt: unknown key" in capsys.readouterr().err


def test_a_tracking_server_is_pointed_at_not_started(tmp_path, monkeypatch, capsys):
    """With tracking.uri a server, its own UI shows the runs: the address is printed and nothing is served here."""
    from tools import ui

    monkeypatch.setattr(ui, "experiment_id", lambda uri, name: "4")
    monkeypatch.setattr(ui.os, "execv", lambda *args: pytest.fail("a server's UI is not started here"))
    params = tmp_path / "params.yaml"
    params.write_text("data: {labeled: builtin:rotten_tomatoes}\ntracking: {uri: 'http://mlflow.example:5000'}\n")
    assert ui.main(["--params", str(params)]) == 0
    assert "open http://mlflow.example:5000/#/experiments/4/runs?workflowType=machine_learning" in \
        capsys.readouterr().out

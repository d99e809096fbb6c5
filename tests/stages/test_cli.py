"""The command line every stage shares (stages/cli.py): the params view each stage gets, study runs' flags, usage
errors and user errors."""

import errno
import subprocess
import sys

import pytest
import yaml

from spt import paths
from spt.config import load_params
from stages.cli import run_stage, stage_params
from study.run import Run
from study.sweep import Setting
from tests.support import REPO, default_params, stage_command, stage_module, write_params

MAIN_CHAIN = ("prepare", "pretrain_unsup", "pretrain_sup", "finetune", "evaluate", "compare")


def dvc_stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def instance(spec) -> str:
    """A name DVC gives an instance of a matrix stage: the item's values joined by '-' (study_pretrain@spt-42)."""
    return "-".join(str(values[0]) if isinstance(values, list) else "42" for values in spec["matrix"].values())


def test_stage_exits_2_with_the_message(tmp_path, monkeypatch, capsys):
    from stages import prepare

    monkeypatch.chdir(REPO)
    data = default_params()
    data["prepare"]["n_per_class"] = 0
    path = write_params(tmp_path, data)
    monkeypatch.setattr("sys.argv", ["prepare", "--params", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        run_stage(prepare.__doc__, prepare.main, "prepare", ["--params", str(path)])
    assert exit_info.value.code == 2
    assert "prepare.n_per_class = 0" in capsys.readouterr().err


def test_every_matrix_stage_passes_its_items_to_its_module():
    """A matrix stage runs ``stages.<module>`` as a study run: ``--arm`` (the sweep: the spt arm) or, for prepare,
    the point of the curve to draw; every axis of the matrix reaches the command, or two instances would run the
    same command."""
    matrix_stages = {stage: spec for stage, spec in dvc_stages().items() if "matrix" in spec}
    assert len(matrix_stages) == 24
    for stage, spec in matrix_stages.items():
        module = stage_module(spec["cmd"])
        flags = spec["cmd"].removeprefix(f"{stage_command(module)} ")
        if "arm" in spec["matrix"]:
            assert flags.startswith("--arm ${item.arm}"), stage
        elif "weighting" in spec["matrix"]:
            assert flags.startswith("--arm spt --seed ${item.seed}"), stage
        else:
            assert (module, flags) == ("prepare", "--labels-per-class ${item.n} --seed ${item.seed}"), stage
        assert all(f"${{item.{axis}}}" in flags for axis in spec["matrix"]), stage


def test_every_stage_gets_the_params_dvc_yaml_declares(monkeypatch):
    """The CLI hands each stage, and each instance of a matrix stage, exactly its dvc.yaml stage's params: the stage
    DVC names in $DVC_STAGE (spt.paths.dvc_stage); by hand, without it, the stage named after the module."""
    monkeypatch.chdir(REPO)
    params = load_params()
    stages = dvc_stages()
    for stage, spec in stages.items():
        module = stage_module(spec["cmd"])
        monkeypatch.setenv("DVC_STAGE", f"{stage}@{instance(spec)}" if "matrix" in spec else stage)
        assert paths.dvc_stage(module) == stage
        view = stage_params(params, module)
        assert list(view.declared()) == spec["params"], stage
        undeclared = next(section for section in ("data", "study", "compare") if section not in spec["params"])
        with pytest.raises(AttributeError, match=f"dvc.yaml stage '{stage}' does not declare"):
            getattr(view, undeclared)
    monkeypatch.delenv("DVC_STAGE")
    for module in MAIN_CHAIN:
        assert list(stage_params(params, module).declared()) == stages[module]["params"]


@pytest.mark.parametrize("argv, expected", [
    (["--weighting", "fixed"], "--weighting and --lambda go together"),
    (["--arm", "spt", "--seed", "1", "--lambda", "2"], "--weighting and --lambda go together"),
    (["--arm", "tapt", "--seed", "1", "--weighting", "fixed", "--lambda", "2"], "with --arm spt --seed N"),
    (["--weighting", "fixed", "--lambda", "2"], "with --arm spt --seed N"),
    (["--arm", "spt", "--seed", "1", "--weighting", "fixed", "--lambda", "0"], "not a positive number"),
    (["--arm", "spt", "--seed", "1", "--weighting", "fixed", "--lambda", "two"], "'two' is not a number"),
    (["--arm", "spt", "--seed", "1", "--weighting", "softmax", "--lambda", "2"], "invalid choice: 'softmax'"),
    (["--arm", "spt"], "--arm and --seed go together"),
    (["--arm", "baseline", "--seed", "1"], "invalid choice: 'baseline'"),  # pretrain_sup runs spt and tapt only
])
def test_sweep_flags_are_checked(monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        run_stage("doc", lambda *args: None, "pretrain_sup", argv, study=True)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_a_sweep_run_gets_its_setting_and_its_stage_params(monkeypatch):
    monkeypatch.chdir(REPO)
    seen = []

    def body(params, run):
        assert run.labels_per_class is None
        seen.append((run, params.pretrain_sup.weighting))
        with pytest.raises(AttributeError, match="dvc.yaml stage 'study_sweep_pretrain' does not declare"):
            _ = params.study

    monkeypatch.setenv("DVC_STAGE", "study_sweep_pretrain@gradcos-1.0-3")
    run_stage("doc", body, "pretrain_sup", ["--arm", "spt", "--seed", "3", "--weighting", "gradcos",
                                            "--lambda", "1.0"], study=True)
    monkeypatch.setenv("DVC_STAGE", "study_sweep_pretrain@fixed-2-3")
    run_stage("doc", body, "pretrain_sup", ["--arm", "spt", "--seed", "3", "--weighting", "fixed",
                                            "--lambda", "2"], study=True)
    assert seen == [(Run("spt", 3, Setting("gradcos", 1.0)), "normalized"),
                    (Run("spt", 3, Setting("fixed", 2)), "normalized")]
    assert [run.name for run, _ in seen] == \
        ["spt-gradcos-l1.0-3", "spt-fixed-l2-3"]  # as DVC writes ${item.lambda}: 1.0 stays 1.0, 2 stays 2
    assert type(seen[1][0].setting.lambda_) is int


def test_the_main_chain_is_no_study_run(monkeypatch):
    monkeypatch.chdir(REPO)
    seen = []
    run_stage("doc", lambda params, run: seen.append((run, params.finetune.init_from)), "finetune", [], study=True)
    run_stage("doc", lambda params, run: seen.append((run, params.finetune.init_from)), "finetune",
              ["--arm", "baseline_flops", "--seed", "7"], study=True)  # by hand: finetune's own params
    assert seen == [(None, "pretrain_sup"), (Run("baseline_flops", 7), "pretrain_sup")]


@pytest.mark.parametrize("module", ["pretrain_sup", "finetune", "evaluate"])
def test_help_describes_the_sweep_flags(module):
    result = subprocess.run([sys.executable, "-m", f"stages.{module}", "--help"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert "--weighting {fixed,normalized,uncertainty,gradcos}" in result.stdout
    assert "--lambda LAMBDA" in result.stdout and "spt-<weighting>-l<lambda>-<seed>" in result.stdout


def test_a_full_disk_outside_our_outputs_is_one_message_and_exit_2(monkeypatch, capsys):
    """A library's cache or a temporary file meeting ENOSPC: the same one line as a full disk under atomic_output."""
    monkeypatch.chdir(REPO)

    def body(params):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/datasets-cache/arrow-0001")

    with pytest.raises(SystemExit) as exit_info:
        run_stage("doc", body, "prepare", ["--params", str(REPO / "params.yaml")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: the disk is full: writing /tmp/datasets-cache/arrow-0001 failed, ")
    assert error.count("\n") == 1 and "Traceback" not in error

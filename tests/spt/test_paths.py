"""dvc.yaml, params.yaml and the code agree on the main chain's stages, paths and params (declared once).

The study's matrix stages and their runs' names: tests/study/test_run.py."""

import importlib
from pathlib import Path

import pytest
import yaml

from spt import paths
from spt.config import Params
from tests.support import REPO, stage_command, stage_module

STAGES = ["prepare", "pretrain_unsup", "pretrain_sup", "finetune", "evaluate"]
# The study's stages, in dvc.yaml's order: one matrix stage per module and arm group, the sweep, the floors,
# the labels-per-class curve
STUDY = ["study_pretrain", "study_tapt", "study_finetune", "study_tapt_finetune", "study_baseline", "study_matched",
         "study_evaluate", "study_tapt_evaluate", "study_evaluate_matched", "study_sweep_pretrain",
         "study_sweep_finetune", "study_sweep_evaluate", "study_floors", "study_budget_prepare",
         "study_budget_pretrain", "study_budget_tapt", "study_budget_finetune", "study_budget_tapt_finetune",
         "study_budget_baseline", "study_budget_matched", "study_budget_evaluate", "study_budget_tapt_evaluate",
         "study_budget_evaluate_matched", "study_budget_floors"]
# The code every stage runs besides its own module (dvc.yaml deps): the shared command line and the packages; a
# training stage also runs stages/launch.py, which starts it under runtime.launch
CODE = ["stages/cli.py", "spt", "study"]
LAUNCHER = "stages/launch.py"


def dvc_stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def names(entries):
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def test_one_name_per_stage():
    assert list(dvc_stages()) == [*STAGES, *STUDY, "compare"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for stage, spec in dvc_stages().items():
        if stage in STUDY:
            continue
        if stage == "compare":
            assert "study" in spec["params"]
            continue
        assert spec["cmd"] == stage_command(stage)
        module = importlib.import_module(f"stages.{stage}")
        assert module.__doc__.startswith(f"{stage}:")
        assert getattr(module, "STAGE", stage) == stage
        assert stage in Params.model_fields and stage in params
        assert stage in spec["params"]
        if stage in paths.TRAINING_STAGES:
            assert "runtime" in spec["params"]  # a new launcher reruns the stage (and is in its fingerprint)


def test_every_stage_depends_on_its_module_and_the_shared_code():
    for stage, spec in dvc_stages().items():
        module = stage_module(spec["cmd"])
        launcher = [LAUNCHER] if module in paths.TRAINING_STAGES else []
        assert spec["deps"][:4 + len(launcher)] == [f"stages/{module}.py", *launcher, *CODE], stage


def test_no_param_reaches_a_shell_and_launched_stages_declare_runtime():
    """A ${param} in a command is pasted into the shell DVC runs it with; runtime.launch is read by stages.launch."""
    for stage, spec in dvc_stages().items():
        assert "${runtime" not in spec["cmd"], stage
        launched = spec["cmd"].startswith("python -m stages.launch ")
        assert launched == (stage_module(spec["cmd"]) in paths.TRAINING_STAGES), stage
        if launched:
            assert "runtime" in spec["params"], stage  # a new launcher reruns the stage


def test_outputs_match_the_paths_module():
    stages = dvc_stages()
    assert names(stages["prepare"]["outs"]) == [str(paths.PROCESSED), str(paths.DATA_REPORT),
                                             str(paths.plots_dir("prepare")), str(paths.metrics_file("prepare"))]
    assert stages["prepare"]["outs"][1][str(paths.DATA_REPORT)] == {"cache": False}
    for stage in paths.TRAINING_STAGES:
        outs = stages[stage]["outs"]
        assert names(outs) == [str(paths.model_dir(stage)), str(paths.checkpoint_dir(stage)),
                               str(paths.plots_dir(stage)), str(paths.metrics_file(stage))]
        assert outs[1][str(paths.checkpoint_dir(stage))] == {"persist": True, "cache": False}
    for stage in STAGES:
        assert names(stages[stage]["outs"])[-1] == str(paths.metrics_file(stage))
        assert stages[stage]["outs"][-1][str(paths.metrics_file(stage))] == {"cache": False}
        assert f"stages/{stage}.py" in stages[stage]["deps"]
    assert names(stages["compare"]["outs"]) == [str(paths.REPORT), "reports/compare.png", "reports/label_budget.png",
                                                str(paths.plots_dir("compare")), str(paths.metrics_file("compare"))]


def test_dvc_exp_show_starts_with_the_result():
    """Metrics are declared once, at the top level, in the order `dvc exp show` lists them."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert spec["metrics"][:2] == [str(paths.metrics_file("evaluate")), str(paths.metrics_file("compare"))]
    assert not any("metrics" in stage for stage in spec["stages"].values())
    declared = {name for stage in spec["stages"].values() for name in names(stage["outs"])
                if name.startswith("metrics/")}
    covered = set(spec["metrics"])
    assert declared and all(any(name == entry or name.startswith(entry + "/") for entry in covered)
                            for name in declared)


def test_checkpoints_flow_forward():
    stages = dvc_stages()
    assert str(paths.PROCESSED) in stages["pretrain_unsup"]["deps"]
    assert str(paths.model_dir("pretrain_unsup")) in stages["pretrain_sup"]["deps"]
    assert "models/${finetune.init_from}" in stages["finetune"]["deps"]
    assert str(paths.model_dir("finetune")) in stages["evaluate"]["deps"]


def test_stage_params_cover_what_the_config_defines():
    declared = {p.split(".")[0] for spec in dvc_stages().values() for p in spec["params"]}
    # every section is some stage's dependency, except tracking (it never changes results)
    assert set(Params.model_fields) - declared == {"tracking"}


def test_plot_files_exist_in_stage_outputs():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    plot_dirs = {str(paths.plots_dir(stage)) for stage in [*STAGES, "compare"]}
    assert spec["plots"]
    for entry in spec["plots"]:
        assert str(Path(next(iter(entry))).parent) in plot_dirs


@pytest.mark.parametrize("addressing, stage", [
    (None, "finetune"),                                  # by hand: the stage named after the module
    ("", "finetune"),
    ("finetune", "finetune"),                            # the main chain's stage
    ("study_baseline@baseline-42", "study_baseline"),    # an instance of a matrix stage
    ("study_sweep_finetune@gradcos-1.0-42", "study_sweep_finetune"),
    ("dvc.yaml:study_budget_finetune@spt-8-42", "study_budget_finetune"),  # addressed with its file
])
def test_the_dvc_stage_is_the_one_dvc_names(monkeypatch, addressing, stage):
    """DVC sets $DVC_STAGE to the stage's address for every command it runs (dvc/stage/run.py)."""
    if addressing is not None:
        monkeypatch.setenv("DVC_STAGE", addressing)
    assert paths.dvc_stage("finetune") == stage


def test_declared_params_are_dvc_yamls_and_a_missing_stage_is_named(monkeypatch):
    from spt.errors import UserError

    monkeypatch.chdir(REPO)
    stages = dvc_stages()
    assert paths.declared_params("study_budget_pretrain") == stages["study_budget_pretrain"]["params"]
    with pytest.raises(UserError, match="cannot read the params of stage 'study_nothing'"):
        paths.declared_params("study_nothing")

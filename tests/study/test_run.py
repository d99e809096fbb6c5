"""A study run's identity (study/run.py), and the study's matrix stages in dvc.yaml: each runs its module as an
arm, with the params of its kind of stage, and writes where the run's name says."""

import re
from pathlib import Path

import pytest
import yaml

from spt import paths
from spt.config import WEIGHTINGS, PretrainSupConfig
from study.arms import ARMS, ARMS_OF, FLOOR_ARMS, MATCHED_ARMS, TAPT_FIXED, TAPT_KEYS
from study.curve import labels_dir
from study.run import Run, name_of, study_tags, twins
from study.sweep import Setting
from tests.support import REPO, stage_command, stage_module

STUDY = {"study_pretrain": "pretrain_sup", "study_tapt": "pretrain_sup", "study_finetune": "finetune",
         "study_tapt_finetune": "finetune", "study_baseline": "finetune", "study_matched": "finetune",
         "study_evaluate": "evaluate", "study_tapt_evaluate": "evaluate", "study_evaluate_matched": "evaluate"}
SWEEP = {"study_sweep_pretrain": "pretrain_sup", "study_sweep_finetune": "finetune",
         "study_sweep_evaluate": "evaluate"}  # the spt arm with another weighting and lambda -> module
FLOORS = "study_floors"  # evaluate --arm tfidf|embeddings: no seed
BUDGET = {"study_budget_pretrain": "pretrain_sup", "study_budget_tapt": "pretrain_sup",
          "study_budget_finetune": "finetune", "study_budget_tapt_finetune": "finetune",
          "study_budget_baseline": "finetune", "study_budget_matched": "finetune", "study_budget_evaluate": "evaluate",
          "study_budget_tapt_evaluate": "evaluate",
          "study_budget_evaluate_matched": "evaluate", "study_budget_floors": "evaluate"}  # the labels-per-class curve


def dvc_stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_of(spec) -> str:
    return stage_module(spec["cmd"])


def arms(spec) -> list[str]:
    """A matrix stage's arms; a list params.yaml chooses stands for every value it may hold."""
    listed = spec["matrix"]["arm"]
    if isinstance(listed, list):
        return listed
    return {"${study.pretrained_controls}": ["tapt"], "${study.matched_baselines}": list(MATCHED_ARMS),
            "${floors.arms}": list(FLOOR_ARMS)}[listed]


def names(entries):
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


# --------------------------------------------------------------------------------------------
# the Run


def test_a_runs_name_says_where_it_sits_on_the_studys_axes():
    assert Run("spt", 42).name == "spt-42"
    assert Run("tfidf").name == "tfidf"  # a floor of the full set: one run, no seed
    assert Run("spt", 42, Setting("normalized", 2)).name == "spt-normalized-l2-42"
    assert Run("spt", 42, Setting("normalized", 2.0)).name == "spt-normalized-l2.0-42"  # as dvc.yaml writes it
    assert Run("baseline", 3, labels_per_class=8).name == "baseline-n8-3"
    assert Run("tfidf", 3, labels_per_class=8).name == "tfidf-n8-3"  # a floor on the curve: seeded
    assert name_of(None) is None and name_of(Run("tapt", 1)) == "tapt-1"


def test_a_run_reads_its_labels_from_its_point_of_the_curve():
    assert Run("spt", 42).labeled == paths.LABELED
    assert Run("spt", 42, Setting("fixed", 2)).labeled == paths.LABELED
    assert Run("spt", 42, labels_per_class=8).labeled == Path("data/budgets/n8-42/labeled")
    assert labels_dir(8, 42) == Path("data/budgets/n8-42")


def test_the_same_point_for_another_arm_and_the_arms_own_setting():
    run = Run("spt", 42, Setting("gradcos", 0.3))
    assert run.with_arm("tapt") == Run("tapt", 42, Setting("gradcos", 0.3))
    assert run.without_setting() == Run("spt", 42)
    assert Run("baseline_matched", 7, labels_per_class=4).with_arm("spt").name == "spt-n4-7"
    assert twins(run) == ("spt-42",)  # a setting of the sweep may copy the spt arm's run of its seed
    assert twins(Run("spt", 42)) == () and twins(None) == ()
    assert Setting("fixed", 1) == Setting("fixed", 1.0)  # by value: one lambda, two spellings


def test_tags_tell_study_runs_apart():
    assert study_tags(None) == {"study_run": "main"}
    assert study_tags(Run("tapt", 42)) == {"study_run": "tapt-42", "arm": "tapt"}
    assert Run("spt", 42, Setting("fixed", 2)).tags() == {"study_run": "spt-fixed-l2-42", "arm": "spt",
                                                          "weighting": "fixed", "lambda": "2.0"}
    assert Run("tfidf", 3, labels_per_class=8).tags() == {"study_run": "tfidf-n8-3", "arm": "tfidf",
                                                          "labels_per_class": "8"}


def test_sweep_run_names_are_path_safe_and_never_an_arms():
    names_ = {Run("spt", 42, Setting(weighting, lambda_)).name
              for weighting in WEIGHTINGS for lambda_ in (2, 2.0, 0.3, 1e-05, 1.5e20)}
    assert "spt-normalized-l2-42" in names_ and "spt-normalized-l2.0-42" in names_
    assert len(names_) == 4 * 5 and all(re.fullmatch(r"[A-Za-z0-9_.+-]+", name) for name in names_)
    arm_runs = {Run(arm, 42).name for arm in ARMS} | {Run(floor).name for floor in FLOOR_ARMS}
    assert len(arm_runs) == len(ARMS) + len(FLOOR_ARMS) and not names_ & arm_runs


def test_a_name_reads_back_as_its_run():
    """tools/mirror.py reads the run from an output path (metrics/study/<name>/...) to tag a run DVC skipped."""
    runs = [Run("spt", 42), Run("baseline_flops", 7), Run("tfidf"), Run("embeddings", 3, labels_per_class=8),
            Run("baseline_matched", 7, labels_per_class=16),
            *(Run("spt", 42, Setting(weighting, lambda_)) for weighting in WEIGHTINGS
              for lambda_ in (2, 2.0, 0.3, 1e-05, 1.5e20))]
    for run in runs:
        back = Run.from_name(run.name)
        assert back == run and back.name == run.name and back.tags() == run.tags()
    for name in ("bert-42", "spt-", "spt-42-x", "spt-fixed-42"):
        with pytest.raises(ValueError, match="names no study run"):
            Run.from_name(name)


# --------------------------------------------------------------------------------------------
# the study's matrix stages in dvc.yaml


def test_every_study_stage_runs_its_module_as_an_arm():
    stages = dvc_stages()
    for stage, module in STUDY.items():
        spec = stages[stage]
        assert module_of(spec) == module
        assert spec["cmd"] == f"{stage_command(module)} --arm ${{item.arm}} --seed ${{item.seed}}"
        assert spec["matrix"]["seed"] == "${study.seeds}"
    # every arm is finetuned by exactly one matrix stage and evaluated
    finetuned = [arm for stage in ("study_finetune", "study_tapt_finetune", "study_baseline", "study_matched")
                 for arm in arms(stages[stage])]
    assert sorted(finetuned) == sorted(ARMS)
    evaluated = [arm for stage in ("study_evaluate", "study_tapt_evaluate", "study_evaluate_matched")
                 for arm in arms(stages[stage])]
    assert sorted(evaluated) == sorted(ARMS)
    assert stages["study_evaluate"]["matrix"]["arm"] == ["spt", "baseline"]  # always run
    for stage in ("study_matched", "study_evaluate_matched"):  # params.yaml lists which run
        assert stages[stage]["matrix"]["arm"] == "${study.matched_baselines}"
    for stage in ("study_tapt", "study_tapt_finetune", "study_tapt_evaluate"):
        assert stages[stage]["matrix"]["arm"] == "${study.pretrained_controls}"
    assert stages["study_pretrain"]["matrix"]["arm"] == ["spt"]
    # the floors: one run each, no seed
    assert stages[FLOORS]["cmd"] == "python -m stages.evaluate --arm ${item.arm}"
    assert stages[FLOORS]["matrix"] == {"arm": "${floors.arms}"}  # params.yaml lists which run
    assert set(yaml.safe_load(paths.PARAMS.read_text())["floors"]["arms"]) <= set(FLOOR_ARMS)
    assert not set(FLOOR_ARMS) & set(ARMS)
    assert stages[FLOORS]["deps"] == ["stages/evaluate.py", "stages/cli.py", "spt", "study", str(paths.PROCESSED)]
    assert {"model", "floors", "evaluate"} <= set(stages[FLOORS]["params"])  # embeddings: model.source


def test_each_module_runs_as_exactly_the_arms_its_command_line_accepts():
    """--arm's choices (study.arms.ARMS_OF) are the arms dvc.yaml runs each module as: an arm no stage runs, or a
    stage whose arm the command line refuses, fails here rather than in `dvc repro`."""
    stages = dvc_stages()
    for group in (STUDY, BUDGET):
        run_as = {}
        for stage in group:
            run_as.setdefault(module_of(stages[stage]), []).extend(arms(stages[stage]))
        if group is STUDY:
            run_as["evaluate"] += arms(stages[FLOORS])
        assert {module: sorted(listed) for module, listed in run_as.items()} == \
            {module: sorted(accepted) for module, accepted in ARMS_OF.items()}


def test_study_paths_match_the_run():
    stages = dvc_stages()
    run = Run("${item.arm}", "${item.seed}").name
    assert run == "${item.arm}-${item.seed}"
    for stage, module in STUDY.items():
        if module == "evaluate":
            continue
        assert names(stages[stage]["outs"]) == [
            str(paths.model_dir(module, run)), str(paths.checkpoint_dir(module, run)),
            str(paths.plots_dir(module, run)), str(paths.metrics_file(module, run))]
    assert str(paths.model_dir("pretrain_sup", run)) in stages["study_finetune"]["deps"]
    for stage in ("study_baseline", "study_matched"):
        assert str(paths.model_dir("pretrain_unsup")) in stages[stage]["deps"]
        assert not any("pretrain_sup" in dep and "metrics" not in dep for dep in stages[stage]["deps"])
    spt_run = Run("baseline_matched", "${item.seed}").with_arm("spt").name
    assert str(paths.metrics_file("pretrain_sup", spt_run)) in stages["study_matched"]["deps"]
    assert names(stages["study_evaluate"]["outs"]) == [str(paths.plots_dir("evaluate", run)),
                                                       str(paths.metrics_file("evaluate", run))]
    assert str(paths.model_dir("finetune", run)) in stages["study_evaluate"]["deps"]
    floor = Run("${item.arm}").name
    assert names(stages[FLOORS]["outs"]) == [str(paths.plots_dir("evaluate", floor)),
                                              str(paths.metrics_file("evaluate", floor))]


def test_the_sweep_is_the_spt_arm_with_another_setting():
    """study_sweep_*: one matrix over study.weightings x study.lambdas x study.seeds; each runs the module the spt
    arm's stage runs, with --weighting and --lambda, declares the same params and writes the paths the code names."""
    stages = dvc_stages()
    run = Run("spt", "${item.seed}", Setting("${item.weighting}", "${item.lambda}")).name
    assert run == "spt-${item.weighting}-l${item.lambda}-${item.seed}"
    for stage, module in SWEEP.items():
        spec = stages[stage]
        # the spt arm's own stage of that module
        [own] = [name for name, arm_module in STUDY.items() if arm_module == module and "spt" in arms(stages[name])]
        arm = stages[own]
        assert module_of(spec) == module
        # in this order: DVC names each stage by the values in matrix order (study_sweep_pretrain@fixed-0.5-7)
        assert list(spec["matrix"].items()) == [("weighting", "${study.weightings}"), ("lambda", "${study.lambdas}"),
                                                ("seed", "${study.seeds}")]
        assert spec["cmd"] == (f"{stage_command(module)} --arm spt --seed ${{item.seed}} "
                               "--weighting ${item.weighting} --lambda ${item.lambda}")
        assert spec["params"] == arm["params"]  # the spt arm's own params: nothing reads study.lambdas
        assert spec["deps"][:5] == arm["deps"][:5]
        assert [out if isinstance(out, str) else next(iter(out)) for out in spec["outs"]] == \
            [name.replace("${item.arm}-${item.seed}", run) for name in names(arm["outs"])]
        assert [out for out in spec["outs"] if isinstance(out, dict)] == \
            [{name.replace("${item.arm}-${item.seed}", run): value for name, value in out.items()}
             for out in arm["outs"] if isinstance(out, dict)]
    assert str(paths.model_dir("pretrain_sup", run)) in stages["study_sweep_finetune"]["deps"]
    assert str(paths.model_dir("finetune", run)) in stages["study_sweep_evaluate"]["deps"]
    # compare declares the spt arm's own setting (a candidate) besides the study section
    assert {"study", "pretrain_sup.weighting", "pretrain_sup.lambda"} <= set(stages["compare"]["params"])


def test_budget_stages_match_the_run():
    """The labels-per-class curve: per point and seed, prepare draws the labels, then the study's arms and floors."""
    stages = dvc_stages()
    labels = str(labels_dir("${item.n}", "${item.seed}"))
    assert labels == "data/budgets/n${item.n}-${item.seed}"
    prepare = stages["study_budget_prepare"]
    assert prepare["matrix"] == {"n": "${study.labels_per_class}", "seed": "${study.seeds}"}
    assert prepare["cmd"] == "python -m stages.prepare --labels-per-class ${item.n} --seed ${item.seed}"
    assert prepare["outs"] == [labels] and str(paths.PROCESSED) in prepare["deps"]
    assert prepare["params"] == ["study.cap_validation"]  # it reads nothing else (tests/stages/test_cli.py)
    run = Run("${item.arm}", "${item.seed}", labels_per_class="${item.n}")
    assert run.name == "${item.arm}-n${item.n}-${item.seed}"
    assert str(run.labeled) == f"{labels}/labeled"
    for stage, module in BUDGET.items():
        spec = stages[stage]
        assert spec["cmd"] == (f"{stage_command(module)} --arm ${{item.arm}} "
                               "--seed ${item.seed} --labels-per-class ${item.n}")
        assert list(spec["matrix"]) == ["arm", "n", "seed"]
        assert (spec["matrix"]["n"], spec["matrix"]["seed"]) == ("${study.labels_per_class}", "${study.seeds}")
        # its twin: the study's stage of that module and those arms; the same params (a point of the curve changes
        # the labels, nothing else; but pretrain_sup reads how many of its examples are labeled)
        [twin] = [name for name in [*STUDY, FLOORS] if module_of(stages[name]) == module
                  and stages[name]["matrix"]["arm"] == spec["matrix"]["arm"]]
        extra = ["study.labeled_share"] if stage in ("study_budget_pretrain", "study_budget_tapt") else []
        assert spec["params"] == [*stages[twin]["params"], *extra]
        kinds = ([paths.model_dir, paths.checkpoint_dir, paths.plots_dir, paths.metrics_file] if module != "evaluate"
                 else [paths.plots_dir, paths.metrics_file])
        assert names(spec["outs"]) == [str(kind(module, run.name)) for kind in kinds]
        assert (labels in spec["deps"]) == (module != "evaluate" or stage == "study_budget_floors")
    assert str(paths.model_dir("pretrain_sup", run.name)) in stages["study_budget_finetune"]["deps"]
    assert str(paths.metrics_file("pretrain_sup", run.with_arm("spt").name)) in stages["study_budget_matched"]["deps"]
    assert str(paths.model_dir("finetune", run.name)) in stages["study_budget_evaluate"]["deps"]



def test_tapt_declares_exactly_the_pretrain_sup_keys_it_reads():
    """study_tapt and study_budget_tapt declare TAPT_KEYS and nothing else of pretrain_sup: a change of lambda or the
    weighting (moot at lambda = 0) reruns no tapt stage, and a key tapt reads is declared (DeclaredParams refuses
    an undeclared read)."""
    stages = dvc_stages()
    for stage in ("study_tapt", "study_budget_tapt"):
        keys = [entry.removeprefix("pretrain_sup.") for entry in stages[stage]["params"]
                if entry.startswith("pretrain_sup")]
        assert keys == list(TAPT_KEYS)
    fixed = {key.removesuffix("_") for key in TAPT_FIXED}
    assert not fixed & set(TAPT_KEYS)
    every_key = {field.alias or name for name, field in PretrainSupConfig.model_fields.items()}
    assert every_key - set(TAPT_KEYS) - fixed == {"uncertainty_learning_rate"}  # the default: moot at lambda = 0

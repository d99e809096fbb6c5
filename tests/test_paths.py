"""dvc.yaml, params.yaml and the code agree on stages, paths and params (declared once)."""

import importlib
from pathlib import Path

import yaml

from stages.common import paths
from stages.common.config import Params

REPO = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "pretrain_unsup", "pretrain_sup", "finetune", "evaluate"]
STUDY = {"study_pretrain": "pretrain_sup", "study_finetune": "finetune", "study_baseline": "finetune",
         "study_matched": "finetune", "study_evaluate": "evaluate", "study_evaluate_matched": "evaluate"}  # -> module
SWEEP = {"study_sweep_pretrain": "pretrain_sup", "study_sweep_finetune": "finetune",
         "study_sweep_evaluate": "evaluate"}  # the spt arm with another weighting and lambda -> module
FLOORS = "study_floors"  # evaluate --variant tfidf|embeddings: no seed
BUDGET = {"study_budget_pretrain": "pretrain_sup", "study_budget_finetune": "finetune",
          "study_budget_baseline": "finetune", "study_budget_matched": "finetune", "study_budget_evaluate": "evaluate",
          "study_budget_evaluate_matched": "evaluate", "study_budget_floors": "evaluate"}  # the label-budget curve
# Training stages start with the launcher from params.yaml (python, torchrun, accelerate launch); the rest with python.
LAUNCH = "${runtime.launch}"


def launcher(module: str) -> str:
    return LAUNCH if module in paths.TRAINING_STAGES else "python"


def dvc_stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def variants(stage_spec) -> list[str]:
    """A matrix stage's variants; a list params.yaml chooses stands for every value it may hold."""
    listed = stage_spec["matrix"]["variant"]
    return list(paths.MATCHED_ARMS) if listed == "${study.matched_baselines}" else listed


def names(entries):
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def test_one_name_per_stage():
    assert list(dvc_stages()) == [*STAGES, *STUDY, *SWEEP, FLOORS, "study_budget_prepare", *BUDGET, "compare"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = dvc_stages()
    for stage, module in STUDY.items():
        assert stages[stage]["cmd"] == (f"{launcher(module)} -m stages.{module} "
                                        "--variant ${item.variant} --seed ${item.seed}")
        assert stages[stage]["matrix"]["seed"] == "${study.seeds}"
        assert {paths.dvc_stage(module, variant) for variant in variants(stages[stage])} == {stage}
    # every arm is finetuned by exactly one matrix stage and evaluated
    finetuned = [variant for stage in ("study_finetune", "study_baseline", "study_matched")
                 for variant in variants(stages[stage])]
    assert sorted(finetuned) == sorted(paths.STUDY_VARIANTS)
    assert stages["study_evaluate"]["matrix"]["variant"] == [*paths.PRETRAINED_ARMS, "baseline"]
    for stage in ("study_matched", "study_evaluate_matched"):  # params.yaml lists which run
        assert stages[stage]["matrix"]["variant"] == "${study.matched_baselines}"
    assert stages["study_pretrain"]["matrix"]["variant"] == list(paths.PRETRAINED_ARMS)
    # the floors: one run each, no seed
    assert stages[FLOORS]["cmd"] == "python -m stages.evaluate --variant ${item.variant}"
    assert stages[FLOORS]["matrix"] == {"variant": "${floors.variants}"}  # params.yaml lists which run
    assert set(yaml.safe_load(paths.PARAMS.read_text())["floors"]["variants"]) <= set(paths.FLOOR_ARMS)
    assert {paths.dvc_stage("evaluate", floor) for floor in paths.FLOOR_ARMS} == {FLOORS}
    assert not set(paths.FLOOR_ARMS) & set(paths.STUDY_VARIANTS)
    for stage, spec in dvc_stages().items():
        if stage in STUDY or stage in SWEEP or stage in BUDGET or stage in (FLOORS, "study_budget_prepare"):
            continue
        if stage == "compare":
            assert "study" in spec["params"]
            continue
        assert spec["cmd"] == f"{launcher(stage)} -m stages.{stage}"
        module = importlib.import_module(f"stages.{stage}")
        assert module.__doc__.startswith(f"{stage}:")
        assert getattr(module, "STAGE", stage) == stage
        assert stage in Params.model_fields and stage in params
        assert stage in spec["params"]
        if stage in paths.TRAINING_STAGES:
            assert "runtime" in spec["params"]  # a new launcher reruns the stage (and is in its fingerprint)


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


def test_dvc_exp_show_starts_with_the_result():
    """Metrics are declared once, at the top level, in the order `dvc exp show` lists them."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert spec["metrics"][:2] == [str(paths.metrics_file("evaluate")), str(paths.metrics_file("compare"))]
    assert not any("metrics" in stage for stage in spec["stages"].values())
    declared = {name for stage in spec["stages"].values() for name in names(stage["outs"])
                if name.startswith("metrics/")}
    covered = set(spec["metrics"])
    assert all(any(name == entry or name.startswith(entry + "/") for entry in covered) for name in declared)


def test_checkpoints_flow_forward():
    stages = dvc_stages()
    assert str(paths.PROCESSED) in stages["pretrain_unsup"]["deps"]
    assert str(paths.model_dir("pretrain_unsup")) in stages["pretrain_sup"]["deps"]
    assert "models/${finetune.init_from}" in stages["finetune"]["deps"]
    assert str(paths.model_dir("finetune")) in stages["evaluate"]["deps"]


def test_study_paths_match_the_paths_module():
    stages = dvc_stages()
    run = "${item.variant}-${item.seed}"
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
    assert str(paths.metrics_file("pretrain_sup", "spt-${item.seed}")) in stages["study_matched"]["deps"]
    assert names(stages["study_evaluate"]["outs"]) == [str(paths.plots_dir("evaluate", run)),
                                                       str(paths.metrics_file("evaluate", run))]
    assert str(paths.model_dir("finetune", run)) in stages["study_evaluate"]["deps"]
    floor = paths.study_run_name("${item.variant}", None)
    assert names(stages[FLOORS]["outs"]) == [str(paths.plots_dir("evaluate", floor)),
                                              str(paths.metrics_file("evaluate", floor))]
    assert stages[FLOORS]["deps"] == ["stages/evaluate.py", "stages/common", str(paths.PROCESSED)]
    assert {"model", "floors", "evaluate"} <= set(stages[FLOORS]["params"])  # embeddings: model.source
    assert names(stages["compare"]["outs"]) == [str(paths.REPORT), "reports/compare.png", "reports/label_budget.png",
                                                str(paths.plots_dir("compare")), str(paths.metrics_file("compare"))]


def test_budget_stages_match_the_paths_module():
    """The label-budget curve: per budget and seed, prepare draws the labels, then the study's arms and floors."""
    stages = dvc_stages()
    labels = str(paths.budget_dir("${item.n}", "${item.seed}"))
    prepare = stages["study_budget_prepare"]
    assert prepare["matrix"] == {"n": "${study.n_per_class}", "seed": "${study.seeds}"}
    assert prepare["cmd"] == "python -m stages.prepare --n-per-class ${item.n} --seed ${item.seed}"
    assert prepare["outs"] == [labels] and str(paths.PROCESSED) in prepare["deps"]
    assert paths.dvc_stage("prepare", budget=True) == "study_budget_prepare"
    run = paths.study_run_name("${item.variant}", "${item.seed}", budget="${item.n}")
    assert run == "${item.variant}-n${item.n}-${item.seed}"
    for stage, module in BUDGET.items():
        spec = stages[stage]
        assert spec["cmd"] == (f"{launcher(module)} -m stages.{module} --variant ${{item.variant}} "
                               "--seed ${item.seed} --n-per-class ${item.n}")
        assert list(spec["matrix"]) == ["variant", "n", "seed"]
        assert (spec["matrix"]["n"], spec["matrix"]["seed"]) == ("${study.n_per_class}", "${study.seeds}")
        assert {paths.dvc_stage(module, variant, budget=True) for variant in
                (paths.FLOOR_ARMS if stage == "study_budget_floors" else variants(spec))} == {stage}
        # the same params as the study's stage of that variant: a budget changes the labels, nothing else (but
        # pretrain_sup reads how many of its examples are labeled)
        twin = paths.dvc_stage(module, paths.FLOOR_ARMS[0] if stage == "study_budget_floors" else variants(spec)[0])
        extra = ["study.labeled_share"] if stage == "study_budget_pretrain" else []
        assert spec["params"] == [*stages[twin]["params"], *extra]
        kinds = ([paths.model_dir, paths.checkpoint_dir, paths.plots_dir, paths.metrics_file] if module != "evaluate"
                 else [paths.plots_dir, paths.metrics_file])
        assert names(spec["outs"]) == [str(kind(module, run)) for kind in kinds]
        assert (labels in spec["deps"]) == (stage not in ("study_budget_evaluate", "study_budget_evaluate_matched"))
    assert str(paths.model_dir("pretrain_sup", run)) in stages["study_budget_finetune"]["deps"]
    assert str(paths.metrics_file("pretrain_sup", "spt-n${item.n}-${item.seed}")) in \
        stages["study_budget_matched"]["deps"]
    assert str(paths.model_dir("finetune", run)) in stages["study_budget_evaluate"]["deps"]


def test_stage_params_cover_what_the_config_defines():
    declared = {p.split(".")[0] for spec in dvc_stages().values() for p in spec["params"]}
    # every section is some stage's dependency, except tracking (it never changes results)
    assert set(Params.model_fields) - declared == {"tracking"}


def test_plot_files_exist_in_stage_outputs():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    plot_dirs = {str(paths.plots_dir(stage)) for stage in [*STAGES, "compare"]}
    for entry in spec["plots"]:
        assert str(Path(next(iter(entry))).parent) in plot_dirs


def test_the_sweep_is_the_spt_arm_with_another_setting():
    """study_sweep_*: one matrix over study.weightings x study.lambdas x study.seeds; each runs the module the spt
    arm's stage runs, with --weighting and --lambda, declares the same params and writes the paths the code names."""
    stages = dvc_stages()
    setting = paths.SweepSetting("${item.weighting}", "${item.lambda}")
    run = paths.study_run_name("spt", "${item.seed}", setting)
    assert run == "spt-${item.weighting}-l${item.lambda}-${item.seed}"
    for stage, module in SWEEP.items():
        spec, arm = stages[stage], stages[paths.dvc_stage(module, "spt")]
        assert paths.dvc_stage(module, "spt", sweep=True) == stage
        # in this order: DVC names each stage by the values in matrix order (paths.dvc_stage_instance)
        assert list(spec["matrix"].items()) == [("weighting", "${study.weightings}"), ("lambda", "${study.lambdas}"),
                                                ("seed", "${study.seeds}")]
        assert spec["cmd"] == (f"{launcher(module)} -m stages.{module} --variant spt --seed ${{item.seed}} "
                               "--weighting ${item.weighting} --lambda ${item.lambda}")
        assert spec["params"] == arm["params"]  # the spt arm's own params: nothing reads study.lambdas
        assert spec["deps"][:3] == arm["deps"][:3]
        assert [out if isinstance(out, str) else next(iter(out)) for out in spec["outs"]] == \
            [name.replace("${item.variant}-${item.seed}", run) for name in names(arm["outs"])]
        assert [out for out in spec["outs"] if isinstance(out, dict)] == \
            [{name.replace("${item.variant}-${item.seed}", run): value for name, value in out.items()}
             for out in arm["outs"] if isinstance(out, dict)]
    assert str(paths.model_dir("pretrain_sup", run)) in stages["study_sweep_finetune"]["deps"]
    assert str(paths.model_dir("finetune", run)) in stages["study_sweep_evaluate"]["deps"]
    assert paths.dvc_stage_instance("pretrain_sup", "spt", 42, paths.SweepSetting("normalized", 2)) == \
        "study_sweep_pretrain@normalized-2-42"
    assert paths.dvc_stage_instance("pretrain_sup", "tapt", 42) == "study_pretrain@tapt-42"
    # compare declares the spt arm's own setting (a candidate) besides the study section
    assert {"study", "pretrain_sup.weighting", "pretrain_sup.lambda"} <= set(stages["compare"]["params"])


def test_sweep_run_names_are_path_safe_and_never_an_arms():
    import re

    from stages.common.config import WEIGHTINGS

    names_ = {paths.study_run_name("spt", 42, paths.SweepSetting(weighting, lambda_))
              for weighting in WEIGHTINGS for lambda_ in (2, 2.0, 0.3, 1e-05, 1.5e20)}
    assert "spt-normalized-l2-42" in names_ and "spt-normalized-l2.0-42" in names_
    assert all(re.fullmatch(r"[A-Za-z0-9_.+-]+", name) for name in names_)
    arms = {paths.study_run_name(arm, 42) for arm in paths.STUDY_VARIANTS} | set(paths.FLOOR_ARMS)
    assert not names_ & arms and len(names_) == 4 * 5

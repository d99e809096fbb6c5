"""The MLflow store mirrors dvc.lock (tools/mirror.py, `make repro`): on a hand-written pipeline and dvc.lock, and a
throw-away SQLite store. On a real `dvc repro` of the tiny profile: tests/e2e/test_mirror.py."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from spt.config import load_params
from spt.tracking import DVC_STAGE_TAG, METRICS_MD5_TAG, OUTS_KEY_TAG, file_md5, outs_key
from tests.support import free_port
from tools import mirror
from tools.sandbox import TINY_PARAMS

DVC_YAML = {"stages": {
    "finetune": {"cmd": "python -m stages.finetune", "params": ["seed", "finetune"],
                 "outs": ["models/finetune", {"plots/finetune": {"cache": False}},
                          {"metrics/finetune.json": {"cache": False}}]},
    "study_evaluate": {"matrix": {"arm": ["spt", "baseline_flops"], "seed": [7]},
                       "cmd": "python -m stages.evaluate --arm ${item.arm} --seed ${item.seed}",
                       "params": ["evaluate"],
                       "outs": [{"plots/study/${item.arm}-${item.seed}/evaluate": {"cache": False}},
                                {"metrics/study/${item.arm}-${item.seed}/evaluate.json": {"cache": False}}]},
    "compare": {"cmd": "python -m stages.compare", "params": ["study"],
                "outs": [{"reports/compare.md": {"cache": False}}, {"metrics/compare.json": {"cache": False}}]}}}
STAGES = ["finetune", "study_evaluate@spt-7", "study_evaluate@baseline_flops-7", "compare"]
INTERVAL = {"mean": 0.8, "low": 0.7, "high": 0.9}
SUMMARY = {"arms": {"spt": {"accuracy_mean": 0.8, "macro_f1_mean": 0.78}}, "floors": {},
           "differences": {"spt_minus_tapt": {"accuracy": {"diff": 0.02, "low": -0.01, "high": 0.05, "p_holm": 0.4}}},
           "label_budget": {"points": [{"labels_per_class": None,
                                        "scores": {"spt": {"accuracy": INTERVAL, "macro_f1": INTERVAL}},
                                        "spt_minus_best_other": {"accuracy": {"diff": 0.01}}}]}}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def lock_entry(root: Path, cmd: str, params: dict, outs: list[str]) -> dict:
    """A dvc.lock entry for outputs in ``root``: a file's md5 as DVC records it, a made-up one for a directory."""
    return {"cmd": cmd, "params": {"params.yaml": params},
            "outs": [{"path": out, "hash": "md5",
                      "md5": file_md5(root / out) if (root / out).is_file() else f"{len(out):032x}.dir"}
                     for out in outs]}


def write_lock(root: Path) -> dict:
    lock = {"schema": "2.0", "stages": {
        "finetune": lock_entry(root, "python -m stages.finetune", {"seed": 7, "finetune": {"max_steps": 8}},
                               ["models/finetune", "plots/finetune", "metrics/finetune.json"]),
        "compare": lock_entry(root, "python -m stages.compare", {"study": {"seeds": [7]}},
                              ["reports/compare.md", "metrics/compare.json"]),
        # a stage dvc.yaml no longer has: not mirrored
        "study_spt@7": lock_entry(root, "python -m stages.finetune --arm spt --seed 7", {}, ["metrics/finetune.json"])}}
    for arm in ("spt", "baseline_flops"):
        lock["stages"][f"study_evaluate@{arm}-7"] = lock_entry(
            root, f"python -m stages.evaluate --arm {arm} --seed 7", {"evaluate": {"batch_size": 16}},
            [f"plots/study/{arm}-7/evaluate", f"metrics/study/{arm}-7/evaluate.json"])
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    return lock


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An empty SQLite store, its tables made once (seconds): each test copies it."""
    import mlflow

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    """A DVC repository (the working directory) with committed outputs and its dvc.lock: (root, the lock)."""
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    write(tmp_path / "metrics/finetune.json", json.dumps({"val_macro_f1": 0.7, "steps": 8, "learned": [1.5, -0.5]}))
    write(tmp_path / "plots/finetune/validation.csv", "step,eval_macro_f1\n0,0.5\n8,0.7\n")
    for arm, accuracy in (("spt", 0.8), ("baseline_flops", 0.75)):
        write(tmp_path / f"metrics/study/{arm}-7/evaluate.json",
              json.dumps({"accuracy": accuracy, "macro_f1": accuracy, "per_class": {"fresh": {"f1": 0.8}},
                          "confusion_matrix": [[3, 1], [1, 3]]}))
        write(tmp_path / f"plots/study/{arm}-7/evaluate/confusion.csv", "actual,predicted\nfresh,fresh\n")
    write(tmp_path / "metrics/compare.json", json.dumps(SUMMARY))
    write(tmp_path / "reports/compare.md", "# the verdict\n")
    for name in ("labeled.csv", "unlabeled.txt"):  # the tiny params' data: only checked to exist
        write(tmp_path / "data/tiny" / name, "")
    return tmp_path, write_lock(tmp_path)


@pytest.fixture
def repo(pipeline, empty_store, monkeypatch):
    """:func:`pipeline` and a fresh SQLite store in it: (root, the lock, the tiny params (experiment spt-tests), the
    store's URI, its client)."""
    import mlflow

    root, lock = pipeline
    shutil.copy(empty_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return root, lock, load_params(TINY_PARAMS), uri, mlflow.MlflowClient(tracking_uri=uri)


def store_runs(client) -> list:
    experiment = client.get_experiment_by_name("spt-tests")
    return client.search_runs([experiment.experiment_id])


def children(client) -> dict:
    return {run.data.tags[DVC_STAGE_TAG]: run for run in store_runs(client) if DVC_STAGE_TAG in run.data.tags}


def test_the_key_is_the_outputs_content_in_any_order():
    outs = [{"path": "metrics/a.json", "md5": "1" * 32}, {"path": "plots/a", "md5": "2" * 32 + ".dir"}]
    assert outs_key(outs) == outs_key(outs[::-1])
    assert outs_key(outs) != outs_key([outs[0], {**outs[1], "md5": "3" * 32 + ".dir"}])  # a changed output
    assert outs_key(outs) != outs_key([outs[0], {**outs[1], "path": "plots/b"}])
    assert len(outs_key(outs)) == 16


def test_committed_metrics_are_the_numbers_of_the_metrics_file(pipeline):
    root, _ = pipeline
    stages = {stage.name: stage for stage in mirror.locked_stages(root)}
    # lists element by element; nested reports (per class, the confusion matrix) stay in the artifact
    assert mirror.committed_metrics(stages["finetune"], root) == {
        "val_macro_f1": 0.7, "steps": 8, "learned_0": 1.5, "learned_1": -0.5}
    assert mirror.committed_metrics(stages["study_evaluate@spt-7"], root) == {"accuracy": 0.8, "macro_f1": 0.8}
    compare = mirror.committed_metrics(stages["compare"], root)
    assert compare["spt_accuracy_low"] == 0.7 and compare["spt_accuracy_high"] == 0.9
    assert compare["spt_minus_tapt_accuracy"] == 0.02 and compare["spt_minus_tapt_accuracy_low"] == -0.01
    assert compare["spt_minus_tapt_accuracy_p_holm"] == 0.4


def test_locked_stages_are_those_dvc_yaml_defines(pipeline):
    root, lock = pipeline
    stages = mirror.locked_stages(root)
    assert [stage.name for stage in stages] == STAGES  # dvc.yaml's order; study_spt@7 is gone from dvc.yaml
    by_name = {stage.name: stage for stage in stages}
    evaluation = by_name["study_evaluate@baseline_flops-7"]
    assert (evaluation.module, evaluation.study_run, evaluation.key) == (
        "evaluate", "baseline_flops-7", outs_key(lock["stages"]["study_evaluate@baseline_flops-7"]["outs"]))
    assert by_name["finetune"].small == ("plots/finetune", "metrics/finetune.json")  # models/finetune is cached
    assert by_name["finetune"].params == {"seed": 7, "finetune.max_steps": 8}


def test_every_stage_of_the_lock_gets_one_run_and_a_second_mirror_adds_nothing(repo):
    root, lock, params, uri, client = repo
    outcome = mirror.mirror(mirror.locked_stages(root), params, uri, root)
    assert outcome.logged == STAGES and outcome.ran == outcome.present == []
    runs = children(client)
    assert sorted(runs) == sorted(STAGES)
    parents = [run for run in store_runs(client) if run.data.tags.get("stage") == "pipeline"]
    assert len(parents) == 1 and parents[0].data.tags["logged_from"] == "dvc.lock"
    for name, run in runs.items():
        assert run.data.tags[OUTS_KEY_TAG] == outs_key(lock["stages"][name]["outs"])
        assert run.data.tags["logged_from"] == "dvc.lock"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED"
    assert {name: run.info.run_name for name, run in runs.items()} == {
        "finetune": "finetune", "study_evaluate@spt-7": "evaluate · spt-7",
        "study_evaluate@baseline_flops-7": "evaluate · baseline_flops-7", "compare": "compare"}
    flops = runs["study_evaluate@baseline_flops-7"]
    assert flops.data.tags["arm"] == "baseline_flops" and flops.data.tags["study_run"] == "baseline_flops-7"
    assert flops.data.metrics["accuracy"] == 0.75 and flops.data.params["evaluate.batch_size"] == "16"
    assert runs["finetune"].data.tags["study_run"] == "main"
    compare = runs["compare"]
    assert compare.data.metrics["spt_accuracy_high"] == 0.9
    assert parents[0].data.metrics["spt_accuracy_low"] == 0.7  # the pipeline's answer on the pipeline run too
    assert {a.path for a in client.list_artifacts(compare.info.run_id)} == {"compare.json", "compare.md"}
    assert [a.path for a in client.list_artifacts(runs["finetune"].info.run_id, "plots")] == [
        "plots/validation.csv"]

    again = mirror.mirror(mirror.locked_stages(root), params, uri, root)
    assert again.logged == [] and again.present == STAGES
    assert len(store_runs(client)) == len(STAGES) + 1


def test_a_stage_that_ran_keeps_its_own_run_and_parent(repo):
    """A stage DVC ran logged itself: its run gets the key, and the stages DVC skipped join its pipeline run. A run of
    older outputs (another metrics file) is left alone."""
    root, lock, params, uri, client = repo
    experiment = client.create_experiment("spt-tests")
    parent = client.create_run(experiment, run_name="pipeline", tags={"stage": "pipeline"}).info.run_id
    own, older = (client.create_run(experiment, run_name="evaluate · spt-7", tags={
        "mlflow.parentRunId": parent, "stage": "evaluate", DVC_STAGE_TAG: "study_evaluate@spt-7",
        METRICS_MD5_TAG: md5}).info.run_id for md5 in (file_md5(root / "metrics/study/spt-7/evaluate.json"), "0" * 32))
    for run_id in (own, older):
        client.set_terminated(run_id)

    outcome = mirror.mirror(mirror.locked_stages(root), params, uri, root)
    assert outcome.ran == ["study_evaluate@spt-7"]
    assert outcome.logged == [name for name in STAGES if name != "study_evaluate@spt-7"]
    assert client.get_run(own).data.tags[OUTS_KEY_TAG] == outs_key(lock["stages"]["study_evaluate@spt-7"]["outs"])
    assert OUTS_KEY_TAG not in client.get_run(older).data.tags
    assert {run.data.tags["mlflow.parentRunId"] for run in children(client).values()} == {parent}
    assert len(store_runs(client)) == len(STAGES) + 2  # the older run and the pipeline run: no new pipeline run


def test_new_outputs_are_logged_once_more(repo):
    root, lock, params, uri, client = repo
    mirror.mirror(mirror.locked_stages(root), params, uri, root)
    write(root / "metrics/study/spt-7/evaluate.json", json.dumps({"accuracy": 0.9, "macro_f1": 0.9}))
    lock["stages"]["study_evaluate@spt-7"]["outs"][1]["md5"] = file_md5(root / "metrics/study/spt-7/evaluate.json")
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))

    assert mirror.mirror(mirror.locked_stages(root), params, uri, root).logged == ["study_evaluate@spt-7"]
    runs = [run for run in store_runs(client) if run.data.tags.get(DVC_STAGE_TAG) == "study_evaluate@spt-7"]
    assert sorted(run.data.metrics["accuracy"] for run in runs) == [0.8, 0.9]


def test_outputs_that_differ_from_the_lock_are_not_logged(repo):
    root, _, params, uri, client = repo
    write(root / "metrics/study/spt-7/evaluate.json", json.dumps({"accuracy": 0.1}))  # not what dvc.lock records
    outcome = mirror.mirror(mirror.locked_stages(root), params, uri, root)
    assert "study_evaluate@spt-7" not in outcome.logged
    assert outcome.skipped == ["study_evaluate@spt-7: metrics/study/spt-7/evaluate.json differs from dvc.lock "
                               "(run `dvc repro` or `dvc checkout`)"]
    assert "study_evaluate@spt-7" not in children(client)


@pytest.mark.parametrize("required, code, says", [(True, 2, "error: could not mirror"),
                                                  (False, 0, "going on without MLflow")])
def test_an_unreachable_store_fails_only_when_tracking_is_required(pipeline, monkeypatch, capsys, required, code,
                                                                  says):
    root, _ = pipeline
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["tracking"]["required"] = required
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    assert mirror.main([]) == code
    error = capsys.readouterr().err
    assert says in error and "python -m tools.mirror" in error

"""End to end: the real `dvc repro` on the tiny profile in a temporary copy of the repository."""

import csv
import json
import re
import shutil

import numpy as np
import pytest
import yaml
from transformers import pipeline

from spt import paths
from spt.hashing import content_sha256
from study.run import Run
from tests.support import run_command
from tools.sandbox import tiny_repository

pytestmark = pytest.mark.e2e

STAGES = ["prepare", "pretrain_unsup", "pretrain_sup", "finetune", "evaluate"]
ARMS = ["spt", "tapt", "baseline", "baseline_matched", "baseline_flops"]
STUDY = ["study_pretrain@spt-7", "study_tapt@tapt-7", "study_finetune@spt-7", "study_tapt_finetune@tapt-7",
         "study_baseline@baseline-7", "study_matched@baseline_matched-7", "study_matched@baseline_flops-7",
         "study_evaluate@spt-7", "study_tapt_evaluate@tapt-7", "study_evaluate@baseline-7",
         *[f"study_evaluate_matched@{arm}-7" for arm in ARMS[3:]],
         "study_floors@tfidf", "study_floors@embeddings", "compare"]


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def lock_outputs(repo) -> dict:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {stage: {out["path"]: out.get("md5") for out in spec.get("outs", [])}
            for stage, spec in lock["stages"].items()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_data):
    """The tiny pipeline, run once. Tests on it only read: a test that runs DVC again takes :func:`own_repo`."""
    repo = tiny_repository(tmp_path_factory.mktemp("pipeline") / "repo", tiny_data)
    result = run_command(repo, "dvc", "repro")
    assert sorted(ran_stages(result.stdout)) == sorted(STAGES + STUDY)
    return repo


@pytest.fixture
def own_repo(repo, tmp_path):
    """A copy of the built repository (outputs, DVC cache, git) for one test to change, with an empty
    MLflow store: the shared one stays as the first `dvc repro` left it, whatever order tests run in."""
    return shutil.copytree(repo, tmp_path / "repo", symlinks=True,
                           ignore=shutil.ignore_patterns("mlflow.db*", "mlartifacts"))


def test_every_stage_wrote_its_outputs(repo):
    # later stages only read their inputs: nothing upstream changed under DVC's feet
    assert "up to date" in run_command(repo, "dvc", "status").stdout
    for stage in ("pretrain_unsup", "pretrain_sup", "finetune"):
        assert (repo / "models" / stage / "model.safetensors").is_file()
        assert [p.name for p in (repo / "checkpoints" / stage).iterdir()] == ["fingerprint"]
        assert json.loads((repo / "metrics" / f"{stage}.json").read_text())["steps"] > 0
    evaluation = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert {"accuracy", "macro_f1", "ece", "per_class", "confusion_matrix"} <= set(evaluation)
    assert 0.0 <= evaluation["accuracy"] <= 1.0
    lambdas = list(csv.DictReader(open(repo / "plots" / "pretrain_sup" / "lambda.csv")))
    assert float(lambdas[0]["lambda"]) > float(lambdas[-1]["lambda"])  # linear_decay in the tiny profile


def test_each_stage_records_the_checkpoint_it_started_from(repo):
    for stage, init in (("pretrain_sup", "pretrain_unsup"), ("finetune", "pretrain_sup")):
        provenance = json.loads((repo / "models" / stage / "provenance.json").read_text())
        assert provenance["init_sha256"] == content_sha256(repo / "models" / init)
    assert json.loads((repo / "metrics" / "finetune.json").read_text())["classifier_carried_over"] is True


def test_finetune_keeps_the_best_validated_classifier(repo):
    import datasets

    from spt.metrics import classification_scores
    from stages.evaluate import predict

    reported = json.loads((repo / "metrics" / "finetune.json").read_text())
    rows = csv.DictReader(open(repo / "plots" / "finetune" / "validation.csv"))
    curve = [row for row in rows if row["eval_macro_f1"]]
    best = max(curve, key=lambda row: float(row["eval_macro_f1"]))  # the first of equals, as the Trainer keeps it
    assert reported["best_step"] == int(best["step"])
    assert reported["val_macro_f1"] == pytest.approx(float(best["eval_macro_f1"]), abs=1e-6)  # the CSV rounds
    validation = datasets.load_from_disk(str(repo / "data" / "processed" / "labeled"))["validation"]
    logits = predict(repo / "models" / "finetune", validation, batch_size=16)
    saved = classification_scores(np.asarray(validation["label"]), logits.argmax(axis=1))
    assert saved["macro_f1"] == pytest.approx(reported["val_macro_f1"], abs=1e-6)


def test_plain_transformers_pipeline_agrees_with_evaluate(repo):
    import datasets

    classifier = pipeline("text-classification", model=str(repo / "models" / "finetune"), device="cpu")
    test = datasets.load_from_disk(str(repo / "data" / "processed" / "labeled"))["test"]
    predicted = [row["label"] for row in classifier(list(test["text"]), truncation=True, max_length=64)]
    rows = list(csv.DictReader(open(repo / "plots" / "evaluate" / "confusion.csv")))
    assert predicted == [row["predicted"] for row in rows]
    accuracy = sum(row["predicted"] == row["actual"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(json.loads((repo / "metrics" / "evaluate.json").read_text())["accuracy"])


def mlflow_runs(repo):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("spt-tests")
    return client, client.search_runs([experiment.experiment_id], order_by=["attribute.start_time ASC"])


def test_one_parent_run_with_a_child_per_stage(repo):
    client, runs = mlflow_runs(repo)
    parents = [r for r in runs if r.data.tags["stage"] == "pipeline"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["stage"] for r in children) == sorted(
        STAGES + ["pretrain_sup"] * 2 + ["finetune"] * 5 + ["evaluate"] * 7 + ["compare"])  # 2 floors
    assert parents[0].data.params["pretrain_sup.lambda"] == "1.0"
    assert parents[0].data.metrics["test_accuracy"] == pytest.approx(
        json.loads((repo / "metrics" / "evaluate.json").read_text())["accuracy"])
    by_stage = {r.data.tags["stage"]: r for r in children if r.data.tags.get("study_run", "main") == "main"}
    history = client.get_metric_history(by_stage["pretrain_sup"].info.run_id, "loss_supervised")
    assert len(history) >= 6  # logged every step in the tiny profile
    assert {"loss_mlm", "lambda", "loss", "learning_rate"} <= set(by_stage["pretrain_sup"].data.metrics)
    assert by_stage["finetune"].data.tags["input_checkpoint_sha256"] == content_sha256(repo / "models" / "pretrain_sup")
    artifacts = {a.path for a in client.list_artifacts(by_stage["evaluate"].info.run_id, "plots")}
    assert "plots/confusion_matrix.png" in artifacts


def test_registered_model_predicts_through_pyfunc(repo):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/spt-classifier/1")
    predictions = model.predict(["a wonderful, moving film", "dull and far too long"])
    assert set(predictions["label"]) <= {"fresh", "rotten"} and len(predictions) == 2


def test_forced_rerun_is_byte_identical(own_repo):
    before = lock_outputs(own_repo)
    run_command(own_repo, "dvc", "repro", "--force")
    assert lock_outputs(own_repo) == before


def test_changing_lambda_reruns_only_the_stages_after_it(own_repo):
    params = yaml.safe_load((own_repo / "params.yaml").read_text())
    params["pretrain_sup"]["lambda"] = 0.5
    (own_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_command(own_repo, "dvc", "repro")
    ran = ran_stages(result.stdout)
    # SPT's chain and what is matched to it run again; nothing that does not read lambda or SPT's output
    assert {"pretrain_sup", "finetune", "evaluate", "study_matched@baseline_matched-7",
            "study_matched@baseline_flops-7", "compare"} <= set(ran)
    assert not set(ran) & {"prepare", "pretrain_unsup", "study_baseline@baseline-7", "study_tapt_finetune@tapt-7",
                           "study_tapt_evaluate@tapt-7", "study_evaluate@baseline-7", "study_floors@tfidf"}
    # tapt's pretraining reads the pretrain_sup section (its budget) with lambda forced to 0: if DVC runs
    # it again it writes the same bytes, so tapt's finetuning never reruns
    assert "up to date" in run_command(own_repo, "dvc", "status").stdout
    for stage in ("pretrain_sup", "finetune"):  # spt with the main seed is still the main chain's run
        assert (own_repo / f"models/study/spt-7/{stage}/model.safetensors").read_bytes() == \
            (own_repo / f"models/{stage}/model.safetensors").read_bytes()
    _, runs = mlflow_runs(own_repo)
    parents = [r for r in runs if r.data.tags["stage"] == "pipeline"]
    assert len(parents) == 1  # the store of this copy started empty
    children = {r.data.tags["stage"] for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert children == {"pretrain_sup", "finetune", "evaluate", "compare"}


def test_compare_reports_every_arm_with_intervals(repo):
    summary = json.loads((repo / "metrics" / "compare.json").read_text())
    arms = {"spt", "tapt", "baseline", "baseline_matched", "baseline_flops"}
    assert set(summary["arms"]) == arms
    # the tfidf floor is compared too; the embeddings floor is skipped: the tiny profile's model.source is scratch
    assert set(summary["differences"]) == {f"spt_minus_{arm}" for arm in arms - {"spt"} | {"tfidf"}}
    assert set(summary["floors"]) == {"tfidf", "embeddings"} and "scratch" in summary["floors"]["embeddings"]["skipped"]
    tfidf = json.loads((repo / "metrics/study/tfidf/evaluate.json").read_text())
    assert summary["floors"]["tfidf"] == {key: tfidf[key] for key in ("accuracy", "macro_f1", "c")}
    assert tfidf["c"] in [0.1, 1.0, 10.0] and set(tfidf["validation_macro_f1"]) == {"0.1", "1", "10"}
    floor_rows = list(csv.DictReader(open(repo / "plots/study/tfidf/evaluate/confusion.csv")))
    main_rows = list(csv.DictReader(open(repo / "plots/evaluate/confusion.csv")))
    assert [row["actual"] for row in floor_rows] == [row["actual"] for row in main_rows]  # the test split, in order
    for diff in summary["differences"].values():
        for metric in ("accuracy", "macro_f1"):
            assert diff[metric]["low"] <= diff[metric]["diff"] <= diff[metric]["high"]
    # spt with the main chain's seed is the main chain's run, copied: its pretraining and its finetuning
    for stage in ("pretrain_sup", "finetune"):
        assert (repo / f"models/study/spt-7/{stage}/model.safetensors").read_bytes() == \
            (repo / f"models/{stage}/model.safetensors").read_bytes()
    # tapt trained pretrain_sup's budget without labels: its classifier never trained and is not carried over
    tapt = json.loads((repo / "models/study/tapt-7/pretrain_sup/provenance.json").read_text())
    assert tapt["classifier_trained"] is False
    assert json.loads((repo / "metrics/study/tapt-7/finetune.json").read_text())["classifier_carried_over"] is False
    spt_pretraining = json.loads((repo / "metrics/study/spt-7/pretrain_sup.json").read_text())
    budget = json.loads((repo / "metrics/study/baseline_matched-7/finetune.json").read_text())["max_steps"]
    assert budget == 8 + 6  # finetune.max_steps + pretrain_sup's 6 steps, same batch size in the tiny profile
    flops_budget = json.loads((repo / "metrics/study/baseline_flops-7/finetune.json").read_text())["max_steps"]
    assert flops_budget > budget  # a pretrain_sup step (two encoder passes and an MLM head) costs more
    assert spt_pretraining["flops"] > 0 and summary["arms"]["baseline_flops"]["training_flops"] > 0
    report = (repo / "reports" / "compare.md").read_text()
    assert "| baseline_flops |" in report and "## What holds on this data" in report and "compare.png" in report
    assert f"| tfidf (floor, C = {tfidf['c']:g}) | {tfidf['accuracy'] * 100:.2f} |" in report
    assert "| spt − tfidf |" in report and "The embeddings floor was skipped: model.source is scratch" in report
    assert (repo / "reports" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert " ± " not in report  # one seed: no spread is shown where there is none
    rows = list(csv.DictReader(open(repo / "plots/compare/validation_macro_f1.csv")))
    assert {row["arm"] for row in rows} == arms
    spt_rows = [row for row in rows if row["arm"] == "spt"]
    assert spt_rows[0]["finetune_step"] == "0"  # validated before finetuning
    assert int(spt_rows[0]["step"]) == 6 and int(spt_rows[0]["flops"]) == int(spt_pretraining["flops"])


def test_a_lambda_sweep_is_chosen_on_validation(own_repo):
    """study.weightings x study.lambdas: the sweep's stages train the spt arm with each setting, and compare picks
    the best validation macro-F1 before it reads any test output (of the winner's only)."""
    params = yaml.safe_load((own_repo / "params.yaml").read_text())
    assert (params["pretrain_sup"]["weighting"], params["pretrain_sup"]["lambda"]) == ("fixed", 1.0)
    params["study"].update(weightings=["fixed"], lambdas=[0.5, 1.0])  # fixed x 1.0 is the spt arm's own setting
    (own_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = ran_stages(run_command(own_repo, "dvc", "repro").stdout)
    sweep = [f"study_sweep_{kind}@fixed-{value}-7" for kind in ("pretrain", "finetune", "evaluate")
             for value in ("0.5", "1.0")]
    assert sorted(ran) == sorted([*sweep, "compare"])  # nothing but the sweep and compare: no arm reads study.*
    for stage in ("pretrain_sup", "finetune"):  # the spt arm's own setting (seed 7: the main chain's run), copied
        assert (own_repo / f"models/study/spt-fixed-l1.0-7/{stage}/model.safetensors").read_bytes() == \
            (own_repo / f"models/study/spt-7/{stage}/model.safetensors").read_bytes()
    swept = json.loads((own_repo / "metrics/study/spt-fixed-l0.5-7/pretrain_sup.json").read_text())
    assert swept["lambda_last"] < 0.5 and swept["steps"] == 6  # linear decay from the swept lambda

    summary = json.loads((own_repo / "metrics/compare.json").read_text())
    selection = summary["selection"]
    validation = [json.loads((own_repo / f"metrics/study/{run}/finetune.json").read_text())["val_macro_f1"]
                  for run in ("spt-7", "spt-fixed-l0.5-7")]
    assert [(c["weighting"], c["lambda"], c["spt_arm"], c["val_macro_f1_mean"]) for c in selection["candidates"]] == \
        [("fixed", 1.0, True, validation[0]), ("fixed", 0.5, False, validation[1])]
    winner, loser = ("spt-7", "spt-fixed-l0.5-7") if validation[0] >= validation[1] else ("spt-fixed-l0.5-7", "spt-7")
    assert selection["chosen"]["runs"] == [winner]
    test = json.loads((own_repo / f"metrics/study/{winner}/evaluate.json").read_text())
    assert summary["arms"]["spt"]["accuracy_mean"] == pytest.approx(test["accuracy"])
    report = (own_repo / "reports/compare.md").read_text()
    assert "## Choosing the weighting and λ on validation" in report
    assert "| fixed (spt arm) | 1 |" in report and "| fixed | 0.5 |" in report and "**chosen**" in report

    _, runs = mlflow_runs(own_repo)
    trained = [r for r in runs if r.data.tags.get("study_run") == "spt-fixed-l0.5-7"]
    assert sorted(r.data.tags["stage"] for r in trained) == ["evaluate", "finetune", "pretrain_sup"]
    assert all((r.data.tags["weighting"], r.data.tags["lambda"]) == ("fixed", "0.5") for r in trained)
    compare_run = next(r for r in runs if r.info.run_name == "compare")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == compare_run.info.run_id]
    assert sorted((r.data.params["weighting"], r.data.params["lambda"], r.data.tags["chosen"]) for r in children) == \
        sorted([("fixed", "1.0", str(winner == "spt-7").lower()), ("fixed", "0.5", str(winner != "spt-7").lower())])

    # compare never opens a losing candidate's test outputs: without them it writes the same
    (own_repo / f"metrics/study/{loser}/evaluate.json").unlink()
    shutil.rmtree(own_repo / f"plots/study/{loser}/evaluate")
    run_command(own_repo, "python", "-m", "stages.compare")
    assert json.loads((own_repo / "metrics/compare.json").read_text()) == summary
    assert (own_repo / "reports/compare.md").read_text() == report


def test_a_label_budget_curve_trains_every_arm_per_budget(own_repo):
    """study.labels_per_class: per budget and seed, prepare draws the labels and the arms and floors train on them;
    compare draws the curve, the full set last. Nothing upstream reruns (no main-chain stage reads study.*)."""
    params = yaml.safe_load((own_repo / "params.yaml").read_text())
    params["study"].update(labels_per_class=[3, 6], cap_validation=True, matched_baselines=[])  # fewer runs: fast
    (own_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = ran_stages(run_command(own_repo, "dvc", "repro").stdout)
    budget = [f"study_budget_prepare@{n}-7" for n in (3, 6)] + [
        f"{stage}@{arm}-{n}-7" for n in (3, 6) for stage, arms in (
            ("study_budget_pretrain", ["spt"]), ("study_budget_tapt", ["tapt"]), ("study_budget_finetune", ["spt"]),
            ("study_budget_tapt_finetune", ["tapt"]), ("study_budget_baseline", ["baseline"]),
            ("study_budget_evaluate", ["spt", "baseline"]), ("study_budget_tapt_evaluate", ["tapt"]),
            ("study_budget_floors", ["tfidf", "embeddings"]))
        for arm in arms]
    assert sorted(ran) == sorted([*budget, "compare"])

    for n in (3, 6):
        drawn = json.loads((own_repo / f"data/budgets/n{n}-7/budget.json").read_text())
        assert drawn["class_balance"] == {"train": {"fresh": n, "rotten": n}, "validation": {"fresh": n, "rotten": n}}
        spt = json.loads((own_repo / f"metrics/study/spt-n{n}-7/pretrain_sup.json").read_text())
        # the few labels cycled among the other train texts (labeled_share 0.5), then the corpus (mix 0.3)
        assert spt["train_examples"] > 2 * drawn["unlabeled_train_texts"]
        tapt = json.loads((own_repo / f"models/study/tapt-n{n}-7/pretrain_sup/provenance.json").read_text())
        assert tapt["classifier_trained"] is False
        for arm in ARMS[:3]:
            assert (own_repo / f"models/study/{arm}-n{n}-7/finetune/model.safetensors").is_file()
    # a budget run's checkpoint is plain transformers, and differs from the full set's
    assert (own_repo / "models/study/spt-n3-7/finetune/model.safetensors").read_bytes() != \
        (own_repo / "models/study/spt-7/finetune/model.safetensors").read_bytes()
    pipeline("text-classification", model=str(own_repo / "models/study/spt-n3-7/finetune"))

    summary = json.loads((own_repo / "metrics/compare.json").read_text())
    points = summary["label_budget"]["points"]
    assert [p["labels_per_class"] for p in points] == [3, 6, None] and summary["label_budget"]["cap_validation"] is True
    for point in points:
        assert sorted(point["scores"]) == sorted([*ARMS[:3], "tfidf"])
        assert point["best_other"] in point["scores"] and point["best_other"] != "spt"
        run = Run("spt", 7, labels_per_class=point["labels_per_class"]).name
        score = json.loads((own_repo / paths.metrics_file("evaluate", run)).read_text())
        assert point["scores"]["spt"]["accuracy"]["mean"] == pytest.approx(score["accuracy"])
    report = (own_repo / "reports/compare.md").read_text()
    assert "## Scarce labels: test accuracy against labels per class" in report and "| 3 |" in report
    assert (own_repo / "reports/label_budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, runs = mlflow_runs(own_repo)
    assert {r.data.tags.get("labels_per_class") for r in runs if r.data.tags.get("study_run") == "spt-n6-7"} == {"6"}

"""The sweep of pretrain_sup's weighting and lambda: compare chooses on validation, and never peeks at test.

Study outputs are constructed files with known answers (no DVC, no training); compare runs as its stage does.
"""

import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from spt import paths
from stages.cli import run_stage
from study.sweep import Candidate, Setting, choose, sweep_candidates
from tests.support import ACTUAL, REPO, predictions, write_json, write_run, write_test_outputs

SEEDS = [1, 2]
# Best validation macro-F1 per seed (binary fractions: means are exact). pretrain_sup's own setting in the tiny
# profile is fixed, lambda 1.0, so the sweep fixed x [0.5, 1.0] + normalized x [0.5, 1.0] has four candidates.
VALIDATION = {"spt": [0.625, 0.75],                    # the spt arm's own setting (fixed, 1.0): mean 0.6875
              "spt-fixed-l0.5": [0.75, 0.625],         # 0.6875: ties with the spt arm, which is listed first
              "spt-normalized-l0.5": [0.875, 0.75],    # 0.8125: the winner, listed before its equal
              "spt-normalized-l1.0": [0.8125, 0.8125]}  # 0.8125
WINNER, LOSERS = "spt-normalized-l0.5", ["spt", "spt-fixed-l0.5", "spt-normalized-l1.0"]
ARMS = ["tapt", "baseline", "baseline_flops"]


def test_candidates_are_the_spt_arms_setting_then_the_grid():
    study = SimpleNamespace(weightings=["normalized", "fixed"], lambdas=[3, 1, 0.3])
    own = SimpleNamespace(weighting="fixed", lambda_=1.0)
    candidates = sweep_candidates(study, own)
    assert [(c.setting, c.own) for c in candidates] == [
        (Setting("fixed", 1.0), True), *[(Setting("normalized", lambda_), False) for lambda_ in (3, 1, 0.3)],
        (Setting("fixed", 3), False), (Setting("fixed", 0.3), False)]  # fixed x 1 is the spt arm itself
    assert [c.run(42) for c in candidates[:3]] == ["spt-42", "spt-normalized-l3-42", "spt-normalized-l1-42"]
    assert sweep_candidates(SimpleNamespace(weightings=[], lambdas=[]), own) == []  # no sweep


@pytest.mark.parametrize("scores, chosen", [
    ([[0.7, 0.8], [0.9, 0.7], [0.6, 0.95]], 1),           # the highest mean, not the highest seed
    ([[0.75, 0.75], [0.5, 1.0], [1.0, 0.5]], 0),           # a tie: the spt arm's own setting
    ([[0.5, 0.5], [0.75, 0.5], [0.5, 0.75]], 1),           # a tie between sweep settings: the first listed
    ([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]], 0),              # a tie in exact arithmetic that a plain sum would break
    ([[0.8], [0.81]], 1),
])
def test_the_choice_on_known_validation_scores(scores, chosen):
    assert choose(scores) == chosen


# --------------------------------------------------------------------------------------------
# compare on a constructed study


@pytest.fixture
def study(tmp_path, monkeypatch) -> Path:
    """A repository root with every study run compare reads, seeds 1 and 2, the four candidates above."""
    # mlflow.set_tracking_uri exports the URI: whatever a test sets is undone after it
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    params["study"].update(seeds=SEEDS, weightings=["fixed", "normalized"], lambdas=[0.5, 1.0], bootstrap_samples=200,
                           matched_baselines=["baseline_flops"])
    params["floors"]["arms"] = []
    # tracking off: a store that does not answer, not required (each test that wants MLflow sets its own)
    params["tracking"].update(uri="http://127.0.0.1:9", required=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    for name in ("labeled.csv", "unlabeled.txt"):  # params.yaml names them; only checked to exist
        (tmp_path / "data" / "tiny").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "tiny" / name).touch()
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "reports/prepare.json", {"class_balance": {"train": {"fresh": 40, "rotten": 40}}})
    for index, seed in enumerate(SEEDS):
        for number, (name, scores) in enumerate(VALIDATION.items()):
            write_run(tmp_path, f"{name}-{seed}", scores[index], predictions(10 * number + seed), ACTUAL, True)
        for number, arm in enumerate(ARMS):
            write_run(tmp_path, f"{arm}-{seed}", 0.7, predictions(100 + 10 * number + seed), ACTUAL, arm == "tapt")
    return tmp_path


def compare(root: Path) -> tuple[dict, str]:
    from stages import compare as stage

    with pytest.warns(UserWarning, match="continuing without MLflow"):
        run_stage(stage.__doc__, stage.main, "compare", [])
    return json.loads((root / "metrics/compare.json").read_text()), (root / "reports/compare.md").read_text()


def selection_table(report: str) -> list[str]:
    section = report[report.index("## Choosing the weighting and λ on validation"):]
    section = section[:section.index("\n## ")]  # up to the next section
    return [line for line in section.splitlines() if line.startswith("|")]


def test_the_best_mean_validation_score_stands_in_as_spt(study):
    # how soon the winner's classifier left the plateau in pretrain_sup
    for seed, step in zip(SEEDS, (4, 2), strict=True):
        file = study / paths.metrics_file("pretrain_sup", f"{WINNER}-{seed}")
        write_json(file, {**json.loads(file.read_text()), "plateau_exit_step": step})
    summary, report = compare(study)
    selection = summary["selection"]
    assert [(c["weighting"], c["lambda"], c["spt_arm"], c["chosen"]) for c in selection["candidates"]] == [
        ("fixed", 1.0, True, False), ("fixed", 0.5, False, False), ("normalized", 0.5, False, True),
        ("normalized", 1.0, False, False)]
    assert selection["chosen"]["runs"] == [f"{WINNER}-{seed}" for seed in SEEDS]
    assert [c["val_macro_f1_mean"] for c in selection["candidates"]] == [0.6875, 0.6875, 0.8125, 0.8125]
    assert selection["candidates"][2]["val_macro_f1_per_seed"] == VALIDATION[WINNER]
    # the winner's runs are spt everywhere: test scores, differences, compute, the curves
    winner_scores = [json.loads((study / paths.metrics_file("evaluate", f"{WINNER}-{seed}")).read_text())["accuracy"]
                     for seed in SEEDS]
    assert summary["arms"]["spt"]["accuracy_mean"] == pytest.approx(sum(winner_scores) / 2)
    assert summary["arms"]["spt"]["pretraining_steps"] == 6 and "spt_minus_baseline_flops" in summary["differences"]
    assert "**spt** below is the setting chosen on validation: weighting normalized, λ = 0.5" in report
    rows = selection_table(report)
    assert rows[2:] == [
        "| fixed (spt arm) | 1 | 68.75 ± 8.84 | 62.50 / 75.00 | never / never | `spt-<seed>` |  |",
        "| fixed | 0.5 | 68.75 ± 8.84 | 75.00 / 62.50 | never / never | `spt-fixed-l0.5-<seed>` |  |",
        "| normalized | 0.5 | 81.25 ± 8.84 | 87.50 / 75.00 | 4 / 2 | `spt-normalized-l0.5-<seed>` | **chosen** |",
        "| normalized | 1 | 81.25 ± 0.00 | 81.25 / 81.25 | never / never | `spt-normalized-l1.0-<seed>` |  |"]
    assert selection["candidates"][2]["plateau_exit_steps"] == [4, 2]
    # the expected best of n candidates (scores 0.6875 x 2, 0.8125 x 2): n = 1, the mean 0.75; n = 2, the best of
    # a pair is 0.6875 for 1 pair of 6 and 0.8125 for 5: 0.79167; n = 3 and 4: 0.8125
    assert selection["expected_best_val_macro_f1"] == pytest.approx([0.75, 4.75 / 6, 0.8125, 0.8125])
    assert "number of candidates tried (Dodge et al. 2019; the unbiased estimator without replacement over these " \
           "candidates' mean validation scores): 1: 75.00, 2: 79.17, 3: 81.25, 4: 81.25." in report
    assert f"its test accuracy is {summary['arms']['spt']['accuracy_mean'] * 100:.2f}" in report
    assert "baseline_flops match the spt arm's own pretraining" in report  # not the chosen setting's
    assert (study / "reports/compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_choice_never_looks_at_test_labels(study):
    """Permute the test labels (every run's confusion.csv and evaluate.json scored anew, as re-evaluating would):
    the choice and the validation table stay, the winner's test score moves. Then delete every losing
    candidate's test outputs: compare, which must not open them, writes the very same results."""
    before, report_before = compare(study)
    permuted = list(ACTUAL)
    random.Random(0).shuffle(permuted)
    for run in [f"{name}-{seed}" for name in [*VALIDATION, *ARMS] for seed in SEEDS]:
        rows = (study / paths.plots_dir("evaluate", run) / "confusion.csv").read_text().splitlines()[1:]
        write_test_outputs(study, run, [row.split(",")[1] for row in rows], permuted)
    after, report_after = compare(study)
    assert after["selection"] == before["selection"]
    assert selection_table(report_after) == selection_table(report_before)
    assert after["arms"]["spt"]["accuracy_mean"] != before["arms"]["spt"]["accuracy_mean"]
    for loser in LOSERS:
        for seed in SEEDS:
            (study / paths.metrics_file("evaluate", f"{loser}-{seed}")).unlink()
            shutil.rmtree(study / paths.plots_dir("evaluate", f"{loser}-{seed}"))
    assert compare(study) == (after, report_after)


def test_a_missing_candidate_is_named(study, capsys):
    (study / paths.metrics_file("finetune", "spt-fixed-l0.5-2")).unlink()
    from stages import compare as stage

    with pytest.raises(SystemExit) as exit_info, pytest.warns(UserWarning):
        run_stage(stage.__doc__, stage.main, "compare", [])
    assert exit_info.value.code == 2
    assert "study run spt-fixed-l0.5-2 is incomplete (metrics/study/spt-fixed-l0.5-2/finetune.json missing); " \
        "run `dvc repro`" in capsys.readouterr().err


def test_each_candidate_is_a_child_run_of_compare(study, monkeypatch):
    import mlflow

    from stages import compare as stage

    params = yaml.safe_load((study / "params.yaml").read_text())
    params["tracking"].update(uri=None, required=True)
    (study / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    uri = f"sqlite:///{study / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_stage(stage.__doc__, stage.main, "compare", [])
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("spt-tests").experiment_id])
    compare_run = next(r for r in runs if r.info.run_name == "compare")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == compare_run.info.run_id]
    assert sorted((r.data.params["weighting"], r.data.params["lambda"], r.data.tags["chosen"],
                   r.data.metrics["val_macro_f1_mean"]) for r in children) == [
        ("fixed", "0.5", "false", 0.6875), ("fixed", "1.0", "false", 0.6875), ("normalized", "0.5", "true", 0.8125),
        ("normalized", "1.0", "false", 0.8125)]
    assert all(r.info.status == "FINISHED" and r.data.tags["stage"] == "compare" for r in children)


def test_a_setting_equal_to_the_spt_arms_copies_its_run(tmp_path, monkeypatch):
    """A setting of the sweep with pretrain_sup's own weighting and lambda trains what the spt arm's run of its seed
    trained (same fingerprint): when that run is there, it is copied, not trained again."""
    from spt.tracking import file_md5
    from spt.train.checkpoints import PROVENANCE_FILE
    from spt.train.training_run import TrainingRun, reuse_identical_run

    monkeypatch.chdir(tmp_path)
    twin = "spt-43"
    write_json(paths.model_dir("pretrain_sup", twin) / PROVENANCE_FILE, {"fingerprint": "abc"})
    (paths.model_dir("pretrain_sup", twin) / "model.safetensors").write_bytes(b"weights")
    write_json(paths.metrics_file("pretrain_sup", twin), {"steps": 6, "learned_log_variance": [0.5, -0.5]})
    write_json(paths.plots_dir("pretrain_sup", twin) / "loss.json", {})
    logged = {"tags": {}, "metrics": {}}
    tracker = SimpleNamespace(set_tags=logged["tags"].update, log_metrics=logged["metrics"].update,
                              wrote_metrics=lambda path: logged["tags"].update(metrics_md5=file_md5(path)))

    def run(fingerprint: str) -> TrainingRun:
        return TrainingRun("pretrain_sup", "spt-fixed-l1-43", tracker, {}, fingerprint, None)

    assert not reuse_identical_run(run("other"), (twin,))  # another setting: trains
    assert not reuse_identical_run(run("abc"))  # not asked to look at the twin
    assert reuse_identical_run(run("abc"), (twin,))
    copy = paths.model_dir("pretrain_sup", "spt-fixed-l1-43")
    assert (copy / "model.safetensors").read_bytes() == b"weights"
    copied = paths.metrics_file("pretrain_sup", "spt-fixed-l1-43")
    assert json.loads(copied.read_text()) == {"steps": 6, "learned_log_variance": [0.5, -0.5]}
    # its MLflow run carries what it copied: the metrics, where from, the copied file's md5 (tools/mirror.py)
    assert logged == {"metrics": {"steps": 6, "learned_log_variance_0": 0.5, "learned_log_variance_1": -0.5},
                      "tags": {"reused_from": "models/study/spt-43/pretrain_sup", "metrics_md5": file_md5(copied)}}
    assert (paths.checkpoint_dir("pretrain_sup", "spt-fixed-l1-43") / "fingerprint").read_text().strip() == "abc"


def test_candidate_runs_name_the_spt_arm_or_the_setting():
    assert Candidate(Setting("fixed", 1.0), True).run(42) == "spt-42"
    assert Candidate(Setting("gradcos", 0.3), False).run(42) == "spt-gradcos-l0.3-42"

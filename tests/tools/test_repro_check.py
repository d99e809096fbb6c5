"""The reproducibility gate's comparison (the gate itself runs in CI: make repro-check)."""

import json

import yaml

from tools.repro_check import differences, metric_differences, output_hashes, read_metrics


def test_output_hashes_reads_every_output_of_every_stage(tmp_path):
    lock = {"schema": "2.0", "stages": {
        "prepare": {"cmd": "x", "outs": [{"path": "data/processed", "md5": "a.dir"},
                                         {"path": "metrics/prepare.json", "md5": "b"}]},
        "evaluate": {"cmd": "y", "deps": [{"path": "models/finetune", "md5": "c.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert output_hashes(tmp_path) == {"prepare: data/processed": "a.dir", "prepare: metrics/prepare.json": "b"}


def test_differences_names_changed_and_missing_outputs():
    first = {"prepare: data/processed": "a", "finetune: models/finetune": "b"}
    second = {"prepare: data/processed": "a", "finetune: models/finetune": "c", "compare: reports": "d"}
    assert differences(first, second) == ["compare: reports: missing != d", "finetune: models/finetune: b != c"]
    assert differences(first, dict(first)) == []


def test_output_hashes_of_one_stage(tmp_path):
    lock = {"stages": {"prepare": {"outs": [{"path": "data/processed", "md5": "a.dir"}]},
                       "finetune": {"outs": [{"path": "models/finetune", "md5": "b.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert output_hashes(tmp_path, "prepare") == {"prepare: data/processed": "a.dir"}


def test_read_metrics_flattens_every_metrics_file(tmp_path):
    (tmp_path / "metrics" / "study" / "spt-7").mkdir(parents=True)
    (tmp_path / "metrics" / "finetune.json").write_text(json.dumps({"loss_last": 0.5, "eval": {"f1": [0.1, 0.2]}}))
    (tmp_path / "metrics" / "study" / "spt-7" / "evaluate.json").write_text(json.dumps({"accuracy": 0.75}))
    assert read_metrics(tmp_path) == {"metrics/finetune.json: loss_last": 0.5, "metrics/finetune.json: eval.f1.0": 0.1,
                                      "metrics/finetune.json: eval.f1.1": 0.2,
                                      "metrics/study/spt-7/evaluate.json: accuracy": 0.75}


def test_metric_differences_exact_on_one_machine_within_tolerance_across():
    committed = {"f: loss_last": 0.6931472, "f: steps": 120, "f: labels.0": "fresh", "f: gone": 1.0}
    fresh = {"f: loss_last": 0.6931473, "f: steps": 120, "f: labels.0": "fresh", "f: new": 2.0}
    assert metric_differences(committed, fresh) == [
        "f: gone: 1.0 != 'missing'", "f: loss_last: 0.6931472 != 0.6931473 (relative difference 1.4e-07)",
        "f: new: 'missing' != 2.0"]
    assert metric_differences(committed, fresh, rel_tol=1e-5) == ["f: gone: 1.0 != 'missing'",
                                                                 "f: new: 'missing' != 2.0"]
    assert metric_differences({"f: x": 1.0}, {"f: x": 1.001}, rel_tol=1e-5) == [
        "f: x: 1.0 != 1.001 (relative difference 1.0e-03)"]
    assert metric_differences({"f: delta": 0.0}, {"f: delta": 1e-12}, rel_tol=1e-5) == []

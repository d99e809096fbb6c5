"""The reproducibility gate's comparison (the gate itself runs in CI: make repro-check)."""

import yaml

from scripts.repro_check import differences, output_hashes


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

"""The queued-experiments trial (tools/queue_trial.py) reads which stage and study run each command of a
`dvc queue logs` was; the trial itself runs end to end in tests/e2e/test_faults.py."""

import pytest
import yaml

from tests.support import REPO
from tools.queue_trial import COMMAND, FINAL, RAN


@pytest.mark.parametrize("command, expected", [
    ("python -m stages.prepare", ("prepare", None, None)),
    ("python -m stages.pretrain_sup", ("pretrain_sup", None, None)),
    ("python -m stages.finetune --arm baseline_flops --seed 7", ("finetune", "baseline_flops", "7")),
    ("python -m stages.launch finetune --arm baseline_flops --seed 7", ("finetune", "baseline_flops", "7")),
    ("python -m stages.launch pretrain_unsup", ("pretrain_unsup", None, None)),
    ("torchrun --standalone --nproc_per_node 2 -m stages.pretrain_sup --arm tapt --seed 43",
     ("pretrain_sup", "tapt", "43")),
])
def test_a_command_names_its_stage_and_study_run(command, expected):
    assert COMMAND.search(command).groups() == expected


def test_every_arm_and_seed_command_of_dvc_yaml_is_read_as_its_study_run():
    """The commands dvc.yaml gives the study's arms per seed (runs <arm>-<seed>), as `dvc queue logs` shows them: each
    is read as its arm's run of that seed."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = [spec["cmd"].replace("${item.arm}", "spt").replace("${item.seed}", "7")
                for spec in stages.values() if list(spec.get("matrix", {})) == ["arm", "seed"]]
    # pretrain, tapt, finetune, tapt_finetune, baseline, matched, evaluate, tapt_evaluate, evaluate_matched
    assert len(commands) == 9
    for command in commands:
        log = f"Running stage 'x':\n> {command}\n"
        [ran] = RAN.findall(log)
        stage, arm, seed = COMMAND.search(ran).groups()
        assert (stage in FINAL, arm, seed) == (True, "spt", "7"), command

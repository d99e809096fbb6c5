"""stages.launch starts a training stage under runtime.launch with an argument list: no shell reads the value.

(Under a real `dvc repro`: tests/e2e/test_security.py; torchrun through it: tests/e2e/test_distributed.py.)
"""

from pathlib import Path

import pytest

from spt.errors import UserError
from stages import launch
from tests.support import REPO, default_params, write_params

STAGE = ["-m", "stages.finetune", "--arm", "spt", "--seed", "42"]


@pytest.mark.parametrize("value, expected", [
    ("python", ["python", *STAGE]),
    ("torchrun --standalone --nproc_per_node 2", ["torchrun", "--standalone", "--nproc_per_node", "2", *STAGE]),
    ("accelerate launch --config_file 'my fsdp.yaml'",  # quoted as a shell would split it, one word
     ["accelerate", "launch", "--config_file", "my fsdp.yaml", *STAGE]),
])
def test_the_launcher_comes_before_the_stage_module(value, expected):
    assert launch.launch_command(value, "finetune", STAGE[2:], environ={}) == expected


def test_variables_are_expanded_from_the_environment_and_an_unset_one_is_named():
    value = "torchrun --nnodes 2 --rdzv_endpoint $MASTER_ADDR:29400 --node_rank ${NODE_RANK}"
    command = launch.launch_command(value, "pretrain_sup", [], environ={"MASTER_ADDR": "node0", "NODE_RANK": "1"})
    assert command == ["torchrun", "--nnodes", "2", "--rdzv_endpoint", "node0:29400", "--node_rank", "1", "-m",
                       "stages.pretrain_sup"]
    with pytest.raises(UserError, match=r"the environment variable \$NODE_RANK is not set"):
        launch.launch_command(value, "pretrain_sup", [], environ={"MASTER_ADDR": "node0"})


def test_an_expanded_value_stays_one_argument():
    # A shell would split an unquoted $VAR at spaces and read ; in it as nothing special only by luck.
    command = launch.launch_command("torchrun --rdzv_id $RUN_ID", "finetune", [], environ={"RUN_ID": "a b; touch x"})
    assert command[:3] == ["torchrun", "--rdzv_id", "a b; touch x"]


@pytest.fixture
def params_with(tmp_path, monkeypatch):
    """Write the repository's params.yaml with runtime.launch replaced; the path of the copy."""
    monkeypatch.chdir(REPO)  # the default data sources are relative to the repository root

    def write(value: str) -> Path:
        params = default_params()
        params["runtime"]["launch"] = value
        return write_params(tmp_path, params)
    return write


@pytest.fixture
def execs(monkeypatch):
    calls = []
    monkeypatch.setattr(launch.os, "execvp", lambda file, args: calls.append((file, list(args))))
    return calls


def test_main_execs_the_launcher_with_the_stage_arguments(params_with, execs):
    path = params_with("torchrun --standalone --nproc_per_node 2")
    launch.main(["pretrain_sup", "--params", str(path), "--arm", "tapt", "--seed", "7"])
    assert execs == [("torchrun", ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "stages.pretrain_sup",
                                   "--params", str(path), "--arm", "tapt", "--seed", "7"])]


@pytest.mark.parametrize("value", ["python; touch PWNED", "python && touch PWNED", "torchrun $(touch PWNED)",
                                   "torchrun `touch PWNED`", "python\ntouch PWNED", "bash -c 'touch PWNED'"])
def test_main_refuses_a_value_meant_for_a_shell_and_starts_nothing(params_with, execs, capsys, value):
    path = params_with(value)
    with pytest.raises(SystemExit) as exit_info:
        launch.main(["pretrain_unsup", f"--params={path}"])
    assert exit_info.value.code == 2 and execs == []
    error = capsys.readouterr().err
    assert error.startswith("error: ") and f"runtime.launch = {value!r}:" in error


def test_main_names_a_launcher_that_is_not_installed(params_with, monkeypatch, capsys):
    def missing(file, args):
        raise FileNotFoundError(2, "No such file or directory")
    monkeypatch.setattr(launch.os, "execvp", missing)
    path = params_with("torchrun --standalone")
    with pytest.raises(SystemExit) as exit_info:
        launch.main(["finetune", "--params", str(path)])
    assert exit_info.value.code == 2
    assert "cannot start 'torchrun' (No such file or directory)" in capsys.readouterr().err


def test_only_training_stages_are_launched(execs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        launch.main(["evaluate"])
    assert exit_info.value.code == 2 and execs == []
    assert "'evaluate' is not a training stage" in capsys.readouterr().err

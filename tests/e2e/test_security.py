"""runtime.launch under a real `dvc repro`: a value a shell would run something with is refused before any process
starts, and never reaches a shell (stages.launch; its unit tests: tests/stages/test_launch.py)."""

import pytest
import yaml

from tests.support import run_command
from tools.sandbox import tiny_repository

pytestmark = pytest.mark.e2e

# runtime.launch values that a shell would run something with: each must be refused before any process starts.
SHELL_INJECTIONS = {
    "semicolon": "python; touch PWNED",
    "and": "python -V && touch PWNED",
    "command substitution": "torchrun --nproc_per_node $(touch PWNED; echo 1)",
    "backticks": "torchrun --nproc_per_node `touch PWNED`",
    "newline": "python\ntouch PWNED",
}


@pytest.fixture(scope="module")
def prepared_repo(tmp_path_factory, tiny_data):
    """A tiny repository whose prepare already ran: `dvc repro pretrain_unsup` then starts at the launcher."""
    repo = tiny_repository(tmp_path_factory.mktemp("launch") / "repo", tiny_data)
    run_command(repo, "dvc", "repro", "prepare")
    return repo


@pytest.mark.parametrize("launch", SHELL_INJECTIONS.values(), ids=SHELL_INJECTIONS.keys())
def test_launcher_with_shell_operators_never_reaches_a_shell(prepared_repo, launch):
    (prepared_repo / "PWNED").unlink(missing_ok=True)  # the module's repo is shared: each case starts clean
    params = yaml.safe_load((prepared_repo / "params.yaml").read_text())
    params["runtime"]["launch"] = launch
    (prepared_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_command(prepared_repo, "dvc", "repro", "pretrain_unsup", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert not (prepared_repo / "PWNED").exists(), "the value reached a shell"
    assert output.count(f"runtime.launch = {launch!r}: contains the shell character(s)") == 1, output
    assert "Fix these keys in params.yaml" in output
    # nothing ran: the stage wrote no checkpoint, model or metrics
    for path in ("models/pretrain_unsup", "checkpoints/pretrain_unsup", "metrics/pretrain_unsup.json"):
        assert not (prepared_repo / path).exists(), path

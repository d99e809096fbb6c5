"""launch: start a training stage with the launcher that ``runtime.launch`` names, never through a shell.

dvc.yaml starts pretrain_unsup, pretrain_sup and finetune (and their study runs) as

    python -m stages.launch <stage> [the stage's arguments]

This reads params.yaml (or the file a ``--params FILE`` among the stage's arguments names), checks it
as every stage does, and replaces itself (``os.execvp`` with a list of arguments: no shell ever reads
the value) with ``<runtime.launch> -m stages.<stage> [the stage's arguments]``, e.g.
``torchrun --standalone --nproc_per_node 2 -m stages.pretrain_sup --arm spt --seed 42``.

``runtime.launch`` is ``python``, ``torchrun ...`` or ``accelerate launch ...`` (config.check_launcher);
a value holding shell characters (``; & | < > ` ( )`` or a newline) is refused with one message and
exit 2 before anything starts. ``$VAR`` and ``${VAR}`` in it (multi-node flags such as
``--rdzv_endpoint $MASTER_ADDR:29400``) are expanded here from the environment, an unset one is an
error, and ``~`` at the start of a word is the home directory; nothing else is interpreted.
The value is a declared param of every stage started this way, so changing it reruns them.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from spt import paths
from spt.config import load_params
from spt.errors import UserError

USAGE = f"usage: python -m stages.launch {{{','.join(paths.TRAINING_STAGES)}}} [the stage's arguments]"
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def launch_command(launch: str, stage: str, args: Sequence[str], environ: Mapping[str, str] = os.environ,
                   ) -> list[str]:
    """The argument list that starts ``stages.<stage>`` under ``launch`` (a value config.check_launcher
    accepted), with ``$VAR``/``${VAR}`` taken from ``environ`` and a leading ``~`` expanded."""
    def expand(word: str) -> str:
        def variable(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            if name not in environ:
                raise UserError(f"runtime.launch = {launch!r}: the environment variable ${name} is not set; set "
                                "it before `dvc repro` or write its value into runtime.launch")
            return environ[name]
        return os.path.expanduser(_VARIABLE.sub(variable, word))

    return [*map(expand, shlex.split(launch)), "-m", f"stages.{stage}", *args]


def params_file(args: Sequence[str]) -> Path:
    """The params file the stage will read: ``--params FILE`` among its arguments, else params.yaml."""
    for i, arg in enumerate(args):
        if arg == "--params" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--params="):
            return Path(arg.split("=", 1)[1])
    return paths.PARAMS


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{__doc__}")
        return
    if not argv or argv[0] not in paths.TRAINING_STAGES:
        print(f"{USAGE}\nerror: {argv[0] if argv else 'no stage'!r} is not a training stage", file=sys.stderr)
        sys.exit(2)
    stage, args = argv[0], argv[1:]
    try:
        launch = load_params(params_file(args)).runtime.launch
        command = launch_command(launch, stage, args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as err:  # not found, not executable: nothing has started
        print(f"error: runtime.launch = {launch!r}: cannot start {command[0]!r} ({err.strerror}); install it in "
              "this environment or name another launcher", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""The command line every stage shares: ``python -m stages.<name> [--params FILE]``; the study's stages add
``--arm A --seed N`` and the study's axes (study/run.py: ``--weighting W --lambda L`` for a setting of the sweep,
``--labels-per-class N`` for a point of the labels-per-class curve); prepare takes ``--labels-per-class N
--seed S`` to draw a point's labels.

It imports only what parsing and validating params needs, so ``--help`` answers at once; each stage
imports its heavy libraries (torch, transformers, datasets) inside ``main``.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

from spt import paths
from spt.config import WEIGHTINGS, DeclaredParams, Params, load_params
from spt.errors import StageInterrupted, UserError
from spt.outputs import disk_full_error, is_disk_full
from study.arms import ARMS_OF, FLOOR_ARMS
from study.curve import positive_int
from study.run import Run
from study.sweep import Setting


def stage_params(params: Params, module: str) -> DeclaredParams:
    """The view of ``params`` that ``stages.<module>`` may read: what its dvc.yaml stage declares (the stage DVC runs
    it as, $DVC_STAGE; by hand, the stage named after the module)."""
    dvc_stage = paths.dvc_stage(module)
    return DeclaredParams(params, paths.declared_params(dvc_stage), dvc_stage)


def sweep_lambda(text: str) -> int | float:
    """``--lambda``: a positive number, kept as written (``1`` stays an int, ``1.0`` a float), so the run's name
    is the one dvc.yaml interpolates from params.yaml (:class:`study.sweep.Setting`)."""
    try:
        value = int(text) if re.fullmatch(r"[0-9]+", text) else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number (lambda = 0 is the tapt arm)")
    return value


def add_study_arguments(parser: argparse.ArgumentParser, module: str) -> None:
    parser.add_argument("--arm", choices=ARMS_OF[module], help="run as this arm of the study")
    parser.add_argument("--seed", type=int, help="the study run's seed (with --arm; a floor of the full set: none)")
    sweep = parser.add_argument_group(
        "a setting of the sweep (study.weightings x study.lambdas; the study_sweep_* stages)",
        "With --arm spt --seed N: the spt arm's run with pretrain_sup.weighting and pretrain_sup.lambda\n"
        "replaced by these, nothing else changed. The run is named spt-<weighting>-l<lambda>-<seed>\n"
        "(e.g. models/study/spt-normalized-l2-42/); compare chooses among the settings on validation.\n"
        "Give both or neither.")
    sweep.add_argument("--weighting", choices=WEIGHTINGS, help="pretrain_sup.weighting for this run")
    sweep.add_argument("--lambda", dest="lambda_", type=sweep_lambda, metavar="LAMBDA",
                       help="pretrain_sup.lambda for this run: a positive number, as written in study.lambdas")
    parser.add_argument("--labels-per-class", dest="labels_per_class", type=positive_int, metavar="N",
                        help="a point of the labels-per-class curve (study.labels_per_class): train on the labels of "
                        "data/budgets/n<N>-<seed>, N per class, and write under <arm>-n<N>-<seed>")


def study_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Run | None:
    """The :class:`Run` the arguments name, None for the main chain; a bad combination is a usage error."""
    arm, seed, labels_per_class = args.arm, args.seed, args.labels_per_class
    if labels_per_class is not None and (arm is None or seed is None):
        parser.error("--labels-per-class N is a point of the labels-per-class curve: give it with --arm A --seed S")
    if arm in FLOOR_ARMS and seed is not None and labels_per_class is None:
        parser.error(f"--arm {arm} is a floor: deterministic, it runs once and takes no --seed (but one per seed "
                     "of the labels-per-class curve, with --labels-per-class)")
    elif arm not in FLOOR_ARMS and (arm is None) != (seed is None):
        parser.error("--arm and --seed go together")
    setting = None
    if args.weighting is not None or args.lambda_ is not None:
        if args.weighting is None or args.lambda_ is None:
            parser.error("--weighting and --lambda go together (a setting of the sweep)")
        if arm != "spt" or seed is None:
            parser.error("--weighting and --lambda set a setting of the sweep, which is the spt arm's run: give "
                         "them with --arm spt --seed N")
        if labels_per_class is not None:
            parser.error("--weighting/--lambda (the sweep) and --labels-per-class (the labels-per-class curve) do not "
                         "combine: the curve trains the arms with pretrain_sup's own setting")
        setting = Setting(args.weighting, args.lambda_)
    return None if arm is None else Run(arm, seed, setting, labels_per_class)


def run_stage(doc: str, body: Callable[..., None], module: str, argv: list[str] | None = None,
              study: bool = False, draws_labels: bool = False) -> None:
    """Parse arguments, load and validate params, run ``body``; user errors exit 2 with one message.

    ``body`` gets the params its dvc.yaml stage declares (:class:`DeclaredParams`). ``study``: the stage also
    runs as a study run and ``body`` gets ``(params, run)``, ``run`` a :class:`Run` or None for the main chain.
    ``draws_labels`` (prepare): ``--labels-per-class N --seed S`` draws a point's labels and ``body`` gets
    ``(params, labels_per_class, seed)``; without them ``(params)``.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(paths.PARAMS), help="params file (default: %(default)s)")
    if study:
        add_study_arguments(parser, module)
    if draws_labels:
        parser.add_argument("--labels-per-class", dest="labels_per_class", type=positive_int, metavar="N",
                            help="draw N training labels per class for the labels-per-class curve "
                            "(study.labels_per_class) into data/budgets/n<N>-<seed>")
        parser.add_argument("--seed", type=int,
                            help="the point's seed: which labels are drawn (with --labels-per-class)")
    args = parser.parse_args(argv)
    if draws_labels and (args.labels_per_class is None) != (args.seed is None):
        parser.error("--labels-per-class and --seed go together (a point of the labels-per-class curve)")
    run = study_run(parser, args) if study else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        params = stage_params(load_params(args.params), module)
        if study:
            body(params, run)
        elif draws_labels and args.labels_per_class is not None:
            body(params, args.labels_per_class, args.seed)
        else:
            body(params)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except StageInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        # A full disk met where no output of ours was being written (a library's cache, a temporary file): the same
        # one message as atomic_output's, naming the file that failed.
        if not is_disk_full(err):
            raise
        print(f"error: {disk_full_error(Path(getattr(err, 'filename', None) or '.'), err)}", file=sys.stderr)
        sys.exit(2)

"""The command line every stage shares: ``python -m stages.<name> [--params FILE]``; the study's stages add
``--variant V --seed N`` and, for a setting of the sweep, ``--weighting W --lambda L``; for a run of the
label-budget curve, ``--n-per-class N`` (prepare too, with ``--seed``: it draws the budget's labels).

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

from stages.common import paths
from stages.common.config import WEIGHTINGS, DeclaredParams, Params, load_params
from stages.common.errors import StageInterrupted, UserError


def stage_params(params: Params, stage: str, variant: str | None = None, sweep: bool = False,
                 budget: bool = False) -> DeclaredParams:
    """The view of ``params`` that ``stages.<stage>`` (as study ``variant``, a setting of the sweep or a run of the
    label-budget curve) may read: its dvc.yaml stage's."""
    dvc_stage = paths.dvc_stage(stage, variant, sweep, budget)
    return DeclaredParams(params, paths.declared_params(dvc_stage), dvc_stage)


def sweep_lambda(text: str) -> int | float:
    """``--lambda``: a positive number, kept as written (``1`` stays an int, ``1.0`` a float), so the run's name
    is the one dvc.yaml interpolates from params.yaml (:class:`paths.SweepSetting`)."""
    try:
        value = int(text) if re.fullmatch(r"[0-9]+", text) else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number (lambda = 0 is the tapt arm)")
    return value


def positive_int(text: str) -> int:
    """``--n-per-class``: a whole number of labels, at least 1."""
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


BUDGET_HELP = ("a run of the label-budget curve (study.n_per_class): train on the labels of data/budgets/n<N>-<seed>, "
               "N per class, and write under <variant>-n<N>-<seed>")


def run_stage(doc: str, body: Callable[..., None], stage: str, argv: list[str] | None = None,
              study: bool = False, budget: bool = False) -> None:
    """Parse arguments, load and validate params, run ``body``; user errors exit 2 with one message.

    ``body`` gets the params its dvc.yaml stage declares (:class:`DeclaredParams`). ``study``: the
    stage also runs as a study run, ``--variant V --seed S``, and ``body`` gets
    ``(params, variant, seed, setting, budget)``; without them it is the main chain (variant None). A floor
    (paths.FLOOR_ARMS) is ``--variant V`` alone: seed None. ``setting`` is a :class:`paths.SweepSetting`
    for a setting of the sweep (``--variant spt --seed S --weighting W --lambda L``, the study_sweep_*
    stages), else None. ``budget`` is the labels per class of a run of the label-budget curve
    (``--n-per-class N``, with ``--variant`` and ``--seed``, floors too: the study_budget_* stages), else None.
    ``budget`` alone (prepare): ``--n-per-class N --seed S`` draws that budget's labels and ``body`` gets
    ``(params, budget, seed)``; without them ``(params)``.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(paths.PARAMS), help="params file (default: %(default)s)")
    if study:
        parser.add_argument("--variant", choices=paths.study_variants(stage), help="run as this study variant")
        parser.add_argument("--seed", type=int, help="the study run's seed (with --variant; floors take none)")
        sweep = parser.add_argument_group(
            "a setting of the sweep (study.weightings x study.lambdas; the study_sweep_* stages)",
            "With --variant spt --seed N: the spt arm's run with pretrain_sup.weighting and pretrain_sup.lambda\n"
            "replaced by these, nothing else changed. The run is named spt-<weighting>-l<lambda>-<seed>\n"
            "(e.g. models/study/spt-normalized-l2-42/); compare chooses among the settings on validation.\n"
            "Give both or neither.")
        sweep.add_argument("--weighting", choices=WEIGHTINGS, help="pretrain_sup.weighting for this run")
        sweep.add_argument("--lambda", dest="lambda_", type=sweep_lambda, metavar="LAMBDA",
                           help="pretrain_sup.lambda for this run: a positive number, as written in study.lambdas")
    if study or budget:
        parser.add_argument("--n-per-class", dest="budget", type=positive_int, metavar="N",
                            help=BUDGET_HELP if study else "draw N training labels per class for the label-budget "
                            "curve (study.n_per_class) into data/budgets/n<N>-<seed>")
    if budget:
        parser.add_argument("--seed", type=int, help="the budget's seed: which labels are drawn (with --n-per-class)")
    args = parser.parse_args(argv)
    n_per_class = getattr(args, "budget", None)
    if budget and (n_per_class is None) != (args.seed is None):
        parser.error("--n-per-class and --seed go together (a budget of the label-budget curve)")
    variant = getattr(args, "variant", None)
    setting = None
    if study and n_per_class is not None and (variant is None or args.seed is None):
        parser.error("--n-per-class N is a run of the label-budget curve: give it with --variant V --seed S")
    if study and variant in paths.FLOOR_ARMS and args.seed is not None and n_per_class is None:
        parser.error(f"--variant {variant} is a floor: deterministic, it runs once and takes no --seed (but one per "
                     "seed of the label-budget curve, with --n-per-class)")
    elif study and variant not in paths.FLOOR_ARMS and (variant is None) != (args.seed is None):
        parser.error("--variant and --seed go together")
    if study and (args.weighting is not None or args.lambda_ is not None):
        if args.weighting is None or args.lambda_ is None:
            parser.error("--weighting and --lambda go together (a setting of the sweep)")
        if variant != "spt" or args.seed is None:
            parser.error("--weighting and --lambda set a setting of the sweep, which is the spt arm's run: give "
                         "them with --variant spt --seed N")
        if n_per_class is not None:
            parser.error("--weighting/--lambda (the sweep) and --n-per-class (the label-budget curve) do not combine: "
                         "the curve trains the arms with pretrain_sup's own setting")
        setting = paths.SweepSetting(args.weighting, args.lambda_)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        params = stage_params(load_params(args.params), stage, variant, sweep=setting is not None,
                              budget=n_per_class is not None)
        if study:
            body(params, variant, args.seed, setting, n_per_class)
        elif n_per_class is not None:
            body(params, n_per_class, args.seed)
        else:
            body(params)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except StageInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(130)

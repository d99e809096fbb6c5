"""The command line every stage shares: ``python -m stages.<name> [--params FILE]``.

It imports only what parsing and validating params needs, so ``--help`` answers at once; each stage
imports its heavy libraries (torch, transformers, datasets) inside ``main``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from stages.common import paths
from stages.common.config import DeclaredParams, Params, load_params
from stages.common.errors import StageInterrupted, UserError


def stage_params(params: Params, stage: str, variant: str | None = None) -> DeclaredParams:
    """The view of ``params`` that ``stages.<stage>`` (as study ``variant``) may read: its dvc.yaml stage's."""
    dvc_stage = paths.dvc_stage(stage, variant)
    return DeclaredParams(params, paths.declared_params(dvc_stage), dvc_stage)


def run_stage(doc: str, body: Callable[..., None], stage: str, argv: list[str] | None = None,
              study: bool = False) -> None:
    """Parse arguments, load and validate params, run ``body``; user errors exit 2 with one message.

    ``body`` gets the params its dvc.yaml stage declares (:class:`DeclaredParams`). ``study``: the
    stage also runs as a study run, ``--variant V --seed S``, and ``body`` gets
    ``(params, variant, seed)``; without them it is the main chain (variant None). A floor
    (paths.FLOOR_ARMS) is ``--variant V`` alone: seed None.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(paths.PARAMS), help="params file (default: %(default)s)")
    if study:
        parser.add_argument("--variant", choices=paths.study_variants(stage), help="run as this study variant")
        parser.add_argument("--seed", type=int, help="the study run's seed (with --variant; floors take none)")
    args = parser.parse_args(argv)
    variant = getattr(args, "variant", None)
    if study and variant in paths.FLOOR_ARMS and args.seed is not None:
        parser.error(f"--variant {variant} is a floor: deterministic, it runs once and takes no --seed")
    elif study and variant not in paths.FLOOR_ARMS and (variant is None) != (args.seed is None):
        parser.error("--variant and --seed go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        params = stage_params(load_params(args.params), stage, variant)
        if study:
            body(params, variant, args.seed)
        else:
            body(params)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except StageInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(130)

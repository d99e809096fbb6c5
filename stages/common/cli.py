"""The command line every stage shares: ``python -m stages.<name> [--params FILE]``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from stages.common.config import ConfigError, load_params
from stages.common.data import DataError
from stages.common.paths import PARAMS, STUDY_VARIANTS
from stages.common.tracking import TrackingError
from stages.common.training import StageInterrupted


def run_stage(doc: str, body: Callable[..., None], argv: list[str] | None = None, study: bool = False) -> None:
    """Parse arguments, load and validate params, run ``body``; user errors exit 2 with one message.

    ``study``: the stage also runs as a study run, ``--variant V --seed S``, and ``body`` gets
    ``(params, variant, seed)``; without them it is the main chain (variant None).
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(PARAMS), help="params file (default: %(default)s)")
    if study:
        parser.add_argument("--variant", choices=STUDY_VARIANTS, help="run as this study variant")
        parser.add_argument("--seed", type=int, help="the study run's seed (with --variant)")
    args = parser.parse_args(argv)
    if study and (args.variant is None) != (args.seed is None):
        parser.error("--variant and --seed go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        params = load_params(args.params)
        if study:
            body(params, args.variant, args.seed)
        else:
            body(params)
    except (ConfigError, DataError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except StageInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(130)

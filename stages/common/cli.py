"""The command line every stage shares: ``python -m stages.<name> [--params FILE]``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from stages.common.config import ConfigError, Params, load_params
from stages.common.data import DataError
from stages.common.paths import PARAMS
from stages.common.tracking import TrackingError
from stages.common.training import StageInterrupted


def run_stage(doc: str, body: Callable[[Params], None], argv: list[str] | None = None) -> None:
    """Parse arguments, load and validate params, run ``body``; user errors exit 2 with one message."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(PARAMS), help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        body(load_params(args.params))
    except (ConfigError, DataError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except StageInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(130)

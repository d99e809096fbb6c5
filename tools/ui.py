"""`make ui`: the MLflow UI on the project's store, and the address that opens it on the "Model training" side.

MLflow 3.17 (and 3.18, checked in a fresh headless Chromium) opens every experiment on its GenAI side (Traces,
Judges, Prompts), whatever the experiment's ``mlflow.experimentKind`` tag says: the side is a browser setting that
defaults to GenAI (MLflow issue 24498). The UI reads ``workflowType=machine_learning`` from the address before that
setting, so this prints the experiment's runs at such an address, then runs ``mlflow ui`` in the foreground.
"""

from __future__ import annotations

import argparse
import os
import sys

from spt.config import load_params
from spt.errors import UserError
from spt.tracking import tracking_uri

MODEL_TRAINING = "workflowType=machine_learning"


def runs_address(base: str, experiment_id: str | None) -> str:
    """The page that lists the experiment's runs on the Model-training side (the experiment list when the store
    holds no such experiment yet)."""
    page = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    return f"{base.rstrip('/')}/#/{page}?{MODEL_TRAINING}"


def experiment_id(uri: str, name: str) -> str | None:
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return None if experiment is None else experiment.experiment_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="the params file (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--print-only", action="store_true", help="print the address and exit")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    uri = tracking_uri(params.tracking)
    if uri.startswith(("http://", "https://")):  # a tracking server: its own UI, nothing to start
        print(f"open {runs_address(uri, experiment_id(uri, params.tracking.experiment))}")
        return 0
    address = runs_address(f"http://{args.host}:{args.port}", experiment_id(uri, params.tracking.experiment))
    print(f"open {address}\n(the ?{MODEL_TRAINING} part opens the Model-training side, not GenAI)", flush=True)
    if args.print_only:
        return 0
    # this interpreter's (pinned) MLflow, not the first `mlflow` on PATH: a newer one would migrate the store
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
                              "--port", str(args.port)])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

"""After `dvc repro`: make sure the MLflow store holds the evaluated classifier. `make repro` runs it.

DVC skips a stage whose dependencies and outputs match dvc.lock. On a fresh clone the committed outputs of
evaluate (metrics/evaluate.json, plots/evaluate) already match once training has reproduced the same
weights, so evaluate does not run, and the store gets no evaluation run and no registered model:
``models:/spt-classifier/1`` would not exist. When the store holds no version of
``tracking.registered_model``, this runs evaluate once more (``dvc repro --force --single-item evaluate``,
seconds; it rewrites the same bytes); otherwise it does nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from spt.config import load_params
from spt.tracking import fail_fast_http, tracking_uri


def has_registered_version(uri: str, name: str) -> bool:
    """Whether the MLflow store at ``uri`` holds a version of the registered model ``name``."""
    from mlflow import MlflowClient

    return bool(MlflowClient(tracking_uri=uri).search_model_versions(f"name = '{name}'", max_results=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    uri, name = tracking_uri(params.tracking), params.tracking.registered_model
    try:
        with fail_fast_http():  # a server that does not answer: seconds, not minutes
            if has_registered_version(uri, name):
                return 0
    except Exception as error:  # noqa: BLE001 - the store is optional (tracking.required); say why and go on
        print(f"register_if_missing: could not read the MLflow store at {uri} ({error}); the classifier is "
              "not registered. Check tracking.uri or $MLFLOW_TRACKING_URI, then run `dvc repro -f -s evaluate`",
              file=sys.stderr)
        return 0
    print(f"register_if_missing: no version of {name} in {uri} (DVC found evaluate's outputs current): "
          "running evaluate once more to log and register it", file=sys.stderr)
    return subprocess.call([str(Path(sys.executable).parent / "dvc"), "repro", "--force", "--single-item",
                            "evaluate"])


if __name__ == "__main__":
    sys.exit(main())

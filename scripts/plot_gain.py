"""Plot the SPT gain against labels per class, one line per λ, from DVC experiments.

Reads `dvc exp show --json` (every experiment with a metrics/compare.json) and draws every paired
accuracy difference compare reports (SPT − baseline, SPT − baseline_matched, ...) with its 95%
interval against `prepare.n_per_class`: one panel per comparison.

    dvc exp show --json > experiments.json
    .venv/bin/python scripts/plot_gain.py experiments.json gain.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from matplotlib.figure import Figure


def experiments(node: object) -> Iterator[dict]:
    """Every revision record (a dict with data.params and data.metrics) anywhere in the JSON."""
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data and "metrics" in data:
            yield node
        for value in node.values():
            yield from experiments(value)
    elif isinstance(node, list):
        for value in node:
            yield from experiments(value)


def gain_points(records: list[dict]) -> dict[str, dict[float, list[tuple[int, dict]]]]:
    """{comparison: {lambda: [(n_per_class, accuracy difference), ...]}} from experiments that ran compare."""
    points: dict[str, dict[float, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for record in records:
        params = record["data"]["params"].get("params.yaml", {}).get("data", {})
        compare = record["data"]["metrics"].get("metrics/compare.json", {}).get("data")
        n_per_class = params.get("prepare", {}).get("n_per_class")
        if not compare or n_per_class is None:
            continue
        lam = params["pretrain_sup"]["lambda"]
        for name, difference in compare["differences"].items():
            points[name][lam][n_per_class] = difference["accuracy"]
    return {name: {lam: sorted(by_n.items()) for lam, by_n in by_lambda.items()}
            for name, by_lambda in sorted(points.items())}


def plot(points: dict[str, dict[float, list[tuple[int, dict]]]], path: Path) -> None:
    figure = Figure(figsize=(6 * len(points), 4))
    axes = figure.subplots(1, len(points), squeeze=False)[0]
    for axis, (name, by_lambda) in zip(axes, points.items()):
        for lam, series in sorted(by_lambda.items()):
            n = [p[0] for p in series]
            diff = [p[1]["diff"] * 100 for p in series]
            low = [(p[1]["diff"] - p[1]["low"]) * 100 for p in series]
            high = [(p[1]["high"] - p[1]["diff"]) * 100 for p in series]
            axis.errorbar(n, diff, yerr=[low, high], marker="o", capsize=3, label=f"λ = {lam:g}")
        axis.axhline(0, color="grey", linewidth=1)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("training labels per class (prepare.n_per_class)")
        axis.set_ylabel(f"test accuracy, {name.replace('_minus_', ' − ')} (points)")
        axis.set_title(name.replace("_minus_", " − "))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("gain of supervised pretraining (95% paired bootstrap interval)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", type=Path, help="output of `dvc exp show --json`")
    parser.add_argument("output", type=Path, help="PNG to write")
    args = parser.parse_args()
    points = gain_points(list(experiments(json.loads(args.experiments.read_text()))))
    if not points:
        parser.error("no experiment with prepare.n_per_class set and a metrics/compare.json; run the sweep first")
    plot(points, args.output)
    lambdas = sorted({lam for by_lambda in points.values() for lam in by_lambda})
    count = sum(len(series) for by_lambda in points.values() for series in by_lambda.values())
    print(f"wrote {args.output}: {count} points in {len(points)} panels ({', '.join(points)}), λ in {lambdas}")


if __name__ == "__main__":
    main()

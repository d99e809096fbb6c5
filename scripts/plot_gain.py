"""Plot the SPT gain against labels per class, one line per λ, from DVC experiments.

Reads `dvc exp show --json` (every experiment with a metrics/compare.json) and draws the paired
accuracy difference SPT − baseline with its 95% interval against `prepare.n_per_class`.

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


def gain_points(records: list[dict]) -> dict[float, list[tuple[int, dict]]]:
    """{lambda: [(n_per_class, accuracy difference), ...]} from experiments that ran compare."""
    points: dict[float, dict[int, dict]] = defaultdict(dict)
    for record in records:
        params = record["data"]["params"].get("params.yaml", {}).get("data", {})
        compare = record["data"]["metrics"].get("metrics/compare.json", {}).get("data")
        n_per_class = params.get("prepare", {}).get("n_per_class")
        if not compare or n_per_class is None:
            continue
        lam = params["pretrain_sup"]["lambda"]
        points[lam][n_per_class] = compare["differences"]["spt_minus_baseline"]["accuracy"]
    return {lam: sorted(by_n.items()) for lam, by_n in points.items()}


def plot(points: dict[float, list[tuple[int, dict]]], path: Path) -> None:
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    for lam, series in sorted(points.items()):
        n = [p[0] for p in series]
        diff = [p[1]["diff"] * 100 for p in series]
        low = [(p[1]["diff"] - p[1]["low"]) * 100 for p in series]
        high = [(p[1]["high"] - p[1]["diff"]) * 100 for p in series]
        axis.errorbar(n, diff, yerr=[low, high], marker="o", capsize=3, label=f"λ = {lam:g}")
    axis.axhline(0, color="grey", linewidth=1)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("training labels per class (prepare.n_per_class)")
    axis.set_ylabel("test accuracy, SPT − baseline (points)")
    axis.set_title("gain of supervised pretraining (95% paired bootstrap interval)")
    axis.grid(alpha=0.3)
    axis.legend()
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
    print(f"wrote {args.output}: {sum(len(s) for s in points.values())} points, λ in {sorted(points)}")


if __name__ == "__main__":
    main()

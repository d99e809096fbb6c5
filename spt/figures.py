"""PNG figures for people (logged to MLflow): learning curves, pretrain_sup's loss weighting, the confusion matrix.

DVC renders its own plots from the CSV files; these images are what the MLflow UI shows.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import (
    Figure,  # the object API: no pyplot state, no backend to select
)


def learning_curves(rows: list[dict[str, float]], keys: list[str], title: str, path: Path) -> Path:
    """One panel per metric in ``keys`` against step (metrics on very different scales stay readable)."""
    present = [key for key in keys if any(key in row for row in rows)]
    figure = Figure(figsize=(7, 2.2 * max(len(present), 1)))
    axes = figure.subplots(len(present), 1, sharex=True, squeeze=False)
    for axis, key in zip(axes[:, 0], present, strict=True):
        points = [(row["step"], row[key]) for row in rows if key in row]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
        axis.set_ylabel(key)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def weighting_diagnostics(rows: list[dict[str, float]], keys: list[str], title: str, path: Path) -> Path:
    """Why a lambda works or fails (pretrain_sup): three panels against step.

    1. The two losses' gradient norms on the shared encoder, raw (dashed) and times their effective
       weight (solid): what each loss really contributes to the update (log scale).
    2. Their cosine: below 0 the losses pull the encoder apart.
    3. The effective weights of L_mlm and L_supervised (log scale).
    ``keys`` is the plot group (the five logged names); rows without gradients (lambda(t) = 0) are skipped
    in panels 1 and 2.
    """
    figure = Figure(figsize=(7, 7.5))
    norms, cosine, weights = figure.subplots(3, 1, sharex=True)
    for loss, color in (("mlm", "C0"), ("supervised", "C1")):
        points = [(row["step"], row[f"grad_norm_{loss}"], row.get(f"weight_{loss}")) for row in rows
                  if row.get(f"grad_norm_{loss}")]
        if points:
            steps = [p[0] for p in points]
            norms.plot(steps, [p[1] for p in points], color=color, linestyle="--", label=f"|grad L_{loss}|")
            if all(p[2] is not None for p in points):
                norms.plot(steps, [p[1] * p[2] for p in points], color=color,
                           label=f"weight_{loss} x |grad L_{loss}|")
        weighted = [(row["step"], row[f"weight_{loss}"]) for row in rows if row.get(f"weight_{loss}")]
        if weighted:
            weights.plot([p[0] for p in weighted], [p[1] for p in weighted], color=color, label=f"weight_{loss}")
    points = [(row["step"], row["grad_cosine"]) for row in rows if "grad_cosine" in row]
    cosine.plot([p[0] for p in points], [p[1] for p in points], color="C2", marker=".")
    cosine.axhline(0.0, color="black", linewidth=0.8)
    cosine.set_ylim(-1.05, 1.05)
    cosine.set_ylabel("cos(grad L_mlm, grad L_sup)")
    norms.set_ylabel("gradient norm on the encoder")
    weights.set_ylabel("effective weight")
    for axis in (norms, weights):
        if axis.lines:
            axis.set_yscale("log")
            axis.legend(fontsize="small")
    for axis in (norms, cosine, weights):
        axis.grid(alpha=0.3)
    weights.set_xlabel("step")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


# Plot groups drawn by a figure of their own rather than one learning curve per key
GROUP_FIGURES = {"weighting": weighting_diagnostics}


def confusion_matrix(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> Path:
    """Counts with row-normalised shading: rows are the true class, columns the prediction."""
    import numpy as np

    counts = np.asarray(matrix)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4, 0.9 * len(labels) + 2)
    figure = Figure(figsize=(size, size))
    axis = figure.subplots()
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        axis.text(column, row, f"{count}\n{shares[row, column]:.0%}", ha="center", va="center",
                  color="white" if shares[row, column] > 0.5 else "black")
    axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path

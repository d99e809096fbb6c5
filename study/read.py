"""Reading a study run's outputs: test predictions and scores, the validation curve, the compute it spent.

Only compare reads test outputs, and only after every choice on validation is made (study/sweep.py,
study/curve.py: best other).
"""

from __future__ import annotations

import csv
import json

from spt import paths
from spt.errors import StudyError


def read_run(run: str, pretrained: bool) -> dict:
    """Test predictions and scores, the validation curve and the training compute of one study run
    (``pretrained``: it has a pretrain_sup run of its own, as spt and tapt)."""
    try:
        scores = json.loads(paths.metrics_file("evaluate", run).read_text())
        finetune = json.loads(paths.metrics_file("finetune", run).read_text())
        pretraining = (json.loads(paths.metrics_file("pretrain_sup", run).read_text())
                       if pretrained else {"steps": 0, "flops": 0.0})
        with open(paths.plots_dir("evaluate", run) / "confusion.csv") as handle:
            rows = list(csv.DictReader(handle))
        with open(paths.plots_dir("finetune", run) / "validation.csv") as handle:
            curve = [row for row in csv.DictReader(handle) if row["eval_macro_f1"]]
    except FileNotFoundError as err:
        raise StudyError(f"study run {run} is incomplete ({err.filename} missing); run `dvc repro`") from None
    steps = [int(r["step"]) for r in curve]
    flops = [float(r["flops"]) for r in curve]
    return {"run": run, "scores": scores, "actual": [r["actual"] for r in rows],
            "predicted": [r["predicted"] for r in rows],
            "steps": steps, "val_macro_f1": [float(r["eval_macro_f1"]) for r in curve],
            "val_best": float(finetune["val_macro_f1"]),  # the checkpoint finetuning kept
            "best_step": finetune.get("best_step"),  # its step (runs written before it existed: None)
            "pretraining_steps": int(pretraining["steps"]), "pretraining_flops": float(pretraining["flops"]),
            "finetune_steps": int(finetune["steps"]), "finetune_flops": float(finetune["flops"]),
            "total_steps": [int(pretraining["steps"]) + s for s in steps],
            "total_flops": [float(pretraining["flops"]) + f for f in flops]}


def read_floor(run: str) -> dict:
    """A floor run's test predictions and scores, or {"skipped": why} when it did not run."""
    try:
        scores = json.loads(paths.metrics_file("evaluate", run).read_text())
        if "skipped" in scores:
            return {"skipped": scores["skipped"]}
        with open(paths.plots_dir("evaluate", run) / "confusion.csv") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError as err:
        raise StudyError(f"floor {run} is incomplete ({err.filename} missing); run `dvc repro`") from None
    return {"scores": scores, "actual": [r["actual"] for r in rows], "predicted": [r["predicted"] for r in rows]}

"""The identity of one study run: which arm, which seed, and where it sits on the study's axes.

A :class:`Run` is what varies across the study's runs, in one object: its ``name`` (``<arm>-<seed>``,
``spt-<weighting>-l<lambda>-<seed>`` for a setting of the sweep, ``<arm>-n<labels per class>-<seed>`` on
the labels-per-class curve, ``<arm>`` for a floor's one run), where it reads its labels, and its MLflow tags.
The main chain is no study run: stages take ``run=None`` for it. Each axis is one field here and one
module (study/sweep.py, study/curve.py), plus its flag in stages/cli.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from spt import paths
from study.curve import labels_dir
from study.sweep import Setting


@dataclass(frozen=True)
class Run:
    """One study run. ``seed`` is None for a floor of the full set (deterministic: it runs once)."""

    arm: str
    seed: int | None = None
    setting: Setting | None = None  # study/sweep.py: a setting of the sweep (the spt arm only)
    labels_per_class: int | None = None  # study/curve.py: a point of the labels-per-class curve

    @property
    def name(self) -> str:
        """The run's directory name under models/study, metrics/study, plots/study and checkpoints/study."""
        if self.labels_per_class is not None:
            return f"{self.arm}-n{self.labels_per_class}-{self.seed}"
        if self.setting is not None:
            return f"{self.arm}-{self.setting.tag}-{self.seed}"
        return self.arm if self.seed is None else f"{self.arm}-{self.seed}"

    @property
    def labeled(self) -> Path:
        """Where its train and validation splits come from (test is always data/processed's)."""
        if self.labels_per_class is None:
            return paths.LABELED
        return labels_dir(self.labels_per_class, self.seed) / paths.LABELED.name

    def with_arm(self, arm: str) -> Run:
        """The same point of the study for another arm (e.g. the spt run a matched baseline matches)."""
        return dataclasses.replace(self, arm=arm)

    def without_setting(self) -> Run:
        """The arm's own run of this seed: a setting of the sweep equal to pretrain_sup's own setting is that run."""
        return dataclasses.replace(self, setting=None)

    def tags(self) -> dict[str, str]:
        """MLflow tags that tell study runs apart (besides the stage's own)."""
        tags = {"study_run": self.name, "arm": self.arm}
        if self.setting is not None:
            # lambda as a float, as pretrain_sup tags every run with the lambda it trained with (2 and 2.0 alike)
            tags.update(weighting=self.setting.weighting, **{"lambda": str(float(self.setting.lambda_))})
        if self.labels_per_class is not None:
            tags["n_per_class"] = str(self.labels_per_class)
        return tags


def name_of(run: Run | None) -> str | None:
    """The study run's name, None for the main chain (what spt.paths takes)."""
    return None if run is None else run.name


def study_tags(run: Run | None) -> dict[str, str]:
    """The run's MLflow tags; the main chain's say ``study_run: main``."""
    return {"study_run": "main"} if run is None else run.tags()


def twins(run: Run | None) -> tuple[str, ...]:
    """Study runs whose outputs ``run`` may copy when it is identical to them (besides the main chain's): a setting
    of the sweep equal to pretrain_sup's own setting is the arm's own run of its seed."""
    return (run.without_setting().name,) if run is not None and run.setting is not None else ()

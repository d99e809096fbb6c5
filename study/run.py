"""The identity of one study run: which arm, which seed, and where it sits on the study's axes.

A :class:`Run` is what varies across the study's runs, in one object: its ``name`` (``<arm>-<seed>``,
``spt-<weighting>-l<lambda>-<seed>`` for a setting of the sweep, ``<arm>-n<labels per class>-<seed>`` on
the labels-per-class curve, ``<arm>`` for a floor's one run), where it reads its labels, and its MLflow tags.
The main chain is no study run: stages take ``run=None`` for it. Each axis is one field here and one
module (study/sweep.py, study/curve.py), plus its flag in stages/cli.py.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from spt import paths
from study.arms import ARMS, FLOOR_ARMS
from study.curve import labels_dir
from study.sweep import Setting

# Run.name's grammar, read back: the arm, then a point of the curve (-n<N>) or a setting of the sweep
# (-<weighting>-l<lambda>), then the seed. Arms and weightings are words; lambda is a number as params.yaml wrote it
# (1, 0.5, 1e-05).
NAME = re.compile(r"(?P<arm>[a-z_]+)"
                  r"(?:-n(?P<labels_per_class>[0-9]+)|-(?P<weighting>[a-z_]+)-l(?P<lambda_>[0-9][0-9.e+-]*?))?"
                  r"(?:-(?P<seed>[0-9]+))?")


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

    @classmethod
    def from_name(cls, name: str) -> Run:
        """The run ``name`` names (the inverse of :attr:`name`), e.g. read from an output path
        (metrics/study/<name>/...). ValueError when it names none."""
        match = NAME.fullmatch(name)
        if match is None or match["arm"] not in ARMS + FLOOR_ARMS:
            raise ValueError(f"'{name}' names no study run: expected <arm>, <arm>-<seed>, <arm>-n<labels per "
                             "class>-<seed> or spt-<weighting>-l<lambda>-<seed>, with an arm of "
                             f"{', '.join(ARMS + FLOOR_ARMS)}")
        setting = None
        if match["weighting"] is not None:
            text = match["lambda_"]
            setting = Setting(match["weighting"], int(text) if text.isdigit() else float(text))
        return cls(match["arm"], None if match["seed"] is None else int(match["seed"]), setting,
                   None if match["labels_per_class"] is None else int(match["labels_per_class"]))

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
            tags["labels_per_class"] = str(self.labels_per_class)
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

"""How the report writes numbers: percentages with their spread or interval."""

from __future__ import annotations


def cell(value: dict | None, scale: float = 1.0, fmt: str = ".0f") -> str:
    if value is None:
        return "never"
    text = f"{value['mean'] / scale:{fmt}}"
    return text if value["seeds"] < 2 else f"{text} [{value['low'] / scale:{fmt}}, {value['high'] / scale:{fmt}}]"


def mean_std(mean: float, std: float | None) -> str:
    return f"{mean * 100:.2f}" if std is None else f"{mean * 100:.2f} ± {std * 100:.2f}"

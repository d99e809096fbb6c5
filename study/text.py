"""How the report writes numbers: percentages with their spread or interval."""

from __future__ import annotations


def cell(value: dict | None, scale: float = 1.0, fmt: str = ".0f") -> str:
    if value is None:
        return "never"
    text = f"{value['mean'] / scale:{fmt}}"
    if value["seeds"] < 2 or value["low"] == value["high"]:  # a zero-width interval says nothing: not shown
        return text
    return f"{text} [{value['low'] / scale:{fmt}}, {value['high'] / scale:{fmt}}]"


def mean_std(mean: float, std: float | None) -> str:
    return f"{mean * 100:.2f}" if std is None else f"{mean * 100:.2f} ± {std * 100:.2f}"


def points(row: dict, key: str = "diff") -> str:
    """A difference in points with its interval: ``+2.11 [-0.08, +4.30]``."""
    return f"{row[key] * 100:+.2f} [{row['low'] * 100:+.2f}, {row['high'] * 100:+.2f}]"


def p_value(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """``= 0.062`` or ``< 0.001``, to follow a "p" in a sentence."""
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def beats(row: dict) -> str:
    """P(A > B) from paired seeds with its exact interval: ``2/3 seeds: 0.67 [0.09, 0.99]``."""
    chance = row["p_a_beats_b"]
    wins = chance["estimate"] * chance["seeds"]
    return (f"{wins:g}/{chance['seeds']} seeds: {chance['estimate']:.2f} "
            f"[{chance['low']:.2f}, {chance['high']:.2f}]")


def power_line(row: dict, first: str, second: str) -> str:
    """How many seeds would tell ``first`` from ``second`` at 1 point with 80% power (the row: a difference of
    :func:`study.stats.paired_difference`)."""
    seeds, needed = row["seeds"], row["seeds_for_1_point"]
    if seeds < 2:
        return (f"how many seeds would tell {first} from {second} is unknown: one seed shows no spread between "
                "seeds (run at least 3)")
    if needed is None:
        return (f"no number of seeds would tell {first} from {second} at 1 point with 80% power: the test noise every "
                f"seed shares (SE {row['shared_test_sd'] * 100:.2f} points) is too large; that needs a larger test set")
    if needed <= seeds:
        return (f"these {seeds} seeds would detect a 1-point difference between {first} and {second} with 80% power "
                f"(from {needed} seeds on)")
    return (f"add {needed - seeds} seeds to tell {first} from {second} at 1 point with 80% power ({needed} in all, "
            f"from the per-seed SD of {row['sd_per_seed'] * 100:.2f} points)")

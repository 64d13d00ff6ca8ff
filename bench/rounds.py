"""Rounds for the benchmarks: interleave the sides of a comparison, report medians and spread.

A benchmark on a shared machine measures the machine as much as the code. Every comparison
here runs its sides in the same round, one after the other, in an order that rotates from
round to round (so that drift, a cache or a neighbour's burst hits each side alike), and
each round gives one figure (a ratio, a difference). What is printed is the median of those
figures over the rounds and their spread (min-max): a ratio whose spread crosses its target
says the machine was too noisy to tell, which a single median would hide.

Imported by the `bench_*.py` scripts next to it (`python bench/bench_x.py` puts this
directory on `sys.path`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

MIN_ROUNDS = 5


def interleaved(rounds: int, sides: dict[str, Callable[[], T]]) -> dict[str, list[T]]:
    """Run every side once per round, in an order rotated by one each round; returns each
    side's results in round order. At least `MIN_ROUNDS` rounds."""
    names = list(sides)
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(max(rounds, MIN_ROUNDS)):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(sides[name]())
    return results


def spread(values: Sequence[float], fmt: str = ".2f", unit: str = "") -> str:
    """`1.02x (min 0.97x, max 1.10x; 7 rounds)`: the median, its spread and how many."""
    med, low, high = (
        f"{v:{fmt}}{unit}" for v in (statistics.median(values), min(values), max(values))
    )
    return f"{med} (min {low}, max {high}; {len(values)} rounds)"


def verdict(values: Sequence[float], ok: Callable[[float], bool]) -> str:
    """OK when the median meets the target; says so when the spread straddles it."""
    med = statistics.median(values)
    hits = sum(1 for v in values if ok(v))
    if ok(med):
        return "OK" if hits == len(values) else f"OK (median; {hits}/{len(values)} rounds)"
    return f"MISSED ({hits}/{len(values)} rounds met it)"


def ratios(top: Sequence[float], bottom: Sequence[float]) -> list[float]:
    """Round by round: top[i] / bottom[i]."""
    return [a / b for a, b in zip(top, bottom, strict=True)]


def differences(top: Sequence[float], bottom: Sequence[float]) -> list[float]:
    """Round by round: top[i] - bottom[i]."""
    return [a - b for a, b in zip(top, bottom, strict=True)]

"""Distributions of measured values: percentiles by the nearest-rank rule, and a least-squares slope."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``; ``ValueError`` if empty.

    Nearest rank never interpolates: p99 of 30 values is the largest one, which is what was seen.
    """
    if not values:
        raise ValueError("percentile of no values: measure at least one")
    if not 0 < p <= 100 or math.isnan(p):
        raise ValueError(f"percentile {p!r} is outside (0, 100]")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Dist:
    """n, p50, p90, p99 and max of a sample, in the sample's unit."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Dist:
        return cls(
            n=len(values), p50=percentile(values, 50), p90=percentile(values, 90),
            p99=percentile(values, 99), max=max(values),
        )  # fmt: skip

    def scaled(self, factor: float) -> Dist:
        """The same distribution in another unit (e.g. seconds -> milliseconds)."""
        return Dist(self.n, self.p50 * factor, self.p90 * factor, self.p99 * factor, self.max * factor)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ``ys`` over ``xs``; ``ValueError`` with fewer than two distinct xs."""
    if len(xs) != len(ys):
        raise ValueError(f"slope of {len(xs)} xs and {len(ys)} ys: give one y per x")
    if len(set(xs)) < 2:
        raise ValueError(f"slope needs at least two distinct x values, got {sorted(set(xs))}")
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var = sum((x - mean_x) ** 2 for x in xs)
    return cov / var

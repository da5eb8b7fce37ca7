"""What a measurement yields: a count over a duration, or latency samples (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Latency", "Throughput", "percentile"]


@dataclass(frozen=True, slots=True)
class Throughput:
    """`events` done in `seconds`, out of `target` asked for."""

    events: int
    seconds: float
    target: int

    @property
    def rate(self) -> float:
        """Events per second; 0 when nothing was measured."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """False when the deadline stopped the measurement first."""
        return self.events >= self.target


@dataclass(frozen=True, slots=True)
class Latency:
    """One duration per event, in milliseconds, out of `target` asked for."""

    samples_ms: tuple[float, ...]
    target: int

    @property
    def complete(self) -> bool:
        """False when the deadline stopped the measurement first."""
        return len(self.samples_ms) >= self.target

    def percentile(self, q: float) -> float:
        """The `q`th percentile (nearest rank); 0 without samples."""
        return percentile(self.samples_ms, q)


def percentile(values: tuple[float, ...] | list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]

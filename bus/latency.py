"""Latency quantiles from scraped Prometheus histograms (pure: exposition text in, seconds out).

The supervisor scrapes each replica's `/metrics` once per sample and keeps, per replica, the
cumulative bucket counts of the last `seconds`; a quantile is read from the increase over that
window summed across replicas, interpolated within its bucket as Prometheus's
`histogram_quantile` does. A replica whose counts went down restarted: its history starts over.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

__all__ = ["LatencyWindow", "histogram_buckets", "quantile"]

Buckets = tuple[tuple[float, float], ...]
"""(upper bound, cumulative count) per bucket, bounds increasing, the last one +Inf."""


def histogram_buckets(text: str, name: str) -> Buckets:
    """The buckets of histogram `name` in exposition `text`, summed over its series."""
    prefix = f"{name}_bucket{{"
    counts: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line[len(prefix) :].rpartition("} ")
        bound = _label(labels, "le")
        if bound is None:
            continue
        try:
            le, count = float(bound), float(value)
        except ValueError:
            continue
        counts[le] = counts.get(le, 0.0) + count
    return tuple(sorted(counts.items()))


def _label(labels: str, key: str) -> str | None:
    for pair in labels.split(","):
        name, _, value = pair.partition("=")
        if name.strip() == key:
            return value.strip().strip('"')
    return None


def quantile(q: float, buckets: Buckets) -> float | None:
    """The `q` quantile of `buckets` (None without observations), as `histogram_quantile`."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # the highest finite bound: all that is known
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


class LatencyWindow:
    """Cumulative buckets per source (replica) over the last `seconds`, for windowed quantiles."""

    def __init__(self, seconds: float = 30.0) -> None:
        self._seconds = seconds
        self._history: dict[str, deque[tuple[float, Buckets]]] = {}

    def add(self, source: str, at: float, buckets: Buckets) -> None:
        """One scrape of `source` at monotonic time `at`."""
        history = self._history.setdefault(source, deque())
        if history and _went_down(history[-1][1], buckets):
            history.clear()  # the replica restarted: its counters did too
        history.append((at, buckets))
        while len(history) > 2 and history[1][0] <= at - self._seconds:
            history.popleft()

    def keep(self, sources: Iterable[str]) -> None:
        """Forget sources other than `sources` (stopped replicas)."""
        wanted = set(sources)
        for source in [s for s in self._history if s not in wanted]:
            del self._history[source]

    def quantile(self, q: float) -> float | None:
        """The `q` quantile of what every source observed in the window (None if nothing)."""
        total: dict[float, float] = {}
        for history in self._history.values():
            first, last = _as_map(history[0][1]), history[-1][1]
            if len(history) == 1:
                first = {}
            for bound, count in last:
                total[bound] = total.get(bound, 0.0) + count - first.get(bound, 0.0)
        return quantile(q, tuple(sorted(total.items())))


def _as_map(buckets: Buckets) -> Mapping[float, float]:
    return dict(buckets)


def _went_down(before: Buckets, after: Buckets) -> bool:
    previous = dict(before)
    return any(count < previous.get(bound, 0.0) for bound, count in after)

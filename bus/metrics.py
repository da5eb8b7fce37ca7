"""Prometheus counters and histograms, rendered in the text exposition format 0.0.4 (pure).

No clock and no I/O: adapters time what they measure and serve `Registry.render()` themselves.
A lock per metric keeps updates whole when a thread pool shares the registry with the event loop.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from bisect import bisect_left
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["CONTENT_TYPE", "DEFAULT_BUCKETS", "Counter", "Gauge", "Histogram", "Registry"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of `Registry.render()` output."""
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram upper bounds in seconds (Prometheus clients' defaults); `+Inf` is always added."""

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _format(value: float) -> str:
    """A sample value or bound as Prometheus writes it: `1`, `0.25`, `+Inf`, `NaN`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} must match [a-zA-Z_:][a-zA-Z0-9_:]*")
        for label in labels:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(
                    f"metric {name!r}: label name {label!r} must match [a-zA-Z_][a-zA-Z0-9_]* "
                    "and not start with '__' (reserved)"
                )
        if len(set(labels)) != len(labels):
            raise ValueError(f"metric {name!r}: label names {list(labels)} repeat")
        self.name = name
        self.help = help
        self.labels = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labels):
            raise ValueError(f"metric {self.name!r} takes labels {list(self.labels)}, got {sorted(labels)}")
        for label, value in labels.items():
            if not isinstance(value, str):
                raise TypeError(f"metric {self.name!r}: label {label!r} must be a string, got {value!r}")
        return tuple(labels[label] for label in self.labels)

    def _selector(self, key: tuple[str, ...], extra: str = "") -> str:
        pairs = [f'{label}="{_escape_label(value)}"' for label, value in zip(self.labels, key, strict=True)]
        if extra:
            pairs.append(extra)
        return "{" + ",".join(pairs) + "}" if pairs else ""

    def render(self) -> list[str]:
        """The HELP and TYPE lines, then every sample line."""
        header = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        return header + self._samples()

    def _samples(self) -> list[str]:
        raise NotImplementedError


_M = TypeVar("_M", bound=_Metric)


class _Scalar(_Metric):
    """One number per combination of label values (counters and gauges)."""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def value(self, **labels: str) -> float:
        """The current value of the series of these label values (0 if never changed)."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def _samples(self) -> list[str]:
        with self._lock:
            values = sorted(self._values.items())
        return [f"{self.name}{self._selector(key)} {_format(value)}" for key, value in values]


class Counter(_Scalar):
    """A value that only goes up, one per combination of label values."""

    kind = "counter"

    def inc(self, amount: float = 1, **labels: str) -> None:
        """Add `amount` (0 or more) to the series of these label values."""
        if math.isnan(amount) or amount < 0:
            raise ValueError(f"counter {self.name!r} can only increase, got {amount!r}")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Scalar):
    """A value that goes up and down (a state: replicas, the leader flag), one per label values."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        """Set the series of these label values to `value`."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)


class Histogram(_Metric):
    """Observations counted into fixed buckets (seconds, by default), with their sum and count."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        super().__init__(name, help, labels)
        if "le" in self.labels:
            raise ValueError(f"histogram {name!r}: 'le' is the bucket label and cannot be declared")
        bounds = [float(bound) for bound in buckets]
        if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
            bounds.pop()  # +Inf is always the last bucket; accept it given explicitly
        if not bounds or any(math.isnan(b) or math.isinf(b) for b in bounds):
            raise ValueError(f"histogram {name!r}: buckets must be finite numbers, got {list(buckets)}")
        if any(low >= high for low, high in itertools.pairwise(bounds)):
            raise ValueError(f"histogram {name!r}: buckets must increase strictly, got {list(buckets)}")
        self.buckets = (*bounds, math.inf)
        # Per series: per-bucket (non-cumulative) counts, then the sum of observations.
        self._series: dict[tuple[str, ...], tuple[list[int], float]] = {}
        if not labels:
            self._series[()] = ([0] * len(self.buckets), 0.0)

    def observe(self, value: float, **labels: str) -> None:
        """Count one observation (in seconds for the default buckets) in the series of these labels."""
        if math.isnan(value):
            raise ValueError(f"histogram {self.name!r}: cannot observe NaN")
        key = self._key(labels)
        index = next(i for i, bound in enumerate(self.buckets) if value <= bound)
        with self._lock:
            counts, total = self._series.get(key) or ([0] * len(self.buckets), 0.0)
            counts[index] += 1
            self._series[key] = (counts, total + value)

    def observe_many(self, values: Sequence[float], **labels: str) -> None:
        """Count each of `values` in the series of these labels (one lock for a batch)."""
        if not values:
            return
        if any(math.isnan(value) for value in values):
            raise ValueError(f"histogram {self.name!r}: cannot observe NaN")
        key = self._key(labels)
        buckets = self.buckets
        with self._lock:
            counts, total = self._series.get(key) or ([0] * len(buckets), 0.0)
            for value in values:
                counts[bisect_left(buckets, value)] += 1
            self._series[key] = (counts, total + sum(values))

    def _samples(self) -> list[str]:
        with self._lock:
            series = [(key, (list(counts), total)) for key, (counts, total) in self._series.items()]
        series.sort(key=lambda item: item[0])
        lines = []
        for key, (counts, total) in series:
            cumulative = 0
            for bound, count in zip(self.buckets, counts, strict=True):
                cumulative += count
                le = f'le="{_format(bound)}"'
                lines.append(f"{self.name}_bucket{self._selector(key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{self._selector(key)} {_format(total)}")
            lines.append(f"{self.name}_count{self._selector(key)} {cumulative}")
        return lines


class Registry:
    """The metrics of one process (or one app), rendered together in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        """Register and return a counter."""
        return self._add(Counter(name, help, labels))

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        """Register and return a gauge."""
        return self._add(Gauge(name, help, labels))

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> Histogram:
        """Register and return a histogram."""
        return self._add(Histogram(name, help, labels, buckets))

    def _add(self, metric: _M) -> _M:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name!r} is registered already")
            self._metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format 0.0.4, ending with a newline."""
        with self._lock:
            metrics = list(self._metrics.values())
        lines = [line for metric in metrics for line in metric.render()]
        return "\n".join(lines) + "\n" if lines else ""

"""The status of worker groups (SPEC §7), pure: lag samples, rates, scaling decisions, `bus status` output.

`bus.kafka.lag` reads offsets and records from Kafka and builds these values; the supervisor scales
on them, `bus status` prints them. Times are arguments: `at` is a monotonic clock (rates), `wall`
is seconds since the epoch (record ages).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from bus import naming

__all__ = [
    "SCALING_DECISION",
    "FunctionStatus",
    "GroupSample",
    "PartitionSample",
    "Probe",
    "RateWindow",
    "ScalingDecision",
    "format_duration",
    "format_rate",
    "function_status",
    "head",
    "lag_seconds",
    "latest_decisions",
    "render_table",
    "resolve",
    "router_line",
    "to_json",
]

SCALING_DECISION = "bus.scaling.decision"
"""CloudEvent type of the supervisor's decision log records (topic `naming.scaling_topic`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionSample:
    """One partition of a worker group's topics at one sample.

    Offsets are read_committed: `end` is the last stable offset, so records of open transactions
    do not count yet. Rates are offsets per second over the monitor's rate window (transaction
    markers included); None until two samples exist.
    """

    topic: str
    partition: int
    committed: int | None
    """The group's committed offset as the broker reports it; None if it never committed here."""
    start: int
    """Log start offset (the oldest record still kept)."""
    end: int
    """Last stable offset: one past the newest committed record."""
    position: int
    """Where the group's next record is: `committed` (or `start` when there is none, or when
    retention deleted past it), moved past the transaction markers and aborted records a read
    found in front of it. `end - position` is the lag without the markers that otherwise leave
    a lag of 1 behind every transaction on an idle partition."""
    lag: int
    """Records not processed yet: `end - position`, never negative."""
    consume_rate: float | None
    """Committed offsets per second."""
    produce_rate: float | None
    """End offsets per second."""
    lag_seconds: float | None
    """`lag / consume_rate`; 0 without lag, `math.inf` when lagging with no progress (stalled),
    None when no rate is known yet."""
    oldest_age: float | None
    """Seconds since the timestamp of the oldest unprocessed record; None without lag, or when
    not read at this sample."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSample:
    """A function's worker group at one sample: its topic's partitions, then its retry topics'."""

    function: str
    group: str
    topic: str
    """The function topic; the other partitions are its retry topics'."""
    at: float
    """Monotonic time of the sample (seconds)."""
    wall: float
    """Wall-clock time of the sample (seconds since the epoch)."""
    partitions: tuple[PartitionSample, ...]

    @property
    def inputs(self) -> tuple[PartitionSample, ...]:
        """The function topic's partitions (the router's deliveries)."""
        return tuple(p for p in self.partitions if p.topic == self.topic)

    @property
    def retries(self) -> tuple[PartitionSample, ...]:
        """The retry topics' partitions (delayed retries, in backoff)."""
        return tuple(p for p in self.partitions if p.topic != self.topic)

    @property
    def lag(self) -> int:
        """Lag on the function topic."""
        return sum(p.lag for p in self.inputs)

    @property
    def retry_lag(self) -> int:
        """Retries pending: lag on the retry topics."""
        return sum(p.lag for p in self.retries)

    @property
    def total_lag(self) -> int:
        """Lag on every topic the group reads."""
        return sum(p.lag for p in self.partitions)

    @property
    def lag_seconds(self) -> float | None:
        """The largest `lag_seconds` of the function topic's partitions (None if none is known)."""
        known = [p.lag_seconds for p in self.inputs if p.lag_seconds is not None]
        return max(known, default=None)

    @property
    def oldest_age(self) -> float | None:
        """Age of the oldest unprocessed record on the function topic (None if unknown or no lag)."""
        known = [p.oldest_age for p in self.inputs if p.oldest_age is not None]
        return max(known, default=None)

    @property
    def produce_rate(self) -> float | None:
        """Events per second into the function topic (None until two samples exist)."""
        return _sum_rates(p.produce_rate for p in self.inputs)

    @property
    def consume_rate(self) -> float | None:
        """Events per second the group commits on the function topic."""
        return _sum_rates(p.consume_rate for p in self.inputs)


def _sum_rates(rates: Iterable[float | None]) -> float | None:
    known = [rate for rate in rates if rate is not None]
    return sum(known) if known else None


def lag_seconds(lag: int, consume_rate: float | None) -> float | None:
    """How long the lag takes at the current consume rate: 0 without lag, inf when stalled."""
    if lag <= 0:
        return 0.0
    if consume_rate is None:
        return None
    return lag / consume_rate if consume_rate > 0 else math.inf


class RateWindow:
    """Committed and end offsets of each partition over the last `seconds`, for rates.

    A rate spans from the oldest sample in the window to the newest; with samples every second
    and a 5 s window it is the mean of the last 5 s. Offsets moving back (a reset, a recreated
    topic) count as no progress, never as a negative rate.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._history: dict[tuple[str, int], deque[tuple[float, int | None, int]]] = {}

    def add(
        self, key: tuple[str, int], at: float, committed: int | None, end: int
    ) -> tuple[float | None, float | None]:
        """Record one sample of partition `key`; return its (consume rate, produce rate)."""
        history = self._history.setdefault(key, deque())
        history.append((at, committed, end))
        while len(history) > 2 and history[1][0] <= at - self._seconds:
            history.popleft()
        first_at, first_committed, first_end = history[0]
        elapsed = at - first_at
        if elapsed <= 0:
            return None, None
        produce = max(0, end - first_end) / elapsed
        if committed is None and first_committed is None:
            return 0.0, produce
        if committed is None or first_committed is None:
            return None, produce
        return max(0, committed - first_committed) / elapsed, produce

    def keep(self, keys: Iterable[tuple[str, int]]) -> None:
        """Forget partitions other than `keys` (topics no longer monitored)."""
        wanted = set(keys)
        for key in [key for key in self._history if key not in wanted]:
            del self._history[key]


@dataclass(frozen=True, slots=True)
class Probe:
    """What reading a partition from `start` (read_committed) found.

    With `found`, `offset` and `timestamp` are the first record's (timestamp in epoch seconds,
    None if the record has none); without, the read reached the end at `offset`: everything in
    [start, offset) is transaction markers or aborted records.
    """

    start: int
    offset: int
    found: bool
    timestamp: float | None = None


def head(committed: int | None, start: int) -> int:
    """The first offset a group would read: its committed offset, or the log start if none or older."""
    return start if committed is None else max(committed, start)


def resolve(probe: Probe | None, first: int, end: int) -> tuple[int, float | None, bool]:
    """(position, timestamp of the record there, known) of a partition the group reads from `first`.

    Uses an earlier probe while it still says what lies at `first`: a record it found is still the
    oldest unprocessed one while the group has not passed it; an end it reached still is the end
    unless records came after. Not `known`: read from `position` (past what is known to be empty).
    """
    if first >= end:
        return first, None, True
    if probe is None or not probe.start <= first <= probe.offset:
        return first, None, False
    if probe.found:
        if probe.offset >= end:  # the record came after this sample's end: nothing before it
            return end, None, True
        return probe.offset, probe.timestamp, True
    if probe.offset >= end:
        return end, None, True
    return probe.offset, None, False


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingDecision:
    """The supervisor's latest decision for one function (a `bus.scaling.decision` event's data)."""

    function: str
    desired: int
    actual: int
    reason: str
    total_lag: int | None = None
    p99_seconds: float | None = None
    at: str | None = None
    """RFC 3339 time of the decision."""

    @classmethod
    def from_data(cls, data: Any) -> ScalingDecision | None:
        """The decision in an event's data, or None if the data is not one (a newer or broken writer)."""
        if not isinstance(data, Mapping):
            return None
        function, desired, actual = data.get("function"), data.get("desired"), data.get("actual")
        if not isinstance(function, str) or not _is_int(desired) or not _is_int(actual):
            return None
        reason, total_lag, p99, at = (data.get(k) for k in ("reason", "total_lag", "p99_seconds", "at"))
        return cls(
            function=function,
            desired=desired,
            actual=actual,
            reason=reason if isinstance(reason, str) else "",
            total_lag=total_lag if _is_int(total_lag) else None,
            p99_seconds=float(p99) if _is_number(p99) else None,
            at=at if isinstance(at, str) else None,
        )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def latest_decisions(datas: Iterable[Any]) -> dict[str, ScalingDecision]:
    """The last valid decision per function from event data in log order."""
    latest: dict[str, ScalingDecision] = {}
    for data in datas:
        decision = ScalingDecision.from_data(data)
        if decision is not None:
            latest[decision.function] = decision
    return latest


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionStatus:
    """One line of `bus status`: a function's worker group, its scaling, its retries and dead letters."""

    function: str
    partitions: int
    """Partitions of the function topic (0 if it does not exist yet)."""
    lag: int
    lag_seconds: float | None
    oldest_age: float | None
    events_in: float | None
    """Events per second into the function topic."""
    events_out: float | None
    """Events per second its group processes."""
    retries_pending: int
    dead_letters: int | None
    """Records in the function's DLQ; None if not counted."""
    decision: ScalingDecision | None
    """The supervisor's latest decision; None if no supervisor ran."""


def function_status(
    sample: GroupSample, decision: ScalingDecision | None, dead_letters: int | None
) -> FunctionStatus:
    """The `bus status` line of one function."""
    return FunctionStatus(
        function=sample.function,
        partitions=len(sample.inputs),
        lag=sample.lag,
        lag_seconds=sample.lag_seconds,
        oldest_age=sample.oldest_age,
        events_in=sample.produce_rate,
        events_out=sample.consume_rate,
        retries_pending=sample.retry_lag,
        dead_letters=dead_letters,
        decision=decision,
    )


def _finite(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None and math.isfinite(value) else None


def to_json(status: FunctionStatus) -> dict[str, Any]:
    """The `bus status --json` object of one function: null where unknown.

    `lag_seconds` is null both before rates are known and when stalled (JSON has no infinity):
    `stalled` tells the two apart.
    """
    decision = status.decision
    return {
        "function": status.function,
        "partitions": status.partitions,
        "lag": status.lag,
        "lag_seconds": _finite(status.lag_seconds, 3),
        "stalled": status.lag_seconds == math.inf,
        "oldest_age_seconds": _finite(status.oldest_age, 3),
        "replicas_desired": decision.desired if decision else None,
        "replicas_actual": decision.actual if decision else None,
        "scaling_reason": decision.reason if decision else None,
        "decided_at": decision.at if decision else None,
        "events_in_per_second": _finite(status.events_in, 3),
        "events_out_per_second": _finite(status.events_out, 3),
        "p99_seconds": decision.p99_seconds if decision else None,
        "retries_pending": status.retries_pending,
        "dead_letters": status.dead_letters,
    }


_COLUMNS = (
    "FUNCTION", "PARTITIONS", "LAG", "LAG-TIME", "OLDEST", "DESIRED", "ACTUAL",
    "IN/S", "OUT/S", "P99", "RETRIES", "DLQ", "REASON",
)  # fmt: skip
_RIGHT = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
"""Columns aligned right (numbers)."""


def format_duration(seconds: float | None) -> str:
    """Short human duration: 0.25s, 12s, 3m05s, 2h07m; `stalled` for infinity, `-` for unknown."""
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "stalled"
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_rate(value: float | None) -> str:
    """Events per second: one decimal below 100, whole above; `-` when unknown."""
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _row(status: FunctionStatus) -> tuple[str, ...]:
    decision = status.decision
    return (
        status.function,
        str(status.partitions),
        str(status.lag),
        format_duration(status.lag_seconds),
        format_duration(status.oldest_age),
        str(decision.desired) if decision else "-",
        str(decision.actual) if decision else "-",
        format_rate(status.events_in),
        format_rate(status.events_out),
        format_duration(decision.p99_seconds if decision else None),
        str(status.retries_pending),
        "-" if status.dead_letters is None else str(status.dead_letters),
        (decision.reason or "-") if decision else "-",
    )


def router_line(prefix: str, dead_letters: int) -> str:
    """The line under the `bus status` table about the router's dead letters ("" when there are none)."""
    if not dead_letters:
        return ""
    letters = "dead letter" if dead_letters == 1 else "dead letters"
    return f"router: {dead_letters} {letters} in {naming.router_dlq_topic(prefix)} (`bus dlq list --router`)"


def render_table(statuses: Sequence[FunctionStatus]) -> str:
    """The `bus status` table: a header and one aligned line per function (the reason last, unpadded)."""
    rows = [_COLUMNS, *(_row(status) for status in statuses)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in _RIGHT else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)

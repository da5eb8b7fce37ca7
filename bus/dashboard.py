"""The web dashboard's state (SPEC §7), pure: per-function history, scaling decisions, dead letters.

`bus.dashboard_server` samples Kafka every interval and feeds a `Board`; the page polls
`Board.to_json()` at `/api/state` and draws it. Times are arguments (`wall`: seconds since the
epoch): nothing here reads a clock or touches Kafka.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bus.status import FunctionStatus, GroupSample, ScalingDecision, function_status, to_json

__all__ = [
    "DECISIONS_KEPT",
    "RETENTION",
    "STALE_AFTER",
    "Board",
    "DecisionEntry",
    "Decisions",
    "History",
    "Point",
    "epoch",
]

RETENTION = 3600.0
"""Seconds of history kept per function by default."""
DECISIONS_KEPT = 50
"""Decision entries kept per function by default."""
STALE_AFTER = 35.0
"""Seconds after which the latest decision no longer says how many replicas run: the supervisor
publishes every 10 s even without a change, so a silent minute means it is gone."""


def epoch(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (`2026-01-31T09:30:00.123Z`); None if not one."""
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    """One sample of one function, as the charts plot it."""

    wall: float
    """Seconds since the epoch."""
    lag: int
    """Lag on the function topic."""
    retry_lag: int
    """Lag on its retry topics (retries pending)."""
    desired: int | None
    """Replicas the supervisor wants; None when no current decision is known."""
    actual: int | None
    """Replicas running when it last decided; None when no current decision is known."""
    events_in: float | None
    """Events per second into the function topic; None before two samples."""
    events_out: float | None
    """Events per second its group processes; None before two samples."""


def _finite(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None and math.isfinite(value) else None


class History:
    """The last `size` points of one function, oldest first: a ring buffer."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a history keeps at least 1 point, got {size}")
        self._points: deque[Point] = deque(maxlen=size)

    def add(self, point: Point) -> None:
        """Append `point`, dropping the oldest when full."""
        self._points.append(point)

    def __len__(self) -> int:
        return len(self._points)

    def __iter__(self) -> Iterator[Point]:
        return iter(self._points)

    def columns(self) -> dict[str, list[Any]]:
        """The points as columns (`t`, `lag`, ...): a third of the JSON of one object per point."""
        points = self._points
        return {
            "t": [round(p.wall, 3) for p in points],
            "lag": [p.lag for p in points],
            "retry_lag": [p.retry_lag for p in points],
            "desired": [p.desired for p in points],
            "actual": [p.actual for p in points],
            "events_in": [_finite(p.events_in, 3) for p in points],
            "events_out": [_finite(p.events_out, 3) for p in points],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionEntry:
    """A run of consecutive decisions with the same replicas desired and actual.

    The supervisor publishes every change and repeats an unchanged decision as a heartbeat; a run
    is shown once, with the reason of the decision that started it.
    """

    at: str | None
    """RFC 3339 time of the first decision of the run."""
    desired: int
    actual: int
    reason: str
    """Why the run started (e.g. `scale out 1->3: ...`)."""
    total_lag: int | None
    repeats: int = 1
    """Decisions in the run (the first and its heartbeats)."""
    last_at: str | None = None
    """Time of the latest decision of the run."""
    last_reason: str = ""
    """Reason of the latest decision of the run (a hold's reason changes as time passes)."""

    def to_json(self) -> dict[str, Any]:
        """The entry as the page reads it; `t` is `at` in seconds since the epoch."""
        return {
            "at": self.at,
            "t": epoch(self.at),
            "desired": self.desired,
            "actual": self.actual,
            "reason": self.reason,
            "total_lag": self.total_lag,
            "repeats": self.repeats,
            "last_at": self.last_at,
            "last_reason": self.last_reason,
        }


class Decisions:
    """The last `size` decision entries of one function, oldest first, plus its latest decision."""

    def __init__(self, size: int) -> None:
        self._entries: deque[DecisionEntry] = deque(maxlen=size)
        self.latest: ScalingDecision | None = None
        """The newest decision read, heartbeats included."""

    def add(self, decision: ScalingDecision) -> None:
        """Add one decision in log order: a new entry if the replicas changed, else one more repeat."""
        self.latest = decision
        last = self._entries[-1] if self._entries else None
        if last is not None and (last.desired, last.actual) == (decision.desired, decision.actual):
            self._entries[-1] = replace(
                last, repeats=last.repeats + 1, last_at=decision.at, last_reason=decision.reason
            )
            return
        self._entries.append(
            DecisionEntry(
                at=decision.at,
                desired=decision.desired,
                actual=decision.actual,
                reason=decision.reason,
                total_lag=decision.total_lag,
                last_at=decision.at,
                last_reason=decision.reason,
            )
        )

    def __iter__(self) -> Iterator[DecisionEntry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class Board:
    """Everything the dashboard shows for the functions of one manifest, in bounded memory.

    `points` samples of history and `decisions` decision entries are kept per function. A
    decision older than `stale_after` seconds at a sample is not plotted as replicas (the
    supervisor stopped publishing), though it stays in the table.
    """

    def __init__(
        self,
        functions: Iterable[str],
        *,
        prefix: str,
        interval: float,
        points: int,
        decisions: int = DECISIONS_KEPT,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self._prefix = prefix
        self._interval = interval
        self._stale_after = stale_after
        names = sorted(functions)
        self._history = {name: History(points) for name in names}
        self._decisions = {name: Decisions(decisions) for name in names}
        self._status: dict[str, FunctionStatus] = {}
        self._updated: float | None = None
        self._error: str | None = None

    @classmethod
    def keeping(
        cls, functions: Iterable[str], *, prefix: str, interval: float, retention: float = RETENTION
    ) -> Board:
        """A board that keeps `retention` seconds of samples taken every `interval` seconds."""
        return cls(
            functions, prefix=prefix, interval=interval, points=max(1, math.ceil(retention / interval))
        )

    def decided(self, decisions: Iterable[ScalingDecision]) -> None:
        """Add decisions read from the log, in log order; those of other functions are ignored."""
        for decision in decisions:
            kept = self._decisions.get(decision.function)
            if kept is not None:
                kept.add(decision)

    def record(
        self, samples: Mapping[str, GroupSample], dead_letters: Mapping[str, int | None], wall: float
    ) -> None:
        """Add one sample of every function (those missing from `samples` are left out this time)."""
        for name, history in self._history.items():
            sample = samples.get(name)
            if sample is None:
                continue
            decision = self._current(name, wall)
            status = function_status(sample, decision, dead_letters.get(name))
            self._status[name] = status
            history.add(
                Point(
                    wall=wall,
                    lag=status.lag,
                    retry_lag=status.retries_pending,
                    desired=decision.desired if decision else None,
                    actual=decision.actual if decision else None,
                    events_in=status.events_in,
                    events_out=status.events_out,
                )
            )
        self._updated = wall
        self._error = None

    def failed(self, reason: str) -> None:
        """The last sample failed (Kafka unavailable): shown until the next sample succeeds."""
        self._error = reason

    def _current(self, name: str, wall: float) -> ScalingDecision | None:
        """The latest decision of `name` if the supervisor made it recently."""
        latest = self._decisions[name].latest
        if latest is None:
            return None
        at = epoch(latest.at)
        if at is not None and wall - at > self._stale_after:
            return None
        return latest

    def to_json(self) -> dict[str, Any]:
        """What `/api/state` answers: per function its status, history, decisions (newest first), DLQ."""
        functions: dict[str, Any] = {}
        for name, history in self._history.items():
            status = self._status.get(name)
            decisions = self._decisions[name]
            latest = decisions.latest
            functions[name] = {
                "status": to_json(status) if status else None,
                "dlq": status.dead_letters if status else None,
                "history": history.columns(),
                "decisions": [entry.to_json() for entry in reversed(list(decisions))],
                "latest_decision": (
                    {"at": latest.at, "t": epoch(latest.at), "reason": latest.reason} if latest else None
                ),
            }
        return {
            "prefix": self._prefix,
            "interval": self._interval,
            "updated": self._updated,
            "error": self._error,
            "functions": functions,
        }

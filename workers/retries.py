"""Where an event stands in its retry policy, carried in Kafka headers (pure).

A failed event that has attempts left is produced to the retry topic of its backoff step with
headers saying which attempt comes next, when it is due, and where it came from. The record's
key, value and CloudEvent headers stay the original's, so a retry is the same event. Every
`bus_*` header is bus's own: it is replaced on each hop and removed before a dead letter is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.kafka_binding import Headers, Record, header

__all__ = ["Attempt", "attempt_of", "last_error", "original", "retry_record"]

ATTEMPT = "bus_attempt"
DUE = "bus_due"
FIRST_TIME = "bus_first_attempt_time"
ORIGIN = "bus_origin"
LAST_ERROR_TYPE = "bus_error_type"
LAST_ERROR = "bus_error_message"
_MAX_ERROR_BYTES = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One attempt at an event: its number, the first attempt's time, and its origin."""

    number: int
    """1 for the first attempt."""
    first_time: str
    """RFC 3339 time the first attempt started; "" when this is the first attempt (not started yet)."""
    topic: str
    """The function topic the event was first consumed from ..."""
    partition: int
    """... its partition there (retries go back to this partition number) ..."""
    offset: int
    """... and its offset there."""
    due_ms: int = 0
    """Wall-clock epoch milliseconds before which it must not run; 0 for a first attempt."""

    @property
    def origin(self) -> str:
        """`topic/partition/offset` of the event in the function's own topic."""
        return f"{self.topic}/{self.partition}/{self.offset}"


def attempt_of(topic: str, partition: int, offset: int, headers: Headers | None) -> Attempt:
    """The attempt a consumed record asks for: a retry record's headers, else a first attempt."""
    number = _int(header(headers, ATTEMPT))
    origin = _origin(header(headers, ORIGIN))
    if number is None or number < 2 or origin is None:
        return Attempt(number=1, first_time="", topic=topic, partition=partition, offset=offset)
    return Attempt(
        number=number,
        first_time=_text(header(headers, FIRST_TIME)),
        topic=origin[0],
        partition=origin[1],
        offset=origin[2],
        due_ms=_int(header(headers, DUE)) or 0,
    )


def last_error(headers: Headers | None) -> tuple[str, str]:
    """(error type, message) of the failed attempt a retry record follows; ("", "") if it says none."""
    return _text(header(headers, LAST_ERROR_TYPE)), _text(header(headers, LAST_ERROR))


def original(record: Record) -> Record:
    """The record without bus's own `bus_*` headers: the event as it was routed."""
    if not any(name.startswith("bus_") for name, _ in record.headers):
        return record
    return Record(record.key, record.value, tuple(h for h in record.headers if not h[0].startswith("bus_")))


def retry_record(
    record: Record, failed: Attempt, *, first_time: str, due_ms: int, error_type: str, message: str
) -> Record:
    """`record` for its next attempt, due at `due_ms`, remembering why the last one failed."""
    base = original(record)
    return Record(
        base.key,
        base.value,
        (
            *base.headers,
            (ATTEMPT, str(failed.number + 1).encode()),
            (DUE, str(due_ms).encode()),
            (FIRST_TIME, first_time.encode()),
            (ORIGIN, failed.origin.encode()),
            (LAST_ERROR_TYPE, error_type.encode("utf-8", "replace")),
            (LAST_ERROR, message.encode("utf-8", "replace")[:_MAX_ERROR_BYTES]),
        ),
    )


def _int(raw: bytes | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _origin(raw: bytes | None) -> tuple[str, int, int] | None:
    topic, _, rest = _text(raw).rpartition("/")
    topic, _, partition = topic.rpartition("/")
    offset = _int(rest.encode())
    number = _int(partition.encode())
    if not topic or offset is None or number is None:
        return None
    return topic, number, offset


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw is not None else ""

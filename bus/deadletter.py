"""Dead-letter records: the original record plus why and where it failed (pure).

The router and every worker write the same shape, so `bus dlq` reads one format.
"""

from __future__ import annotations

from bus.kafka_binding import Record

__all__ = ["MAX_REASON_BYTES", "TARGET", "VALUE_DROPPED", "dead_letter"]

MAX_REASON_BYTES = 4096
"""Longest `bus_error_message` header kept."""
VALUE_DROPPED = "bus_value_dropped"
"""Header of a dead letter stored without its value (it would be over the record limit): the value's
length in bytes. `bus dlq redrive` never re-publishes such a letter (it would lose the data)."""
TARGET = "bus_target"
"""Header of a router dead letter that failed for one target only (its topic missing, its input
transformer failed, its record too big): the target's name. The event's other targets received it,
so `bus dlq redrive --router` re-drives it to this target alone. Absent: nothing was delivered."""


def dead_letter(
    original: Record,
    *,
    error_type: str,
    reason: str,
    origin: str,
    extra: tuple[tuple[str, bytes], ...] = (),
) -> Record:
    """`original` with `bus_error_type`, `bus_error_message` and `bus_origin` (topic/partition/offset).

    `extra` adds further `bus_*` headers, e.g. a function's attempts and attempt times.
    """
    return Record(
        original.key,
        original.value,
        (
            *original.headers,
            ("bus_error_type", error_type.encode("utf-8", "replace")),
            ("bus_error_message", reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]),
            ("bus_origin", origin.encode("utf-8", "replace")),
            *extra,
        ),
    )

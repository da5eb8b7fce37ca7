"""Wall-clock time for adapters; the pure core takes times as arguments instead."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["now_rfc3339", "rfc3339_at"]


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 text with milliseconds, e.g. 2026-01-31T09:30:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339_at(seconds: float) -> str:
    """The UTC time `seconds` after the epoch as `now_rfc3339` writes it."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

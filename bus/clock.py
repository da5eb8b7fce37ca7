"""Wall-clock time for adapters; the pure core takes times as arguments instead."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["now_rfc3339"]


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 text with milliseconds, e.g. 2026-01-31T09:30:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

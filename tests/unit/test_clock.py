"""RFC 3339 text of wall-clock times (bus.clock)."""

from __future__ import annotations

from datetime import datetime

from bus.clock import now_rfc3339, rfc3339_at


def test_a_time_is_written_as_now_is_with_milliseconds_in_utc() -> None:
    assert rfc3339_at(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"
    assert len(rfc3339_at(0.0)) == len(now_rfc3339())  # same shape: texts compare as times


def test_texts_order_as_their_times() -> None:
    earlier, later = rfc3339_at(1_700_000_000.0), rfc3339_at(1_700_000_000.5)
    assert earlier < later
    assert datetime.fromisoformat(later).timestamp() - datetime.fromisoformat(earlier).timestamp() == 0.5

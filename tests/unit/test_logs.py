"""Log filters (pure): what keeps a broker that is down from burying every other line."""

from __future__ import annotations

import logging

from bus.logs import RepeatFilter


def test_repeats_differing_only_in_numbers_pass_once_a_window_then_say_how_many_were_held() -> None:
    """A broker down makes librdkafka log each reconnect: one line per kind per window passes."""
    now = [0.0]
    repeats = RepeatFilter(window=60.0, clock=lambda: now[0])

    def passes(message: str) -> bool:
        return repeats.filter(logging.LogRecord("bus.librdkafka", logging.ERROR, "", 0, message, None, None))

    refused = "FAIL [rdkafka#consumer-{}]: 127.0.0.1:9092: Connect failed: Connection refused (after {}ms)"
    assert passes(refused.format(1, 0))
    assert [passes(refused.format(1, n)) for n in range(1, 300)] == [False] * 299
    assert passes("another kind of line"), "other messages are not held back"
    now[0] = 61.0
    record = logging.LogRecord("bus.librdkafka", logging.ERROR, "", 0, refused.format(1, 7), None, None)
    assert repeats.filter(record)
    assert record.fields == {"suppressed": 299}  # type: ignore[attr-defined]

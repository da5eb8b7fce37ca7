"""Schedule templates are checked when the gateway starts: schema and size, naming the schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bus.avro_schema import platform_book
from bus.errors import ManifestError
from bus.manifest import parse
from bus.typed_events import EdgeSchemas
from gateway.timers import check_templates

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_a_template_over_the_record_limit_is_refused_naming_its_data() -> None:
    """A schedule whose events could never be produced stops the gateway at start, not at each tick."""
    manifest = parse({"schedules": [{"name": "big", "rate": "1m", "event": {"data": {"blob": "x" * 2000}}}]})
    with pytest.raises(ManifestError) as caught:
        check_templates(manifest.schedules, EdgeSchemas(), NOW, max_record_bytes=1000)
    assert caught.value.path == "schedules[0].event.data"
    assert "limit is 1000" in caught.value.reason


def test_a_default_timer_event_fits_its_platform_schema() -> None:
    """A `bus.timer.fired` template with a payload passes the platform schema's check."""
    manifest = parse({"schedules": [{"name": "tick", "rate": "1m", "event": {"data": {"kind": "daily"}}}]})
    check_templates(manifest.schedules, EdgeSchemas(book=platform_book()), NOW, max_record_bytes=1_000_000)

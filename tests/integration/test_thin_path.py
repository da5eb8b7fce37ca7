"""One event end to end: HTTP → ingress → router → function topic → worker → result topic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bus import naming
from bus.kafka_binding import from_record, header
from tests.support import KafkaEnv, Platform, running_platform, unique, write_manifest

MANIFEST = """
functions:
  echo: {handler: "handlers:echo", partitions: 2}
  echoasync: {handler: "handlers:echo_async", partitions: 2}
  flaky: {handler: "handlers:fail_when_asked", partitions: 1, retry: {attempts: 2, backoff: [100ms]}}
rules:
  - {name: to-echo, pattern: {type: [demo.echo]}, targets: [echo]}
  - {name: to-both, pattern: {type: [demo.both]}, targets: [echo, echoasync]}
  - {name: to-flaky, pattern: {type: [demo.flaky]}, targets: [flaky]}
  - {name: tagged, pattern: {type: [demo.tagged]}, tags: {all: [prod]}, targets: [echo]}
"""


@pytest.fixture
def platform(kafka: KafkaEnv, tmp_path: Path) -> Iterator[Platform]:
    """Gateway, router and one worker per function, on a prefix of this test's own."""
    path = write_manifest(tmp_path, kafka.prefix(), MANIFEST)
    with running_platform(kafka, path, tmp_path / "home") as running:
        yield running


def _structured(**attrs: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": unique("ev"), "source": "tests", **attrs}


def _post(platform: Platform, event: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{platform.url}/events",
        content=orjson.dumps(event),
        headers={"content-type": "application/cloudevents+json"},
        timeout=30,
    )


def _results(kafka: KafkaEnv, topic: str, want: int) -> list[Any]:
    """Exactly `want` events on `topic` (a duplicate fails the test), decoded."""
    return [from_record(r.key(), r.value(), r.headers()) for r in kafka.read_exactly(topic, want)]


def test_structured_event_becomes_a_result_with_its_causation_id(kafka: KafkaEnv, platform: Platform) -> None:
    """A 202'd structured event is handled once and its result names the input as its cause."""
    prefix = platform.manifest.prefix
    event = _structured(type="demo.echo", subject="order-7", data={"n": 7})
    response = _post(platform, event)
    assert response.status_code == 202
    assert response.json() == {"ids": [event["id"]]}
    (result,) = _results(kafka, naming.result_topic(prefix, "echo"), 1)
    assert result.type == "bus.function.result"
    assert result.extensions["causationid"] == event["id"]
    assert result.subject == "order-7"
    assert result.data == {"echo": {"n": 7}, "function": "echo", "key": event["id"]}


def test_binary_mode_event_is_accepted_and_fans_out_to_every_target(
    kafka: KafkaEnv, platform: Platform
) -> None:
    """A binary-mode event matching a two-target rule yields one result from each function."""
    prefix = platform.manifest.prefix
    event_id = unique("ev")
    response = httpx.post(
        f"{platform.url}/events",
        content=b'{"hello": "binary"}',
        headers={
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "tests/binary",
            "ce-type": "demo.both",
            "ce-partitionkey": "k1",
        },
        timeout=30,
    )
    assert response.status_code == 202, response.text
    (sync_result,) = _results(kafka, naming.result_topic(prefix, "echo"), 1)
    (async_result,) = _results(kafka, naming.result_topic(prefix, "echoasync"), 1)
    assert sync_result.extensions["causationid"] == event_id
    assert sync_result.extensions["partitionkey"] == "k1"
    assert async_result.data == {"echo": {"hello": "binary"}, "async": True}


def test_invalid_event_gets_400_naming_the_field_and_publishes_nothing(
    kafka: KafkaEnv, platform: Platform
) -> None:
    """An event without `type` is refused with the field named, and the ingress topic stays empty."""
    response = _post(platform, {"specversion": "1.0", "id": "x", "source": "tests"})
    assert response.status_code == 400
    assert response.json()["field"] == "type"
    unstructured = httpx.post(f"{platform.url}/events", content=b"{}", timeout=30)
    assert unstructured.status_code == 400
    assert unstructured.json()["field"] == "ce-specversion"
    assert kafka.read_all(naming.ingress_topic(platform.manifest.prefix)) == []


def test_oversized_body_gets_413(platform: Platform) -> None:
    """A body over the limit is refused with 413 before it is parsed."""
    response = httpx.post(
        f"{platform.url}/events",
        content=b"x" * (1_048_576 + 1),
        headers={"content-type": "application/cloudevents+json"},
        timeout=30,
    )
    assert response.status_code == 413


def test_failed_invocation_yields_error_record_and_dead_letter_while_partition_flows(
    kafka: KafkaEnv, platform: Platform
) -> None:
    """A raising handler produces a complete error event and a DLQ record; the next event still runs."""
    prefix = platform.manifest.prefix
    bad = _structured(type="demo.flaky", data={"fail": True, "seq": 1})
    good = _structured(type="demo.flaky", data={"seq": 2})
    assert _post(platform, bad).status_code == 202
    assert _post(platform, good).status_code == 202
    (error,) = _results(kafka, naming.error_topic(prefix, "flaky"), 1)
    assert error.type == "bus.function.error"
    assert error.extensions["causationid"] == bad["id"]
    record = error.data
    assert record["error_type"] == "ValueError"
    assert record["message"] == "asked to fail: 1"
    assert "Traceback" in record["traceback"]
    assert record["attempts"] == 2  # the policy's attempts, the retry after 100 ms
    assert record["topic"] == naming.function_topic(prefix, "flaky")
    assert record["event"]["id"] == bad["id"]
    (dead,) = kafka.read_exactly(naming.dlq_topic(prefix, "flaky"), 1)
    assert from_record(dead.key(), dead.value(), dead.headers()).id == bad["id"]
    assert header(dead.headers(), "bus_error_type") == b"ValueError"
    (result,) = _results(kafka, naming.result_topic(prefix, "flaky"), 1)
    assert result.data == {"ok": 2}


def test_tag_selector_routes_only_events_with_the_required_tags(kafka: KafkaEnv, platform: Platform) -> None:
    """Of two events of a tag-selected rule, only the one tagged `prod` reaches the function."""
    prefix = platform.manifest.prefix
    untagged = _structured(type="demo.tagged", tags="dev")
    tagged = _structured(type="demo.tagged", tags="eu,prod")
    assert _post(platform, untagged).status_code == 202
    assert _post(platform, tagged).status_code == 202
    (result,) = _results(kafka, naming.result_topic(prefix, "echo"), 1)
    assert result.extensions["causationid"] == tagged["id"]
    everything = kafka.read_all(naming.function_topic(prefix, "echo"))
    assert len(everything) == 1

"""RELIABILITY S1/S2 on the real broker: only validly signed, fresh, first deliveries publish."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bus import naming
from bus.kafka.admin import ensure_topics
from bus.kafka_binding import from_record
from bus.signatures import sign
from bus.topology import ingress_topics
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support import KafkaEnv

BODY = (Path(__file__).resolve().parents[1] / "fixtures" / "notifications" / "s3_put.json").read_bytes()
NEW, OLD = b"new-secret", b"old-secret"


@pytest.fixture
def gateway(kafka: KafkaEnv) -> Iterator[tuple[TestClient, str]]:
    """A gateway whose S3 notifications must be signed with NEW or OLD (a rotation in progress)."""
    settings = kafka.settings(kafka.prefix())
    ensure_topics(settings, ingress_topics(settings.prefix))
    app = create_app(GatewaySettings(kafka=settings, webhook_secrets={"s3": (NEW, OLD)}))
    with TestClient(app) as client:
        yield client, naming.ingress_topic(settings.prefix)


def _post(client: TestClient, headers: dict[str, str], body: bytes = BODY) -> int:
    response = client.post(
        "/notifications/s3", content=body, headers={"content-type": "application/json", **headers}
    )
    return int(response.status_code)


def _signed(secret: bytes, delivery: str, *, body: bytes = BODY, skew: int = 0) -> dict[str, str]:
    return sign(secret, body, timestamp=int(time.time()) + skew, delivery=delivery)


def test_only_valid_signatures_publish(kafka: KafkaEnv, gateway: tuple[TestClient, str]) -> None:
    """S1: wrong secret, tampering, missing or truncated signatures get 401; valid and rotated ones 202."""
    client, ingress = gateway
    valid = _signed(NEW, "d-valid")
    tampered = BODY.replace(b"HappyFace", b"HappyFacf")
    assert tampered != BODY
    refused = [
        _signed(b"wrong", "d-wrong"),
        {},
        {**valid, "bus-signature": valid["bus-signature"][:-1]},
        {"bus-delivery": "d-nosig"},
    ]
    for headers in refused:
        assert _post(client, headers) == 401, headers
    assert _post(client, _signed(NEW, "d-tamper"), body=tampered) == 401
    assert _post(client, _signed(NEW, "d-tamper2", body=BODY), body=tampered) == 401
    assert _post(client, valid) == 202
    assert _post(client, _signed(OLD, "d-rotated")) == 202, "the old secret still works during rotation"
    events = [from_record(r.key(), r.value(), r.headers()) for r in kafka.read_exactly(ingress, 2)]
    assert {e.type for e in events} == {"bus.object.created"}


def test_stale_timestamps_and_replays_are_refused(kafka: KafkaEnv, gateway: tuple[TestClient, str]) -> None:
    """S2: timestamps beyond ±300 s get 401; the same delivery id twice publishes once (then 409)."""
    client, ingress = gateway
    assert _post(client, _signed(NEW, "d-old", skew=-301)) == 401
    assert _post(client, _signed(NEW, "d-future", skew=301)) == 401
    once = _signed(NEW, "d-once")
    assert _post(client, once) == 202
    assert _post(client, once) == 409
    assert _post(client, _signed(NEW, "d-once")) == 409, "a fresh signature does not make a delivery new"
    kafka.read_exactly(ingress, 1)


def test_a_failed_delivery_can_be_retried(kafka: KafkaEnv, gateway: tuple[TestClient, str]) -> None:
    """A signed delivery refused for its body is not remembered: a corrected retry is accepted."""
    client, ingress = gateway
    bad = b'{"Records": []}'
    assert _post(client, _signed(NEW, "d-retry", body=bad), body=bad) == 400
    assert _post(client, _signed(NEW, "d-retry")) == 202
    kafka.read_exactly(ingress, 1)

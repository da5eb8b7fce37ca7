"""RELIABILITY S5: hostile JSON gets 400 naming the field and the reason, never 5xx, and publishes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from bus import naming
from bus.kafka.admin import ensure_topics
from bus.topology import ingress_topics
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support import KafkaEnv

BASE = b'"specversion":"1.0","id":"1","source":"s","type":"t"'
STRUCTURED = {"content-type": "application/cloudevents+json"}
BINARY = {
    "content-type": "application/json",
    "ce-specversion": "1.0",
    "ce-id": "1",
    "ce-source": "s",
    "ce-type": "t",
}

DEEP = b"{" + BASE + b',"data":' + b"[" * 100 + b"]" * 100 + b"}"
VERY_DEEP = b"{" + BASE + b',"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"

# (name, headers, body, field named in the 400, words in its reason)
CASES: list[tuple[str, dict[str, str], bytes, str, str]] = [
    ("invalid UTF-8", STRUCTURED, b"{" + BASE + b',"data":"\xff"}', "body", "UTF-8"),
    ("NaN", STRUCTURED, b"{" + BASE + b',"data":NaN}', "body", "not valid JSON"),
    ("duplicate keys", STRUCTURED, b"{" + BASE + b',"id":"2"}', "body", "'id' twice"),
    ("duplicate keys in binary data", BINARY, b'{"a":1,"a":2}', "data", "'a' twice"),
    (
        "duplicate keys in data_base64",
        STRUCTURED,
        b"{" + BASE + b',"data_base64":"eyJhIjoxLCJhIjoyfQ=="}',  # {"a":1,"a":2}
        "data_base64",
        "'a' twice",
    ),
    (
        "integer beyond 64 bits in data_base64",
        STRUCTURED,
        b"{" + BASE + b',"data_base64":"eyJuIjogMTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NX0="}',
        "data_base64.n",
        "outside the 64-bit range",
    ),
    ("deep nesting", STRUCTURED, DEEP, "body", "deeper"),
    ("very deep nesting", STRUCTURED, VERY_DEEP, "body", "JSON"),
    ("huge number", STRUCTURED, b"{" + BASE + b',"data":' + b"9" * 400 + b"}", "body", "not valid JSON"),
    (
        "integer beyond 64 bits in binary data",
        BINARY,
        b'{"order_id": 123456789012345678901234567890}',
        "data.order_id",
        "outside the 64-bit range",
    ),
    (
        "integer below -2**63",
        STRUCTURED,
        b"{" + BASE + b',"data":{"n":[1,-9223372036854775809]}}',
        "data.n[1]",
        "outside the 64-bit range",
    ),
    ("lone surrogate", STRUCTURED, b"{" + BASE + b',"data":"\\ud800"}', "body", "surrogate"),
    ("truncated", STRUCTURED, b"{" + BASE + b',"data":{"a"', "body", "not valid JSON"),
]


@pytest.fixture(scope="module")
def gateway(kafka: KafkaEnv) -> Iterator[tuple[TestClient, str]]:
    """The gateway on the real broker, with an ingress topic of this module's own."""
    settings = kafka.settings(kafka.prefix())
    ensure_topics(settings, ingress_topics(settings.prefix))
    with TestClient(create_app(GatewaySettings(kafka=settings))) as client:
        yield client, naming.ingress_topic(settings.prefix)


@pytest.mark.parametrize(
    ("headers", "body", "field", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_event_body_is_refused_with_field_and_reason(
    gateway: tuple[TestClient, str], headers: dict[str, str], body: bytes, field: str, reason: str
) -> None:
    """Each hostile body is answered 400 with the field and a reason that says what is wrong."""
    client, _ = gateway
    response = client.post("/events", content=body, headers=headers)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["field"] == field
    assert reason in answer["reason"]


def test_duplicate_keys_in_a_notification_are_refused(gateway: tuple[TestClient, str]) -> None:
    """A notification body with a repeated key is refused before it is normalised."""
    client, _ = gateway
    response = client.post("/notifications/s3", content=b'{"Records":[],"Records":[]}')
    assert response.status_code == 400
    assert "'Records' twice" in response.json()["reason"]


def test_raw_utf8_in_a_ce_header_is_refused_asking_for_percent_encoding(
    gateway: tuple[TestClient, str],
) -> None:
    """`ce-subject: café` sent as raw UTF-8 would be stored as `cafÃ©`: 400 naming the header."""
    client, _ = gateway
    headers = [(k.encode(), v.encode()) for k, v in BINARY.items()] + [(b"ce-subject", "café".encode())]
    response = client.post("/events", content=b"{}", headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "ce-subject"
    assert "percent-encode" in response.json()["reason"]


def test_nothing_hostile_reached_kafka(kafka: KafkaEnv, gateway: tuple[TestClient, str]) -> None:
    """After every hostile request of this module, the ingress topic is still empty."""
    client, ingress = gateway
    for _, headers, body, _, _ in CASES:
        assert client.post("/events", content=body, headers=headers).status_code == 400
    assert kafka.read_all(ingress) == []

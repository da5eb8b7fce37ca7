"""`POST /notifications/{provider}`: provider bodies become `bus.object.*` events on the ingress topic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bus import naming
from bus.kafka.admin import ensure_topics
from bus.kafka_binding import from_record
from bus.topology import ingress_topics
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support import KafkaEnv

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notifications"


@pytest.fixture
def gateway(kafka: KafkaEnv) -> Iterator[tuple[TestClient, str]]:
    """The gateway app on the real broker, with an ingress topic of this test's own."""
    settings = kafka.settings(kafka.prefix())
    ensure_topics(settings, ingress_topics(settings.prefix))
    with TestClient(create_app(GatewaySettings(kafka=settings))) as client:
        yield client, naming.ingress_topic(settings.prefix)


def _post(client: TestClient, provider: str, body: bytes) -> tuple[int, dict[str, object]]:
    response = client.post(
        f"/notifications/{provider}", content=body, headers={"content-type": "application/json"}
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("provider", "fixture", "source_scheme"),
    [
        ("s3", "s3_put.json", "s3://"),
        ("minio", "minio_webhook_put.json", "minio://"),
        ("minio", "minio_kafka_put.json", "minio://"),
        ("oss", "oss_put.json", "oss://"),
    ],
)
def test_provider_notification_is_published_as_object_events(
    kafka: KafkaEnv, gateway: tuple[TestClient, str], provider: str, fixture: str, source_scheme: str
) -> None:
    """A documented provider body is answered 202 with ids that are on Kafka as bus.object.created."""
    client, ingress = gateway
    status, answer = _post(client, provider, (FIXTURES / fixture).read_bytes())
    assert status == 202, answer
    ids = answer["ids"]
    assert isinstance(ids, list)
    assert ids
    records = kafka.read_exactly(ingress, len(ids))
    events = [from_record(r.key(), r.value(), r.headers()) for r in records]
    assert sorted(e.id for e in events) == sorted(ids)
    for event in events:
        assert event.type == "bus.object.created"
        assert event.source.startswith(source_scheme)
        assert event.data["provider"] == provider
        assert event.subject == event.data["key"]


def test_a_redelivered_notification_keeps_its_event_ids(gateway: tuple[TestClient, str]) -> None:
    """The same body posted twice is answered with the same ids, so consumers can deduplicate."""
    client, _ = gateway
    body = (FIXTURES / "s3_put.json").read_bytes()
    first = _post(client, "s3", body)
    assert first[0] == 202, first
    assert _post(client, "s3", body) == first


def test_s3_test_event_is_accepted_and_publishes_nothing(
    kafka: KafkaEnv, gateway: tuple[TestClient, str]
) -> None:
    """S3's s3:TestEvent gets 202 with no ids and leaves the ingress topic empty."""
    client, ingress = gateway
    assert _post(client, "s3", (FIXTURES / "s3_test_event.json").read_bytes()) == (202, {"ids": []})
    assert kafka.read_all(ingress) == []


def test_invalid_notifications_get_400_or_404_and_publish_nothing(
    kafka: KafkaEnv, gateway: tuple[TestClient, str]
) -> None:
    """Bad JSON, a body without records and an unknown provider are refused; nothing reaches Kafka."""
    client, ingress = gateway
    status, answer = _post(client, "s3", b"{not json")
    assert (status, answer["field"]) == (400, "body")
    status, answer = _post(client, "s3", b'{"Records": []}')
    assert (status, answer["field"]) == (400, "Records")
    status, answer = _post(client, "oss", (FIXTURES / "s3_put.json").read_bytes())
    assert (status, answer["field"]) == (400, "events")
    too_big = b'"size":9223372036854775808'  # 2**63: more than the event schema's long holds
    body = (FIXTURES / "s3_put.json").read_bytes().replace(b'"size":1024', too_big)
    assert too_big in body
    status, answer = _post(client, "s3", body)
    assert (status, answer["field"]) == (400, "Records[0].s3.object.size"), answer
    status, answer = _post(client, "gcs", b"{}")
    assert (status, answer["error"]) == (404, "unknown_provider")
    assert kafka.read_all(ingress) == []

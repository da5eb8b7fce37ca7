"""Router dead letters and the gateway's answer when Kafka is away."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
from starlette.testclient import TestClient

from bus import naming
from bus.kafka.admin import ensure_topics
from bus.kafka.producer import AsyncProducer
from bus.kafka.txloop import TransactionalLoop
from bus.kafka_binding import Record, header
from bus.localkafka import free_port
from bus.manifest import read
from bus.router import Router
from bus.settings import KafkaSettings
from bus.topology import manifest_topics
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support import KafkaEnv, wait_until, write_manifest

MANIFEST = """
functions:
  echo: {handler: "handlers:echo"}
rules:
  - {name: r, pattern: {type: [demo]}, targets: [echo]}
"""


def test_router_sends_records_that_are_not_cloudevents_to_its_dlq_and_keeps_routing(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """A raw record on the ingress topic lands in the router DLQ with its reason; the next event routes."""
    import asyncio

    manifest = read(write_manifest(tmp_path, kafka.prefix(), MANIFEST))
    settings = kafka.settings(manifest.prefix)
    ensure_topics(settings, manifest_topics(manifest))
    ingress = naming.ingress_topic(manifest.prefix)
    good = Record(
        b"k", b"{}", (("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"demo"))
    )

    async def produce() -> None:
        async with AsyncProducer(settings) as producer:
            await producer.send(ingress, Record(b"k", b"not a cloudevent", ()))
            await producer.send(ingress, good)

    asyncio.run(produce())
    stop = threading.Event()
    with TransactionalLoop(
        settings, group=kafka.group(), topics=[ingress], transactional_id=kafka.group()
    ) as loop:
        thread = threading.Thread(target=loop.run, args=(Router(manifest), stop))
        thread.start()
        try:
            wait_until(lambda: loop.records_in >= 2, timeout=60, what="the router to take both records")
        finally:
            stop.set()
            thread.join()
    (dead,) = kafka.read_all(naming.router_dlq_topic(manifest.prefix))
    assert dead.value() == b"not a cloudevent"
    assert header(dead.headers(), "bus_error_type") == b"InvalidEvent"
    reason = header(dead.headers(), "bus_error_message")
    assert reason is not None
    assert b"ce_specversion" in reason
    origin = header(dead.headers(), "bus_origin") or b""
    assert origin.startswith(f"{ingress}/".encode())
    assert origin.endswith(b"/0"), "the raw record was the first on its partition"
    (routed,) = kafka.read_all(naming.function_topic(manifest.prefix, "echo"))
    assert header(routed.headers(), "ce_id") == b"1"


def test_gateway_refuses_what_kafka_could_never_take_before_producing() -> None:
    """An event over the per-record limit gets 413 naming it, an empty batch 400; no broker is asked."""
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", max_record_bytes=1000)
    app = create_app(GatewaySettings(kafka=dead))
    with TestClient(app) as client:
        small = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
        big = {**small, "id": "2", "data": "x" * 2000}
        batch = client.post(
            "/events",
            content=orjson.dumps([small, big]),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert batch.status_code == 413
        assert batch.json()["field"] == "[1]"
        empty = client.post(
            "/events", content=b"[]", headers={"content-type": "application/cloudevents-batch+json"}
        )
        assert empty.status_code == 400
        assert empty.json()["field"] == "body"


def test_gateway_answers_503_without_hanging_when_kafka_is_unreachable() -> None:
    """With no broker behind it, POST /events gets 503 + Retry-After within the delivery timeout."""
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", delivery_timeout=2.0)
    app = create_app(GatewaySettings(kafka=dead))
    with TestClient(app) as client:
        started = time.monotonic()
        response = client.post(
            "/events",
            content=b'{"specversion":"1.0","id":"1","source":"s","type":"t"}',
            headers={"content-type": "application/cloudevents+json"},
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert time.monotonic() - started < 5
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200

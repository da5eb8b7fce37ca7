"""RELIABILITY R5: kill -9 the broker under the gateway; 503 while it is down, recovery without restart."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from bus import localkafka, naming
from bus.kafka.admin import ensure_topics
from bus.kafka.reader import read_topic
from bus.settings import KafkaSettings
from bus.topology import ingress_topics
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support import unique, wait_until


def _post(client: TestClient, event_id: str) -> int:
    body = {"specversion": "1.0", "id": event_id, "source": "tests/r5", "type": "r5"}
    response = client.post(
        "/events", content=orjson.dumps(body), headers={"content-type": "application/cloudevents+json"}
    )
    return int(response.status_code)


@pytest.mark.parametrize("down_s", [5.0, 20.0])
def test_r5_gateway_answers_503_while_the_broker_is_down_and_recovers_without_restart(
    tmp_path: Path, down_s: float
) -> None:
    """Every 202 is on Kafka after a kill -9 and restart; while down, answers are 503 within the deadline."""
    data_dir, port = tmp_path / "kafka", localkafka.free_port()
    broker = localkafka.start(data_dir, environ=os.environ, port=port)
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, prefix="r5", delivery_timeout=3.0)
    ensure_topics(settings, ingress_topics(settings.prefix))
    acked: set[str] = set()
    statuses: list[int] = []
    try:
        with TestClient(create_app(GatewaySettings(kafka=settings))) as client:

            def publish() -> int:
                event_id = unique("r5")
                status = _post(client, event_id)
                statuses.append(status)
                if status == 202:
                    acked.add(event_id)
                return status

            assert publish() == 202
            os.kill(broker.pid, signal.SIGKILL)
            wait_until(lambda: localkafka.status(data_dir) is None, timeout=30, what="the broker to die")
            killed = time.monotonic()
            while time.monotonic() - killed < down_s:
                started = time.monotonic()
                assert publish() == 503
                assert time.monotonic() - started < settings.delivery_timeout + 2, "a 503, never a hang"
            localkafka.start(data_dir, environ=os.environ, port=port)
            wait_until(lambda: publish() == 202, timeout=90, what="the gateway to publish again")
            for _ in range(20):
                assert publish() == 202
        ingress = naming.ingress_topic(settings.prefix)
        on_kafka = {
            str(dict(m.headers())["ce_id"].decode())
            for m in read_topic(settings, ingress, timeout=60, idle_timeout=3)
        }
    finally:
        localkafka.stop(data_dir)
    assert set(statuses) <= {202, 503}, (
        f"only 202 and 503 are acceptable answers, got {sorted(set(statuses))}"
    )
    assert acked <= on_kafka, f"lost acknowledged events: {sorted(acked - on_kafka)}"
    assert len(acked) >= 22

"""RELIABILITY R7: kill -9 the gateway under load; clients retry what was not acknowledged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson

from bus import naming
from bus.kafka.admin import ensure_topics
from bus.kafka.reader import read_topic
from bus.topology import ingress_topics
from tests.support import GatewayProcess, KafkaEnv, unique

STREAMS = 8


async def _load(gateway: GatewayProcess, events: int, kill_after: int) -> tuple[set[str], int]:
    """Publish `events` ids over STREAMS clients, retrying each until 202; kill and restart midway."""
    acked: set[str] = set()
    failures = 0
    killed = asyncio.Event()
    enough = asyncio.Event()

    async def killer() -> None:
        await enough.wait()
        await asyncio.to_thread(gateway.kill)
        killed.set()
        await asyncio.to_thread(gateway.start)

    async def stream(ids: list[str]) -> None:
        nonlocal failures
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            for event_id in ids:
                body = orjson.dumps(
                    {"specversion": "1.0", "id": event_id, "source": "tests/r7", "type": "r7"}
                )
                for _ in range(200):  # bounded retries of one event, about a minute at most
                    try:
                        response = await client.post(
                            "/events", content=body, headers={"content-type": "application/cloudevents+json"}
                        )
                    except httpx.HTTPError:
                        response = None
                    if response is not None and response.status_code == 202:
                        acked.add(event_id)
                        if len(acked) >= kill_after:
                            enough.set()
                        break
                    failures += 1
                    await asyncio.sleep(0.25)  # the client's retry backoff

    ids = [unique("r7") for _ in range(events)]
    task = asyncio.create_task(killer())
    await asyncio.gather(*(stream(ids[i::STREAMS]) for i in range(STREAMS)))
    await task
    assert killed.is_set()
    return acked, failures


def test_r7_killing_the_gateway_loses_no_acknowledged_event(kafka: KafkaEnv, tmp_path: Path) -> None:
    """R7: after a kill -9 mid-load and client retries, every id that got a 202 is on Kafka."""
    prefix = kafka.prefix()
    settings = kafka.settings(prefix)
    ensure_topics(settings, ingress_topics(prefix))
    gateway = GatewayProcess(kafka, prefix, tmp_path)
    gateway.start()
    try:
        acked, failures = asyncio.run(_load(gateway, events=600, kill_after=200))
    finally:
        gateway.stop()
    on_kafka = [
        dict(m.headers() or [])["ce_id"].decode()
        for m in read_topic(settings, naming.ingress_topic(prefix), timeout=60, idle_timeout=3)
    ]
    print("R7", orjson.dumps({"acked": len(acked), "retried": failures, "records": len(on_kafka)}).decode())
    assert len(acked) == 600, "every event is eventually acknowledged after retries"
    assert failures > 0, "the kill interrupted some requests"
    assert acked <= set(on_kafka), f"lost: {sorted(acked - set(on_kafka))[:5]}"

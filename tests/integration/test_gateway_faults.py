"""RELIABILITY R7: kill -9 the gateway under load; clients retry what was not acknowledged."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from bus import localkafka, naming
from bus.kafka.admin import ensure_topics
from bus.kafka.reader import read_topic
from bus.topology import ingress_topics
from tests.support import KafkaEnv, unique, wait_until

STREAMS = 8


class Gateway:
    """A real gateway process (`python -m gateway`) that can be killed and started again."""

    def __init__(self, kafka: KafkaEnv, prefix: str, home: Path) -> None:
        self.port = localkafka.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "BUS_PREFIX": prefix,
            "BUS_HOME": str(home),
        }
        self._log = home / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        home = self._log.parent
        home.mkdir(parents=True, exist_ok=True)
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--port", str(self.port)],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=60, what="the gateway to be ready")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


async def _load(gateway: Gateway, events: int, kill_after: int) -> tuple[set[str], int]:
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
    gateway = Gateway(kafka, prefix, tmp_path)
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

"""RELIABILITY R1 (baseline): every acknowledged event gets exactly one result, in key order."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson

from bus import naming
from bus.kafka_binding import from_record
from tests.support import KafkaEnv, running_platform, unique, write_manifest

MANIFEST = """
functions:
  echo: {handler: "handlers:echo", partitions: 4}
rules:
  - {name: all-orders, pattern: {type: [order.placed]}, targets: [echo]}
"""
KEYS = 50


async def _publish(url: str, n: int, run: str) -> tuple[dict[str, tuple[str, int]], int]:
    """Send n events over HTTP, one ordered stream per key; return acked id -> (key, seq)."""
    acked: dict[str, tuple[str, int]] = {}
    http_5xx = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def stream(key: str, count: int) -> None:
            nonlocal http_5xx
            for seq in range(count):
                event_id = f"{run}-{key}-{seq}"
                body = {
                    "specversion": "1.0",
                    "id": event_id,
                    "source": "tests/r1",
                    "type": "order.placed",
                    "partitionkey": key,
                    "data": {"key": key, "seq": seq},
                }
                response = await client.post(
                    "/events",
                    content=orjson.dumps(body),
                    headers={"content-type": "application/cloudevents+json"},
                )
                http_5xx += response.status_code >= 500
                if response.status_code == 202:
                    acked[event_id] = (key, seq)

        per_key = [n // KEYS + (1 if i < n % KEYS else 0) for i in range(KEYS)]
        await asyncio.gather(*(stream(f"key{i}", count) for i, count in enumerate(per_key)))
    return acked, http_5xx


def test_r1_baseline_loses_nothing_duplicates_nothing_and_keeps_key_order(
    kafka: KafkaEnv, tmp_path: Path, events_n: int
) -> None:
    """R1: N events over HTTP → lost 0, dup_results 0, order_violations 0, http_5xx 0."""
    prefix = kafka.prefix()
    path = write_manifest(tmp_path, prefix, MANIFEST)
    with running_platform(kafka, path, tmp_path / "home") as platform:
        started = time.monotonic()
        acked, http_5xx = asyncio.run(_publish(platform.url, events_n, unique("r1")))
        topic = naming.result_topic(prefix, "echo")
        kafka.read(topic, until=lambda rs: len(rs) >= len(acked), timeout=120)
        # One full read after the wait, lingering to catch duplicates that would come late.
        records = kafka.read_all(topic, idle=2.0, timeout=120)
        elapsed = time.monotonic() - started
    figures = _check(acked, records)
    figures.update(acked=len(acked), http_5xx=http_5xx, seconds=round(elapsed, 1))
    print("R1", orjson.dumps(figures).decode())
    assert len(acked) == events_n
    assert figures["lost"] == 0
    assert figures["dup_results"] == 0
    assert figures["order_violations"] == 0
    assert http_5xx == 0


def _check(acked: dict[str, tuple[str, int]], records: list[Any]) -> dict[str, Any]:
    seen: dict[str, int] = defaultdict(int)
    last_seq: dict[str, int] = {}
    violations = 0
    for record in records:
        event = from_record(record.key(), record.value(), record.headers())
        cause = str(event.extensions["causationid"])
        seen[cause] += 1
        key, seq = event.data["echo"]["key"], event.data["echo"]["seq"]
        if seen[cause] == 1:
            if last_seq.get(key, -1) > seq:
                violations += 1
            last_seq[key] = seq
    return {
        "results": len(records),
        "lost": sum(1 for event_id in acked if event_id not in seen),
        "dup_results": sum(count - 1 for count in seen.values()),
        "order_violations": violations,
    }

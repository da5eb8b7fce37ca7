"""The gateway alone: POST /events answered 202 once Kafka acknowledged, against the same server
answering 202 without Kafka (`bench.null_gateway`), and batches against the raw producer.

The load generator is `bench.http_load` (raw asyncio keep-alive connections) in this process;
it shares the machine's cores with the gateway in both runs alike.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from bench.broker import BenchKafka
from bench.http_load import LoadResult, post_all, request_bytes
from bench.processes import running_gateway
from bench.samples import Latency, Throughput
from bench.sizes import Sizes

__all__ = ["GatewayFigures", "measure"]

_STRUCTURED = "application/cloudevents+json"
_BATCH = "application/cloudevents-batch+json"
_WARM_UP_REQUESTS = 200


@dataclass(frozen=True, slots=True)
class GatewayFigures:
    """Single-event rate and latency with and without Kafka, batched rate with Kafka, statuses seen."""

    null_single: Throughput
    null_latency: Latency
    single: Throughput
    latency: Latency
    batched: Throughput
    statuses: dict[str, dict[str, int]]


def measure(kafka: BenchKafka, sizes: Sizes) -> GatewayFigures:
    """Run the null gateway, then the real one, each warmed up, under the same load."""
    statuses: dict[str, dict[str, int]] = {}
    with running_gateway(kafka, null=True) as (url, _):
        null = _load(url, sizes, events=sizes.gateway_events, batch=1)
        statuses["null_single"] = dict(null.statuses)
    with running_gateway(kafka, null=False) as (url, _):
        single = _load(url, sizes, events=sizes.gateway_events, batch=1)
        statuses["single"] = dict(single.statuses)
        batched = _load(url, sizes, events=sizes.thin_batched_events, batch=sizes.thin_batch)
        statuses["batched"] = dict(batched.statuses)
    return GatewayFigures(
        null_single=_rate(null, sizes.gateway_events),
        null_latency=Latency(tuple(null.latencies_ms), sizes.gateway_events),
        single=_rate(single, sizes.gateway_events),
        latency=Latency(tuple(single.latencies_ms), sizes.gateway_events),
        batched=_rate(batched, sizes.thin_batched_events),
        statuses=statuses,
    )


def _rate(result: LoadResult, target: int) -> Throughput:
    return Throughput(result.accepted_events, result.seconds, target)


def _load(url: str, sizes: Sizes, *, events: int, batch: int) -> LoadResult:
    host, port = url.removeprefix("http://").split(":")
    warm = _requests(host, int(port), _WARM_UP_REQUESTS * batch, batch)
    asyncio.run(post_all(host, int(port), warm, connections=4, deadline=time.monotonic() + 30))
    requests = _requests(host, int(port), events, batch)
    deadline = time.monotonic() + sizes.thin_deadline
    return asyncio.run(post_all(host, int(port), requests, connections=sizes.concurrency, deadline=deadline))


def _requests(host: str, port: int, events: int, batch: int) -> Iterator[tuple[bytes, int]]:
    """Requests of `batch` fresh events each, built as they are sent."""
    run = uuid.uuid4().hex[:8]
    for start in range(0, events, batch):
        chunk = [_event(f"{run}-{i}") for i in range(start, min(start + batch, events))]
        if batch == 1:
            yield request_bytes(host, port, "/events", _STRUCTURED, orjson.dumps(chunk[0])), 1
        else:
            yield request_bytes(host, port, "/events", _BATCH, orjson.dumps(chunk)), len(chunk)


def _event(event_id: str) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "bench",
        "type": "bench.gateway",
        "datacontenttype": "application/json",
        "data": {"pad": "x" * 64},
    }

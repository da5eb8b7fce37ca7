"""Synchronous invocation (`POST /functions/{name}/invoke`, bus.invoke) against the raw round trip.

One call in flight: HTTP request to the gateway, event to the function's topic, a no-op handler,
its result to the gateway replica's reply topic, the HTTP answer. The limit: a raw produce→consume
round trip (bench.raw.latency) on the same broker, taken in the same step. Both report p50 and p99.
"""

from __future__ import annotations

import time

import httpx

from bench.broker import BenchKafka
from bench.processes import FUNCTION, running_platform
from bench.raw import latency
from bench.samples import Latency
from bench.sizes import Sizes

__all__ = ["round_trips"]

_WARM_CALLS = 5
"""Calls before the samples (connections, the reply inbox, the worker's first transaction)."""


def round_trips(kafka: BenchKafka, sizes: Sizes) -> tuple[Latency, Latency]:
    """(sync invocation samples, raw produce→consume round-trip samples), in milliseconds."""
    count = sizes.worker_latency_samples
    samples: list[float] = []
    with running_platform(kafka) as platform, httpx.Client(base_url=platform.url, timeout=30) as client:
        path = f"/functions/{FUNCTION}/invoke"
        for n in range(-_WARM_CALLS, count):
            sent = time.monotonic()
            answer = client.post(path, json={"n": n})
            if answer.status_code != 200:
                platform.check_alive()
                raise RuntimeError(f"invoke answered {answer.status_code}: {answer.text[:300]}")
            if n >= 0:
                samples.append((time.monotonic() - sent) * 1000)
    raw = latency(kafka, sizes)
    return Latency(tuple(samples), count), raw

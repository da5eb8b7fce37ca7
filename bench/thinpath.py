"""The thin path measured from outside: HTTP POST /events → gateway → router → worker → results topic.

Events are sent with httpx.AsyncClient, at most `concurrency` requests in flight, each sender on
a client of its own (one shared pool costs the sender far more CPU; encode/httpx#3215). An
event counts once its result (`ce_causationid` = its id) is read from the results topic; its
latency runs from just before its request is sent to the moment its result is read.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType

import httpx
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.broker import BenchKafka
from bench.processes import EVENT_TYPE, Platform, running_platform
from bench.raw import next_batch
from bench.samples import Latency, Throughput
from bench.sizes import Sizes
from bus.kafka.config import consumer_config

__all__ = ["ThinPath", "measure"]

_WARM_UP_EVENTS = 20
_WARM_UP_TIMEOUT = 90.0
"""Seconds the router and worker get to join their groups and deliver the first results."""
_RESULT_GRACE = 20.0
"""Seconds results may keep arriving after the last request was sent."""
_STRUCTURED = "application/cloudevents+json"
_BATCH = "application/cloudevents-batch+json"


@dataclass(frozen=True, slots=True)
class ThinPath:
    """What the thin path measurements yield."""

    single: Throughput
    """One event per request: results per second."""
    latency: Latency
    """One event per request: milliseconds from send to result read."""
    batched: Throughput | None
    """`Sizes.thin_batch` events per request: results per second (None when skipped)."""
    statuses: dict[str, int]
    """HTTP status counts of every measured request ("error" for transport failures)."""
    cpu: dict[str, dict[str, float]]
    """Per run ("single", "batched"), CPU seconds per second of each process: 1.0 is a whole core."""


class ResultWatch:
    """Reads the results topic on a thread of its own and notes when each input's result arrived."""

    def __init__(self, kafka: BenchKafka, topic: str, partitions: int) -> None:
        self._consumer = Consumer(consumer_config(kafka.settings, kafka.group("thin-results")))
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self._arrived: dict[str, float] = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-results", daemon=True)

    def __enter__(self) -> ResultWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._thread.join()
        self._consumer.close()

    def _read(self) -> None:
        while not self._stopping.is_set():
            batch = next_batch(self._consumer, 500, 0.1)
            now = time.monotonic()
            causes = [_causation(m.headers()) for m in batch]
            with self._changed:
                for cause in causes:
                    if cause is not None:
                        self._arrived.setdefault(cause, now)
                self._changed.notify_all()

    def wait_for(self, ids: Iterable[str], deadline: float) -> dict[str, float]:
        """Arrival times of the results of `ids` once all arrived, or those arrived by `deadline`."""
        wanted = set(ids)
        with self._changed:
            while (left := deadline - time.monotonic()) > 0 and not wanted <= self._arrived.keys():
                self._changed.wait(min(left, 0.5))
            return {i: self._arrived[i] for i in wanted if i in self._arrived}


def _causation(headers: object) -> str | None:
    """The `ce_causationid` header (the input event's id) of a result record."""
    if not isinstance(headers, list):
        return None
    for name, raw in headers:
        if name == "ce_causationid" and isinstance(raw, bytes):
            return raw.decode("utf-8", "replace")
    return None


def measure(kafka: BenchKafka, sizes: Sizes) -> ThinPath:
    """Start the platform, warm it up, then run the one-event and the batched measurements."""
    statuses: collections.Counter[str] = collections.Counter()
    with (
        running_platform(kafka) as platform,
        ResultWatch(kafka, platform.results_topic, platform.results_partitions) as watch,
    ):
        _warm_up(platform, watch)
        cpu: dict[str, dict[str, float]] = {}
        with _CpuShares(platform) as shares:
            single, latency = _run(
                platform, watch, sizes, events=sizes.thin_events, batch=1, statuses=statuses
            )
        cpu["single"] = shares.result
        batched = None
        if sizes.thin_batch > 0:
            with _CpuShares(platform) as shares:
                batched, _ = _run(
                    platform,
                    watch,
                    sizes,
                    events=sizes.thin_batched_events,
                    batch=sizes.thin_batch,
                    statuses=statuses,
                )
            cpu["batched"] = shares.result
        platform.check_alive()
    return ThinPath(single, latency, batched, dict(statuses), cpu)


class _CpuShares:
    """CPU seconds per wall-clock second of the bench process and each platform process over a block.

    The bench process is the HTTP load generator (and the results reader): a share near 1.0
    means the figure is bounded by the sender, not by the platform.
    """

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._before: dict[str, float | None] = {}
        self._started = 0.0
        self.result: dict[str, float] = {}

    def _sample(self) -> dict[str, float | None]:
        sample: dict[str, float | None] = {"bench_client": time.process_time()}
        sample.update({child.name: child.cpu_seconds() for child in self._platform.children})
        return sample

    def __enter__(self) -> _CpuShares:
        self._before = self._sample()
        self._started = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        wall = time.monotonic() - self._started
        after = self._sample()
        for name, before in self._before.items():
            now = after.get(name)
            if before is not None and now is not None and wall > 0:
                self.result[name] = round((now - before) / wall, 2)


def _warm_up(platform: Platform, watch: ResultWatch) -> None:
    ids = [uuid.uuid4().hex for _ in range(_WARM_UP_EVENTS)]
    deadline = time.monotonic() + _WARM_UP_TIMEOUT
    sent = asyncio.run(_send(platform.url, _chunks(ids, 1), 4, deadline, collections.Counter()))
    arrived = watch.wait_for(sent, deadline)
    if not sent or len(arrived) < len(sent):
        platform.check_alive()
        raise RuntimeError(
            f"the thin path delivered {len(arrived)} of {len(sent)} warm-up results "
            f"within {_WARM_UP_TIMEOUT}s (of {len(ids)} sent)"
        )


def _run(
    platform: Platform,
    watch: ResultWatch,
    sizes: Sizes,
    *,
    events: int,
    batch: int,
    statuses: collections.Counter[str],
) -> tuple[Throughput, Latency]:
    ids = [uuid.uuid4().hex for _ in range(events)]
    start = time.monotonic()
    send_deadline = start + sizes.thin_deadline
    sent = asyncio.run(_send(platform.url, _chunks(ids, batch), sizes.concurrency, send_deadline, statuses))
    arrived = watch.wait_for(sent, time.monotonic() + _RESULT_GRACE)
    elapsed = max(arrived.values()) - start if arrived else 0.0
    samples = tuple((arrived[i] - sent[i]) * 1000 for i in ids if i in arrived)
    return Throughput(len(arrived), elapsed, events), Latency(samples, events)


def _chunks(ids: Sequence[str], size: int) -> Iterator[list[str]]:
    for index in range(0, len(ids), size):
        yield list(ids[index : index + size])


async def _send(
    url: str,
    chunks: Iterator[list[str]],
    concurrency: int,
    deadline: float,
    statuses: collections.Counter[str],
) -> dict[str, float]:
    """POST every chunk (one request each) until done or `deadline`; return accepted ids' send times."""
    sent: dict[str, float] = {}
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=1))
            )
            for _ in range(concurrency)
        ]
        async with asyncio.TaskGroup() as senders:
            for client in clients:
                senders.create_task(_sender(client, chunks, deadline, sent, statuses))
    return sent


async def _sender(
    client: httpx.AsyncClient,
    chunks: Iterator[list[str]],
    deadline: float,
    sent: dict[str, float],
    statuses: collections.Counter[str],
) -> None:
    # `chunks` is shared by every sender of the loop; next() never awaits, so each chunk goes once.
    for chunk in chunks:
        if time.monotonic() >= deadline:
            return
        content_type, body = _encode(chunk)
        started = time.monotonic()
        try:
            response = await client.post("/events", content=body, headers={"content-type": content_type})
        except httpx.HTTPError:
            statuses["error"] += 1
            continue
        statuses[str(response.status_code)] += 1
        if response.status_code == 202:
            for event_id in chunk:
                sent[event_id] = started


def _event(event_id: str) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "bench",
        "type": EVENT_TYPE,
        "datacontenttype": "application/json",
        "data": {"pad": "x" * 64},
    }


def _encode(chunk: list[str]) -> tuple[str, bytes]:
    if len(chunk) == 1:
        return _STRUCTURED, orjson.dumps(_event(chunk[0]))
    return _BATCH, orjson.dumps([_event(i) for i in chunk])

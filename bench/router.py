"""The router against the raw loop: bus.router.Router at 10, 100 and 1,000 rules, with and without
transactions, and its cost per event without Kafka.

Every measurement reads a topic filled with the workload of bench.routing_workload (CloudEvents in
binary mode, about 500 bytes) with a fresh group, from the first record read to the last output
acknowledged (plain loops) or committed (transactions). That topic is the ingress topic of the
rule count's own prefix, as the Router routes only its ingress records by the ordinary rules;
the transactional, plain and Faust runs of a rule count write to that prefix's function topics.
The limit is the raw loop copying the same records unchanged (key, value and headers) to one
topic, so a ratio is the router's own cost.
Each rule count is sized from the transform's speed measured first, so that a run takes about
`sizes.router_seconds` whatever the Router's matching costs.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from bench import routing_workload
from bench.broker import BenchKafka
from bench.cpu import CpuMeter
from bench.raw import next_batch, producer_settings
from bench.samples import Throughput
from bench.sizes import Sizes
from bus import collector, naming
from bus.events import to_json_dict
from bus.kafka.admin import ensure_topics
from bus.kafka.config import consumer_config
from bus.kafka.transactions import produce_waiting
from bus.kafka.txloop import InMessage, Output
from bus.kafka_binding import Record, from_record
from bus.manifest import Manifest
from bus.router import MAX_BATCH, Router, routing_loop
from bus.routing import matching_rules
from bus.topology import manifest_topics

__all__ = [
    "MIN_EVENTS",
    "RULE_COUNTS",
    "SAMPLE_BATCH",
    "BenchMessage",
    "Workload",
    "fan_rate",
    "messages",
    "plain_rate",
    "prefix",
    "prepare",
    "raw_rate",
    "rules_time",
    "transform_time",
    "tx_rate",
]

RULE_COUNTS = (10, 100, 1000)
SAMPLE_BATCH = 50
"""Records per Router call when it is timed without Kafka: small, so a slow transform stops on time."""
MIN_EVENTS = 100
"""Fewest input events of a router measurement, however slow the transform."""

Transform = Callable[[Sequence[InMessage]], Sequence[Output]]


@dataclass(frozen=True, slots=True)
class Workload:
    """A rule count's filled input topic and what the transform did with a sample of it."""

    rules: int
    prefix: str
    """Topic prefix of the manifest: its ingress topic is `topic`, its function topics the outputs."""
    topic: str
    """The filled ingress topic."""
    events: int
    """Records in `topic`: what each measurement at this rule count routes."""
    sample: Throughput
    """The Router transform over a sample, without Kafka (its rate sized `events`)."""
    fanout: float
    """Outputs per input event of the sample."""

    def manifest(self) -> Manifest:
        """This rule count's manifest, its topics under `prefix`."""
        return routing_workload.manifest(self.rules, self.prefix)


class BenchMessage:
    """A consumed record without Kafka: what the Router transform reads (bus.kafka.txloop.InMessage)."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_topic", "_value")

    def __init__(self, record: Record, offset: int, *, topic: str = "in", partition: int = 0) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = record.key
        self._value = record.value
        self._headers = list(record.headers)

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        # confluent-kafka returns a fresh list per call; so does this, so the costs compare.
        return list(self._headers)

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def prefix(kafka: BenchKafka, label: str) -> str:
    """The topic prefix of one router measurement: its function topics and DLQ live under it."""
    return f"{kafka.platform_prefix}-{label}"


def messages(records: Sequence[Record], topic: str) -> list[BenchMessage]:
    """`records` as consumed from partition 0 of `topic`, offsets from 0."""
    return [BenchMessage(record, offset, topic=topic) for offset, record in enumerate(records)]


def transform_time(
    router: Transform, records: Sequence[Record], *, topic: str, seconds: float
) -> tuple[Throughput, int]:
    """Events through `router` as records of `topic` (the router's ingress) in batches of
    `SAMPLE_BATCH` until `records` or `seconds` run out, and the outputs it made."""
    consumed = messages(records, topic)
    done = 0
    outputs = 0
    spent = 0.0
    while done < len(consumed) and spent < seconds:
        chunk = consumed[done : done + SAMPLE_BATCH]
        start = time.perf_counter()
        outputs += len(router(chunk))
        spent += time.perf_counter() - start
        done += len(chunk)
    return Throughput(done, spent, done), outputs  # a sample: complete however many it timed


def rules_time(manifest: Manifest, records: Sequence[Record], *, seconds: float) -> Throughput:
    """Events through `bus.routing.matching_rules` alone (decoded beforehand), until `seconds` pass."""
    events = [to_json_dict(from_record(r.key, r.value, r.headers)) for r in records]
    rules = manifest.rules
    done = 0
    start = time.perf_counter()
    # The clock is read once per 50 events: reading it per event would be part of the figure.
    while done < len(events) and (done % 50 or time.perf_counter() - start < seconds):
        matching_rules(events[done], rules)
        done += 1
    return Throughput(done, time.perf_counter() - start, done)  # a sample: complete however many it timed


def _fill(kafka: BenchKafka, topic: str, sizes: Sizes, records: Sequence[Record]) -> str:
    """`topic` (fresh) filled with `records` in order, uncompressed (aiokafka, under Faust, reads it too)."""
    acknowledged = 0

    def delivered(err: KafkaError | None, msg: Message) -> None:
        nonlocal acknowledged
        acknowledged += err is None

    producer = Producer({**producer_settings(kafka.settings, compression="none"), "on_delivery": delivered})
    for seq, record in enumerate(records):
        produce_waiting(producer, topic, record)
        if seq % 1000 == 0:
            producer.poll(0)
    if producer.flush(max(30.0, sizes.deadline)) or acknowledged != len(records):
        raise RuntimeError(f"filling {topic!r}: {acknowledged} of {len(records)} records acknowledged")
    return topic


def prepare(kafka: BenchKafka, sizes: Sizes) -> dict[int, Workload]:
    """Per rule count: time the transform on a sample, then fill a topic sized from that speed."""
    workloads: dict[int, Workload] = {}
    for rules in RULE_COUNTS:
        sample_records = routing_workload.records(rules, min(sizes.router_events, 2_000))
        sample_manifest = routing_workload.manifest(rules, prefix(kafka, f"sample-r{rules}"))
        sample, outputs = transform_time(
            Router(sample_manifest),
            sample_records,
            topic=naming.ingress_topic(sample_manifest.prefix),
            seconds=sizes.router_match_seconds,
        )
        events = min(sizes.router_events, max(MIN_EVENTS, int(sample.rate * sizes.router_seconds)))
        manifest = routing_workload.manifest(rules, prefix(kafka, f"r{rules}"))
        topic = naming.ingress_topic(manifest.prefix)
        if topic not in ensure_topics(kafka.settings, manifest_topics(manifest)):
            raise RuntimeError(f"topic {topic!r} already existed: each run needs a fresh one")
        _fill(kafka, topic, sizes, routing_workload.records(rules, events))
        fanout = round(outputs / sample.events, 3)
        workloads[rules] = Workload(rules, manifest.prefix, topic, events, sample, fanout)
    return workloads


def describe(workloads: dict[int, Workload]) -> dict[str, Any]:
    """What the router measurements ran on, for the report's details."""
    return {
        f"r{w.rules}": {
            "events": w.events,
            "fanout": w.fanout,
            "transform_us_per_event": round(w.sample.seconds / w.sample.events * 1e6, 1),
        }
        for w in workloads.values()
    }


class _Copy:
    """The raw loop's transform: every record to `target` unchanged."""

    def __init__(self, target: str) -> None:
        self._target = target

    def __call__(self, batch: Sequence[InMessage]) -> list[Output]:
        return [Output(self._target, Record(m.key(), m.value(), tuple(m.headers() or ()))) for m in batch]


class _Counting:
    """Wraps a transform: notes when it first ran and sets `stop` once `total` records were seen."""

    def __init__(self, transform: Transform, total: int, stop: threading.Event) -> None:
        self._transform = transform
        self._total = total
        self._stop = stop
        self.first: float | None = None
        self.seen = 0

    def __call__(self, batch: Sequence[InMessage]) -> Sequence[Output]:
        if self.first is None:
            self.first = time.monotonic()
        self.seen += len(batch)
        if self.seen >= self._total:
            self._stop.set()  # the loop finishes (commits) this batch, then returns
        return self._transform(batch)


def _next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    highest: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (message.topic() or "", message.partition() or 0)
        highest[key] = max(highest.get(key, -1), message.offset() or 0)
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in highest.items()]


def _plain_loop(
    kafka: BenchKafka,
    sizes: Sizes,
    *,
    source: str,
    group: str,
    transform: Transform,
    total: int,
    max_batch: int,
    lean: bool = False,
    meter: CpuMeter | None = None,
) -> Throughput:
    """bench.raw's consume→produce loop around `transform`: idempotent producer, async commits.

    `lean` (the router's figures) runs it as bus.kafka.txloop runs the router: the garbage
    collector paused while a batch is in hand, and no Python callback per acknowledged record
    (failed deliveries only; a callback per record was a fifth of the loop at a fan-out of 1.6).
    Without it (the worker bench's limit), each acknowledgement is counted and the collector runs.
    Input records counted per second, from the first read to the last output acknowledged;
    `meter`, if given, is started with the loop (read it after).
    """
    acknowledged = 0
    failed = 0

    def delivered(err: KafkaError | None, msg: Message) -> None:
        nonlocal acknowledged, failed
        if err is None:
            acknowledged += 1
        else:
            failed += 1

    config = {**producer_settings(kafka.settings), "on_delivery": delivered}
    producer = Producer({**config, "delivery.report.only.error": lean})
    consumer = Consumer(consumer_config(kafka.settings, group))
    consumer.subscribe([source])
    count = 0
    produced = 0
    first: float | None = None
    deadline = time.monotonic() + sizes.deadline
    pause = collector.paused if lean else contextlib.nullcontext()
    if meter is not None:
        meter.start()
    try:
        while count < total and time.monotonic() < deadline:
            with pause:  # the batch and its outputs are gone before the collector is back
                batch = next_batch(consumer, max_batch, 0.1)
                if batch:
                    if first is None:
                        first = time.monotonic()
                    # A consumed Message is an InMessage; the stubs type its headers as any producer's may be.
                    for output in transform(cast("list[InMessage]", batch)):
                        produce_waiting(producer, output.topic, output.record)
                        produced += 1
                    producer.poll(0)
                    consumer.commit(offsets=_next_offsets(batch), asynchronous=True)
                    count += len(batch)
                del batch
        left = producer.flush(max(1.0, deadline - time.monotonic()))
        elapsed = time.monotonic() - first if first is not None else 0.0
    finally:
        consumer.close()
    if failed or left or (not lean and acknowledged != produced):
        raise RuntimeError(
            f"{group}: {failed} of {produced} outputs failed, {left} not acknowledged in time"
            + ("" if lean else f", {acknowledged} acknowledged")
        )
    return Throughput(count, elapsed, total)


def raw_rate(
    kafka: BenchKafka, sizes: Sizes, meter: CpuMeter | None = None, *, label: str = "router-raw"
) -> Throughput:
    """The limit: the plain loop copying `sizes.router_events` workload records unchanged to one topic.

    `label` names its topics and group: measured again at the end of the group (another label),
    it shows how far the limit drifted while the router's figures were taken.
    """
    records = routing_workload.records(RULE_COUNTS[0], sizes.router_events)
    source = _fill(kafka, kafka.topic(f"{label}-in", sizes.partitions), sizes, records)
    target = kafka.topic(f"{label}-out", sizes.partitions)
    return _plain_loop(
        kafka,
        sizes,
        source=source,
        group=kafka.group(label),
        transform=_Copy(target),
        total=len(records),
        max_batch=MAX_BATCH,  # the router's own batch, so the limit is measured like the router
        lean=True,
        meter=meter,
    )


class _Fan:
    """The router's fan-out without its routing: each record to one or two function topics (two for
    two records in three, 1.67 per record, as the workload's routing gives 1.56-1.68), cycling over
    all of them, with one header added as the router adds `ce_matchedrules`."""

    def __init__(self, topics: Sequence[str]) -> None:
        self._topics = tuple(topics)
        self._seen = 0

    def __call__(self, batch: Sequence[InMessage]) -> list[Output]:
        topics = self._topics
        outputs: list[Output] = []
        for seq, message in enumerate(batch, self._seen):
            record = Record(message.key(), message.value(), (*(message.headers() or ()), _FAN_HEADER))
            outputs.append(Output(topics[seq % len(topics)], record))
            if seq % 3:
                outputs.append(Output(topics[(seq + 3) % len(topics)], record))
        self._seen += len(batch)
        return outputs


_FAN_HEADER = ("ce_matchedrules", b"rule-0001,rule-0008")


def fan_rate(
    kafka: BenchKafka, sizes: Sizes, workload: Workload, meter: CpuMeter | None = None
) -> Throughput:
    """The plain loop fanning `workload` out to its function topics as the router would, without
    routing: what the router's outputs alone cost against the raw loop's one copy per record."""
    manifest = workload.manifest()
    return _plain_loop(
        kafka,
        sizes,
        source=workload.topic,
        group=kafka.group(f"router-fan-r{workload.rules}"),
        transform=_Fan([naming.function_topic(manifest.prefix, name) for name in manifest.functions]),
        total=workload.events,
        max_batch=MAX_BATCH,
        lean=True,
        meter=meter,
    )


def plain_rate(
    kafka: BenchKafka, sizes: Sizes, workload: Workload, meter: CpuMeter | None = None
) -> Throughput:
    """The Router transform in the plain loop (no transactions): at-least-once routing's ceiling."""
    return _plain_loop(
        kafka,
        sizes,
        source=workload.topic,
        group=kafka.group(f"router-plain-r{workload.rules}"),
        transform=Router(workload.manifest()),
        total=workload.events,
        max_batch=MAX_BATCH,
        lean=True,
        meter=meter,
    )


def tx_rate(kafka: BenchKafka, sizes: Sizes, workload: Workload, meter: CpuMeter | None = None) -> Throughput:
    """The Router in bus.kafka.txloop.TransactionalLoop as `bus.router.serve` runs it, on its own group.

    Input records counted per second, from the first batch transformed to the last one committed.
    """
    group = kafka.group(f"router-tx-r{workload.rules}")
    stop = threading.Event()
    counting = _Counting(Router(workload.manifest()), workload.events, stop)
    # The timer thread only sets `stop`; it is cancelled before this function returns.
    timer = threading.Timer(sizes.deadline, stop.set)
    with routing_loop(
        kafka.settings,
        group=group,
        topics=[workload.topic],
        transactional_id=naming.transactional_id(group, uuid.uuid4().hex[:12]),
    ) as loop:
        timer.start()
        if meter is not None:
            meter.start()
        try:
            loop.run(counting, stop)
        finally:
            timer.cancel()
        ended = time.monotonic()
        committed = loop.records_in
    elapsed = ended - counting.first if counting.first is not None else 0.0
    return Throughput(committed, elapsed, workload.events)

"""The raw limits with confluent-kafka: produce, consume, consume→produce and one-record latency.

Every client uses bus's own configuration unchanged (idempotent acks=all producer, linger.ms=2,
lz4; read_committed consumer without auto-commit), so the limits are the ones the gateway, router
and worker run against. Input topics are filled uncompressed: aiokafka reads the same bytes and
needs the optional lz4 package to read lz4 batches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from bench.broker import BenchKafka
from bench.samples import Latency, Throughput
from bench.sizes import Sizes
from bus.kafka.config import consumer_config, producer_config
from bus.settings import KafkaSettings

__all__ = [
    "consume_produce_rate",
    "consume_rate",
    "fill",
    "latency",
    "next_batch",
    "produce_rate",
    "producer_settings",
    "value",
    "warm_up",
]


def producer_settings(settings: KafkaSettings, *, compression: str | None = None) -> dict[str, Any]:
    """bus's producer configuration; `compression` replaces its `compression.type` when given."""
    config = producer_config(settings)
    if compression is not None:
        config["compression.type"] = compression
    return config


def value(seq: int, size: int) -> bytes:
    """A JSON record value of exactly `size` bytes carrying its sequence number."""
    head = b'{"seq":%d,"pad":"' % seq
    return head.ljust(size - 2, b"x") + b'"}'


class _Deliveries:
    """Counts the delivery reports of a producer."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.ok += 1
        else:
            self.failed += 1


def _produce(producer: Producer, topic: str, payload: bytes | None, key: bytes | None = None) -> None:
    while True:
        try:
            producer.produce(topic, payload, key)
            return
        except BufferError:
            producer.poll(0.01)  # the local queue is full: serve delivery reports first


def fill(kafka: BenchKafka, label: str, sizes: Sizes, *, events: int | None = None) -> str:
    """A fresh topic holding `events` (default `sizes.events`) records, the input of a consume measurement."""
    count = sizes.events if events is None else events
    topic = kafka.topic(label, sizes.partitions)
    deliveries = _Deliveries()
    config = producer_settings(kafka.settings, compression="none")
    producer = Producer({**config, "on_delivery": deliveries})
    for seq in range(count):
        _produce(producer, topic, value(seq, sizes.value_bytes))
        if seq % 1000 == 0:
            producer.poll(0)
    if producer.flush(max(30.0, sizes.deadline)) or deliveries.ok != count:
        raise RuntimeError(f"filling {topic!r}: {deliveries.ok} of {count} records acknowledged")
    return topic


def next_batch(consumer: Consumer, size: int, timeout: float) -> list[Message]:
    """Up to `size` records: wait at most `timeout` for the first, then take what is already fetched.

    `consume(size, timeout)` alone waits the whole timeout whenever fewer than `size` records
    are available, which adds that timeout to the latency of every record at low load.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    batch = [first, *consumer.consume(size - 1, 0)] if size > 1 else [first]
    return [m for m in batch if _usable(m)]


def _usable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.fatal():
        raise RuntimeError(f"consumer failed: {error.str()}")
    return False


def _next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    highest: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (message.topic() or "", message.partition() or 0)
        highest[key] = max(highest.get(key, -1), message.offset() or 0)
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in highest.items()]


def produce_rate(kafka: BenchKafka, sizes: Sizes, *, compression: str | None = None) -> Throughput:
    """Records acknowledged per second by one idempotent acks=all producer."""
    topic = kafka.topic(f"confluent-produce-{compression or 'bus'}", sizes.partitions)
    deliveries = _Deliveries()
    config = producer_settings(kafka.settings, compression=compression)
    producer = Producer({**config, "on_delivery": deliveries})
    start = time.monotonic()
    deadline = start + sizes.deadline
    seq = 0
    # The clock is read once per 1000 records: reading it per record would be part of the figure.
    while seq < sizes.events and (seq % 1000 or time.monotonic() < deadline):
        _produce(producer, topic, value(seq, sizes.value_bytes))
        if seq % 1000 == 0:
            producer.poll(0)
        seq += 1
    producer.flush(max(1.0, deadline - time.monotonic()))
    return Throughput(deliveries.ok, time.monotonic() - start, sizes.events)


def consume_rate(kafka: BenchKafka, sizes: Sizes) -> Throughput:
    """Records read per second by one group consumer, from its first record to its last."""
    topic = fill(kafka, "confluent-consume", sizes, events=sizes.consume_events)
    consumer = Consumer(consumer_config(kafka.settings, kafka.group("confluent-consume")))
    consumer.subscribe([topic])
    count = 0
    first: float | None = None
    deadline = time.monotonic() + sizes.deadline
    try:
        while count < sizes.consume_events and time.monotonic() < deadline:
            batch = next_batch(consumer, sizes.batch, 0.1)
            if batch and first is None:
                first = time.monotonic()
            count += len(batch)
        elapsed = time.monotonic() - first if first is not None else 0.0
    finally:
        consumer.close()
    return Throughput(count, elapsed, sizes.consume_events)


def consume_produce_rate(kafka: BenchKafka, sizes: Sizes) -> Throughput:
    """Records copied per second by the plain loop: consume a batch, produce it, commit asynchronously.

    No exactly-once and no wait for acknowledgements before committing: the loop's ceiling.
    The clock runs from the first record read to the last copy acknowledged.
    """
    source = fill(kafka, "confluent-loop-in", sizes)
    target = kafka.topic("confluent-loop-out", sizes.partitions)
    deliveries = _Deliveries()
    producer = Producer({**producer_settings(kafka.settings), "on_delivery": deliveries})
    consumer = Consumer(consumer_config(kafka.settings, kafka.group("confluent-loop")))
    consumer.subscribe([source])
    count = 0
    first: float | None = None
    deadline = time.monotonic() + sizes.deadline
    try:
        while count < sizes.events and time.monotonic() < deadline:
            batch = next_batch(consumer, sizes.batch, 0.1)
            if not batch:
                continue
            if first is None:
                first = time.monotonic()
            for message in batch:
                _produce(producer, target, message.value(), message.key())
            producer.poll(0)
            consumer.commit(offsets=_next_offsets(batch), asynchronous=True)
            count += len(batch)
        producer.flush(max(1.0, deadline - time.monotonic()))
        elapsed = time.monotonic() - first if first is not None else 0.0
    finally:
        consumer.close()
    return Throughput(deliveries.ok, elapsed, sizes.events)


def latency(kafka: BenchKafka, sizes: Sizes) -> Latency:
    """Milliseconds from `produce()` to the record read back, one record in flight at a time."""
    topic = kafka.topic("confluent-latency", 1)
    producer = Producer(producer_settings(kafka.settings))
    consumer = Consumer(consumer_config(kafka.settings, kafka.group("confluent-latency")))
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    samples: list[float] = []
    deadline = time.monotonic() + sizes.deadline
    try:
        # The first round trip opens connections and fetch sessions: not a sample.
        for seq in range(-1, sizes.latency_samples):
            sent = time.monotonic()
            if sent >= deadline:
                break
            producer.produce(topic, value(seq, sizes.value_bytes))
            producer.poll(0)
            if not _await_one(consumer, deadline):
                break
            if seq >= 0:
                samples.append((time.monotonic() - sent) * 1000)
        producer.flush(5.0)
    finally:
        consumer.close()
    return Latency(tuple(samples), sizes.latency_samples)


def _await_one(consumer: Consumer, deadline: float) -> bool:
    while (left := deadline - time.monotonic()) > 0:
        message = consumer.poll(min(left, 0.5))
        if message is not None and _usable(message):
            return True
    return False


def warm_up(kafka: BenchKafka, sizes: Sizes) -> None:
    """Produce and read back a small topic so the broker's JIT and page cache are warm (not reported)."""
    events = min(sizes.events, 20_000)
    topic = fill(kafka, "warm-up", sizes, events=events)
    consumer = Consumer(consumer_config(kafka.settings, kafka.group("warm-up")))
    consumer.subscribe([topic])
    count = 0
    deadline = time.monotonic() + sizes.deadline
    try:
        while count < events and time.monotonic() < deadline:
            count += len(next_batch(consumer, sizes.batch, 0.1))
    finally:
        consumer.close()

"""The raw figures again with aiokafka, to compare the clients on the same broker and topics.

AIOKafkaProducer: enable_idempotence=True, acks='all', linger_ms=2 (bus's linger), no compression
(lz4 needs the optional lz4 package). AIOKafkaConsumer: enable_auto_commit=False,
auto_offset_reset='earliest', isolation_level='read_committed' (as bus's consumers read).
Each measurement is synchronous to its caller and runs its own event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.broker import BenchKafka
from bench.raw import fill, value
from bench.samples import Latency, Throughput
from bench.sizes import Sizes

__all__ = ["consume_produce_rate", "consume_rate", "latency", "produce_rate"]

_CLIENT_TIMEOUT = 30.0
"""Seconds a client may take to start or stop before the measurement fails."""


def _producer(kafka: BenchKafka) -> Any:
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, enable_idempotence=True, acks="all", linger_ms=2
    )


def _consumer(kafka: BenchKafka, group: str | None, *topics: str) -> Any:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=kafka.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )


async def _bounded(step: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(step, _CLIENT_TIMEOUT)


async def _acknowledged(futures: list[asyncio.Future[Any]], within: float) -> int:
    if not futures:
        return 0
    done, _ = await asyncio.wait(futures, timeout=max(1.0, within))
    return sum(1 for f in done if not f.cancelled() and f.exception() is None)


def produce_rate(kafka: BenchKafka, sizes: Sizes) -> Throughput:
    """Records acknowledged per second by one idempotent acks=all AIOKafkaProducer."""
    topic = kafka.topic("aiokafka-produce", sizes.partitions)
    return asyncio.run(_produce(kafka, topic, sizes))


async def _produce(kafka: BenchKafka, topic: str, sizes: Sizes) -> Throughput:
    producer = _producer(kafka)
    await _bounded(producer.start())
    try:
        futures: list[asyncio.Future[Any]] = []
        start = time.monotonic()
        deadline = start + sizes.deadline
        seq = 0
        while seq < sizes.events and (seq % 1000 or time.monotonic() < deadline):
            futures.append(await producer.send(topic, value(seq, sizes.value_bytes)))
            seq += 1
        ok = await _acknowledged(futures, deadline - time.monotonic())
        elapsed = time.monotonic() - start
    finally:
        await _bounded(producer.stop())
    return Throughput(ok, elapsed, sizes.events)


def consume_rate(kafka: BenchKafka, sizes: Sizes) -> Throughput:
    """Records read per second by one AIOKafkaConsumer in a group, from its first record to its last."""
    topic = fill(kafka, "aiokafka-consume", sizes, events=sizes.consume_events)
    return asyncio.run(_consume(kafka, topic, kafka.group("aiokafka-consume"), sizes))


async def _consume(kafka: BenchKafka, topic: str, group: str, sizes: Sizes) -> Throughput:
    consumer = _consumer(kafka, group, topic)
    await _bounded(consumer.start())
    count = 0
    first: float | None = None
    deadline = time.monotonic() + sizes.deadline
    try:
        while count < sizes.consume_events and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100, max_records=sizes.batch)
            got = sum(len(records) for records in batches.values())
            if got and first is None:
                first = time.monotonic()
            count += got
        elapsed = time.monotonic() - first if first is not None else 0.0
    finally:
        await _bounded(consumer.stop())
    return Throughput(count, elapsed, sizes.consume_events)


def consume_produce_rate(kafka: BenchKafka, sizes: Sizes) -> Throughput:
    """Records copied per second: getmany, send each, commit the batch's offsets (awaited).

    aiokafka's commit is always a round trip the loop awaits; librdkafka's can be asynchronous.
    """
    source = fill(kafka, "aiokafka-loop-in", sizes)
    target = kafka.topic("aiokafka-loop-out", sizes.partitions)
    return asyncio.run(_consume_produce(kafka, source, target, kafka.group("aiokafka-loop"), sizes))


async def _consume_produce(
    kafka: BenchKafka, source: str, target: str, group: str, sizes: Sizes
) -> Throughput:
    consumer = _consumer(kafka, group, source)
    producer = _producer(kafka)
    await _bounded(producer.start())
    try:
        await _bounded(consumer.start())
        try:
            futures: list[asyncio.Future[Any]] = []
            first: float | None = None
            deadline = time.monotonic() + sizes.deadline
            while len(futures) < sizes.events and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=100, max_records=sizes.batch)
                if not batches:
                    continue
                if first is None:
                    first = time.monotonic()
                offsets = {}
                for partition, records in batches.items():
                    for record in records:
                        futures.append(await producer.send(target, record.value, key=record.key))
                    offsets[partition] = records[-1].offset + 1
                await consumer.commit(offsets)
            ok = await _acknowledged(futures, deadline - time.monotonic())
            elapsed = time.monotonic() - first if first is not None else 0.0
        finally:
            await _bounded(consumer.stop())
    finally:
        await _bounded(producer.stop())
    return Throughput(ok, elapsed, sizes.events)


def latency(kafka: BenchKafka, sizes: Sizes) -> Latency:
    """Milliseconds from `send()` to the record read back, one record in flight at a time."""
    topic = kafka.topic("aiokafka-latency", 1)
    return asyncio.run(_latency(kafka, topic, sizes))


async def _latency(kafka: BenchKafka, topic: str, sizes: Sizes) -> Latency:
    producer = _producer(kafka)
    consumer = _consumer(kafka, None)
    await _bounded(producer.start())
    try:
        await _bounded(consumer.start())
        try:
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.seek_to_beginning(TopicPartition(topic, 0))
            samples: list[float] = []
            deadline = time.monotonic() + sizes.deadline
            # The first round trip opens connections and fetch sessions: not a sample.
            for seq in range(-1, sizes.latency_samples):
                sent = time.monotonic()
                if sent >= deadline:
                    break
                await producer.send(topic, value(seq, sizes.value_bytes))
                try:
                    await asyncio.wait_for(consumer.getone(), deadline - sent)
                except TimeoutError:
                    break
                if seq >= 0:
                    samples.append((time.monotonic() - sent) * 1000)
        finally:
            await _bounded(consumer.stop())
    finally:
        await _bounded(producer.stop())
    return Latency(tuple(samples), sizes.latency_samples)

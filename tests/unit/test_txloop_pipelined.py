"""The pipelined TransactionalLoop: each batch commits while the next is read and transformed.

Kafka's clients are replaced by fakes that record what the loop asks of them, so the order of
transactions and the seeks after an abort can be checked without a broker (the loop against a
real broker, killed under load, is RELIABILITY R14 in tests/integration/test_router_faults.py).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as ClientError

from bus.kafka.txloop import InMessage, Output, TransactionalLoop
from bus.kafka_binding import Record
from bus.settings import KafkaSettings


class FakeMessage:
    """A consumed record of partition 0 of topic "in"."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return b"%d" % self._offset


class FakeConsumer:
    """Hands out `batches` in turn (then nothing) and re-reads from where it is sought to."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = [[FakeMessage(offset) for offset in batch] for batch in batches]
        self.seeks: list[tuple[str, int, int]] = []

    def consume(self, count: int, timeout: float) -> list[FakeMessage]:
        return self.batches.pop(0) if self.batches and timeout == 0 else []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("in", 0)]

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append((partition.topic, partition.partition, partition.offset))

    def consumer_group_metadata(self) -> str:
        return "group-metadata"


class FakeProducer:
    """Records each transaction's values and committed offset; `abort_commits` commits fail abortably."""

    def __init__(self, abort_commits: set[int]) -> None:
        self.abort_commits = abort_commits
        self.commits = 0
        self.open: list[bytes] = []
        self.offsets: list[int] = []
        self.committed: list[tuple[list[bytes], int]] = []
        self.aborted: list[list[bytes]] = []
        self.lock = threading.Lock()

    def begin_transaction(self) -> None:
        with self.lock:
            assert not self.open, "a transaction began while another was open"

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: list[Any]) -> None:
        with self.lock:
            self.open.append(value)

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: Any, timeout: float
    ) -> None:
        self.offsets = [tp.offset for tp in offsets]

    def commit_transaction(self, timeout: float) -> None:
        with self.lock:
            self.commits += 1
            if self.commits in self.abort_commits:
                raise KafkaException(
                    ClientError(ClientError._STATE, "fenced for the test", txn_requires_abort=True)
                )
            self.committed.append((self.open, self.offsets[0]))
            self.open = []

    def abort_transaction(self, timeout: float) -> None:
        with self.lock:
            self.aborted.append(self.open)
            self.open = []


def copy(batch: Sequence[InMessage]) -> list[Output]:
    return [Output("out", Record(None, message.value(), ())) for message in batch]


def pipelined(
    batches: list[list[int]], abort_commits: set[int]
) -> tuple[TransactionalLoop, FakeConsumer, FakeProducer]:
    """A pipelined loop over stand-in clients handing out `batches` (offsets of partition 0)."""
    loop = TransactionalLoop(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        group="g",
        topics=["in"],
        transactional_id="t",
        pipelined=True,
    )
    consumer = FakeConsumer(batches)
    producer = FakeProducer(abort_commits)
    loop._consumer = cast("Consumer", consumer)  # the fakes stand in for what __enter__ builds
    loop._producer = cast("Producer", producer)
    return loop, consumer, producer


def run(
    batches: list[list[int]], abort_commits: set[int]
) -> tuple[TransactionalLoop, FakeConsumer, FakeProducer, list[str]]:
    loop, consumer, producer = pipelined(batches, abort_commits)
    calls: list[str] = []
    stop = threading.Event()

    def transform(batch: Sequence[InMessage]) -> list[Output]:
        calls.append(f"transform {batch[0].offset()}")
        if not consumer.batches:
            stop.set()  # the last batch: the loop finishes it, then returns
        return copy(batch)

    loop.run(transform, stop, on_commit=lambda: calls.append("commit"), on_drop=lambda: calls.append("drop"))
    return loop, consumer, producer, calls


def test_each_batch_commits_in_its_own_transaction_in_order() -> None:
    """Batches commit one after another, each with its records and the offset past its last."""
    loop, consumer, producer, calls = run([[0, 1], [2, 3], [4]], abort_commits=set())
    assert producer.committed == [([b"0", b"1"], 2), ([b"2", b"3"], 4), ([b"4"], 5)]
    assert calls == ["transform 0", "transform 2", "commit", "transform 4", "commit", "commit"]
    assert (loop.batches, loop.records_in, loop.records_out) == (3, 5, 5)
    assert consumer.seeks == []


def test_an_aborted_commit_reads_its_batch_and_the_next_again() -> None:
    """When a transaction aborts while the next batch was transformed, both are dropped and re-read."""
    # The consumer hands out what a seek to offset 2 re-reads as two more batches.
    loop, consumer, producer, calls = run([[0, 1], [2, 3], [4, 5], [2, 3], [4, 5]], abort_commits={2})
    assert producer.aborted == [[b"2", b"3"]]
    assert consumer.seeks == [("in", 0, 2)]
    assert calls[:5] == ["transform 0", "transform 2", "commit", "transform 4", "drop"]
    assert [values for values, _ in producer.committed] == [[b"0", b"1"], [b"2", b"3"], [b"4", b"5"]]
    assert [offset for _, offset in producer.committed] == [2, 4, 6]
    assert loop.records_in == 6


def test_a_transform_that_raises_rewinds_after_the_commit_in_flight_settles() -> None:
    """The batch ahead still commits; the failing batch's partitions are sought back to it."""
    loop, consumer, producer = pipelined([[0, 1], [2, 3]], abort_commits=set())

    def transform(batch: Sequence[InMessage]) -> list[Output]:
        if batch[0].offset() == 2:
            raise RuntimeError("transform failed")
        return copy(batch)

    with pytest.raises(RuntimeError, match="transform failed"):
        loop.run(transform, threading.Event())
    assert producer.committed == [([b"0", b"1"], 2)]
    assert consumer.seeks == [("in", 0, 2)]

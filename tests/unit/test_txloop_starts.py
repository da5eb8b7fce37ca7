"""Where the TransactionalLoop starts a partition it was told a start for (`subscribe`'s `new_from`).

A fake consumer stands in for confluent-kafka's: it answers the group's committed offsets and
records the assignment and the commit the loop makes (the loop against a real broker: the flow
tests of tests/integration/test_live_rules.py).
"""

from __future__ import annotations

from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bus.kafka.txloop import START_LOOKUP_TIMEOUT, TransactionalLoop
from bus.settings import KafkaSettings


class FakeConsumer:
    """Answers `committed` from a mapping (missing: no offset, -1001) and records what is asked."""

    def __init__(self, committed: dict[tuple[str, int], int]) -> None:
        self._committed = committed
        self.assigned: list[tuple[str, int, int]] = []
        self.commits: list[tuple[str, int, int]] = []

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self._committed.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(tp.topic, tp.partition, tp.offset) for tp in partitions]

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits = [(tp.topic, tp.partition, tp.offset) for tp in offsets]


def assign(committed: dict[tuple[str, int], int], starts: dict[tuple[str, int], int]) -> FakeConsumer:
    """The loop told `starts`, assigned partitions 0-2 of "res" in a group that committed `committed`."""
    loop = TransactionalLoop(KafkaSettings(), group="g", topics=["in"], transactional_id="t")
    loop.subscribe(["in", "res"], new_from=starts)
    consumer = FakeConsumer(committed)
    loop._on_assign(cast("Consumer", consumer), [TopicPartition("res", p) for p in range(3)])
    return consumer


def test_a_partition_without_a_committed_offset_starts_at_its_start_and_commits_it() -> None:
    consumer = assign({("res", 1): 4}, {("res", 0): 7, ("res", 1): 2})
    assert consumer.assigned == [("res", 0, 7), ("res", 1, -1001), ("res", 2, -1001)]
    assert consumer.commits == [("res", 0, 7)]


def test_a_committed_offset_before_the_start_is_passed_over() -> None:
    """The group read the topic for a step since removed: the step added again starts afresh."""
    consumer = assign({("res", 0): 3, ("res", 1): 9}, {("res", 0): 7, ("res", 1): 9})
    assert consumer.assigned == [("res", 0, 7), ("res", 1, -1001), ("res", 2, -1001)]
    assert consumer.commits == [("res", 0, 7)]


def test_a_committed_offset_at_or_after_the_start_is_kept() -> None:
    consumer = assign({("res", 0): 7, ("res", 1): 12}, {("res", 0): 7, ("res", 1): 9})
    assert consumer.assigned == []
    assert consumer.commits == []


def test_partitions_without_a_start_are_left_to_the_committed_offsets() -> None:
    consumer = assign({}, {})
    assert (consumer.assigned, consumer.commits) == ([], [])


class StalledConsumer(FakeConsumer):
    """A group whose committed offsets cannot be read in time (a killed member's open transaction)."""

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        assert timeout <= START_LOOKUP_TIMEOUT, "bounded: this runs inside the rebalance callback"
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))


def test_offsets_that_cannot_be_read_in_time_leave_the_partitions_at_their_committed_offsets() -> None:
    """The assignment goes on (the router keeps running) with no start placed, instead of raising
    out of the rebalance callback."""
    loop = TransactionalLoop(KafkaSettings(), group="g", topics=["in"], transactional_id="t")
    loop.subscribe(["in", "res"], new_from={("res", 0): 5})
    consumer = StalledConsumer({})
    loop._on_assign(cast("Consumer", consumer), [TopicPartition("res", 0)])
    assert (consumer.assigned, consumer.commits) == ([], [])

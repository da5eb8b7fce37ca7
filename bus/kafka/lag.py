"""Lag of worker groups read from Kafka with little broker load; the supervisor's decision log; DLQ counts.

One `LagMonitor.sample()` sends, all in flight at once: one ListOffsets request per broker for
the log start offsets and one for the last stable offsets (isolation read_committed: records of
open transactions are not lag yet), and one OffsetFetch per worker group. Partition counts come
from one Metadata request every `metadata_interval`.

Transactional writers leave a marker after each transaction, which no consumer ever commits past:
an idle partition keeps a lag of 1 (more after aborted transactions). So for each lagging
partition whose committed offset or end moved, a group-less read_committed consumer fetches from
the committed offset with a 1-byte partition limit (the broker still returns the first batch
whole, KIP-74) and stops at the first record (its timestamp gives the oldest unprocessed age) or
at the end (only markers or aborted records were left: the lag is 0). Results are kept until the
group moves past them, so an idle or stalled group costs no fetch at all.

Measured on the local broker: one idle group, 3 requests and 4-7 ms a sample; 8 idle groups,
10 requests and ~20 ms; 4 groups consuming 400 events/s each (36 partitions), a median of 27 ms
and ~20 requests (14 of them the fetches that find the oldest records).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka import KafkaError as ClientError
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # exported at runtime, missing from the stubs's __all__

from bus import naming
from bus.errors import InvalidEvent, KafkaError, KafkaUnavailable
from bus.events import CloudEvent
from bus.kafka.config import admin_config, build, consumer_config
from bus.kafka.producer import UNAVAILABLE
from bus.kafka_binding import from_record
from bus.manifest import Function
from bus.settings import KafkaSettings
from bus.status import (
    SCALING_DECISION,
    GroupSample,
    PartitionSample,
    Probe,
    RateWindow,
    ScalingDecision,
    head,
    lag_seconds,
    latest_decisions,
    resolve,
)
from bus.topology import retry_topics

__all__ = ["DeadLetterCounter", "DecisionLog", "LagMonitor"]

Key = tuple[str, int]
"""(topic, partition)."""

_GONE = {
    ClientError.UNKNOWN_TOPIC_OR_PART,
    ClientError.LEADER_NOT_AVAILABLE,
    ClientError.NOT_LEADER_FOR_PARTITION,
    ClientError._UNKNOWN_PARTITION,
    ClientError._UNKNOWN_TOPIC,
}
"""Per-partition errors that mean the metadata is out of date: ask again, then skip the partition."""

_SETTLE = (0.05, 0.1, 0.2)
"""Pauses before asking again for partitions whose leader did not answer: a topic created a moment
ago has leaders in the metadata before they answer (measured: NOT_LEADER for up to ~50 ms)."""


_EARLIEST: Any = OffsetSpec.earliest()  # type: ignore[no-untyped-call]  # untyped classmethod in 2.16
_LATEST: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped classmethod in 2.16


@dataclass(frozen=True, slots=True)
class _Group:
    function: str
    group: str
    topic: str
    topics: tuple[str, ...]
    """The function topic, then its retry topics."""


def _groups(prefix: str, functions: Mapping[str, Function], existing: Iterable[str] = ()) -> list[_Group]:
    """The groups of `functions`, each reading its policy's retry topics and those of them among
    `existing` an earlier policy left (retries pending there are lag too: a replica must run)."""
    names = list(existing)
    return [
        _Group(
            function=name,
            group=naming.function_group(prefix, name),
            topic=naming.function_topic(prefix, name),
            topics=(naming.function_topic(prefix, name), *retry_topics(prefix, function, names)),
        )
        for name, function in functions.items()
    ]


class LagMonitor:
    """Samples the lag of functions' worker groups: `with LagMonitor(...) as m: m.sample()`.

    Owns one AdminClient and one consumer; not thread-safe (one caller). Rates span the last
    `rate_window` seconds of samples. A lagging partition whose position is not known yet is read
    at most every `probe_interval` seconds (0: every sample); in between its lag counts markers
    and its age is None.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        functions: Mapping[str, Function],
        prefix: str | None = None,
        rate_window: float = 5.0,
        probe_interval: float = 0.0,
        metadata_interval: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        self._prefix = prefix or settings.prefix
        self._functions = functions
        self._groups = _groups(self._prefix, functions)
        self._bootstrap = settings.bootstrap_servers
        self._timeout = timeout
        self._metadata_interval = metadata_interval
        self._probe_interval = probe_interval
        self._admin = build(AdminClient, admin_config(settings))
        self._scanner = _Scanner(settings, first_batch_only=True)
        self._rates = RateWindow(rate_window)
        self.rate_window = rate_window
        """Seconds the sampled rates average over."""
        self._probes: dict[Key, Probe] = {}
        self._partitions: dict[str, int] = {}
        self._metadata_at = -math.inf
        self._probed_at = -math.inf

    def __enter__(self) -> LagMonitor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the consumer (the AdminClient has nothing to close)."""
        self._scanner.close()

    def watch(self, functions: Mapping[str, Function]) -> None:
        """Sample these functions' groups from now on (the applied manifest changed)."""
        self._functions = functions
        self._groups = _groups(self._prefix, functions)
        self._metadata_at = -math.inf  # new functions' partitions are read at the next sample

    def sample(self) -> dict[str, GroupSample]:
        """Every function's worker group now, by function name; raises KafkaUnavailable if Kafka is not."""
        self._admin.poll(0)  # serves the client's log lines, which otherwise queue up forever
        at = time.monotonic()
        if at - self._metadata_at >= self._metadata_interval:
            self._refresh_partitions()
            self._metadata_at = at
        keys = [
            (topic, p)
            for group in self._groups
            for topic in group.topics
            for p in range(self._partitions.get(topic, 0))
        ]
        starts, ends, committed = self._offsets(keys)
        wall = time.time()
        keys = [key for key in keys if key in starts and key in ends]
        positions = self._positions(keys, starts, ends, committed, at)
        self._rates.keep(keys)
        self._probes = {key: probe for key, probe in self._probes.items() if key in starts}
        samples: dict[str, GroupSample] = {}
        for group in self._groups:
            partitions = []
            for key in keys:
                if key[0] not in group.topics:
                    continue
                position, timestamp = positions[key]
                done = committed.get(key)
                consume, produce = self._rates.add(key, at, done, ends[key])
                lag = max(0, ends[key] - position)
                partitions.append(
                    PartitionSample(
                        topic=key[0],
                        partition=key[1],
                        committed=done,
                        start=starts[key],
                        end=ends[key],
                        position=position,
                        lag=lag,
                        consume_rate=consume,
                        produce_rate=produce,
                        lag_seconds=lag_seconds(lag, consume),
                        oldest_age=max(0.0, wall - timestamp) if lag and timestamp is not None else None,
                    )
                )
            samples[group.function] = GroupSample(
                function=group.function,
                group=group.group,
                topic=group.topic,
                at=at,
                wall=wall,
                partitions=tuple(partitions),
            )
        return samples

    def _refresh_partitions(self) -> None:
        """Partition counts of the monitored topics (0 for those not created yet), and the retry
        topics the groups read beyond their policy's (`bus.topology.retry_topics`): one Metadata
        request for all topics."""
        if not self._functions:
            return
        try:
            topics = self._admin.list_topics(timeout=self._timeout).topics
        except KafkaException as exc:
            raise self._wrapped("cannot list topics", exc) from exc
        self._groups = _groups(self._prefix, self._functions, topics)
        names = {topic for group in self._groups for topic in group.topics}
        self._partitions = {
            name: len(found.partitions) if (found := topics.get(name)) and found.error is None else 0
            for name in names
        }

    def _offsets(self, keys: list[Key]) -> tuple[dict[Key, int], dict[Key, int], dict[Key, int]]:
        """(log start, last stable offset, committed offset) of each partition, from requests sent together.

        A partition the broker does not know (a deleted topic, a moving leader) is asked for again
        after a pause (`_SETTLE`), then left out; the partition counts are read again next sample.
        """
        groups = [
            self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group.group)], request_timeout=self._timeout
            )[group.group]
            for group in self._groups
        ]
        starts, ends = self._list(keys)
        for pause in _SETTLE:
            missing = [key for key in keys if key not in starts or key not in ends]
            if not missing:
                break
            time.sleep(pause)
            more_starts, more_ends = self._list(missing)
            starts.update(more_starts)
            ends.update(more_ends)
        else:
            self._metadata_at = -math.inf
        committed: dict[Key, int] = {}
        for future in groups:
            try:
                result = future.result()
            except KafkaException as exc:
                raise self._wrapped("cannot read committed offsets", exc) from exc
            for tp in result.topic_partitions:
                if tp.error is None and tp.offset >= 0:
                    committed[(tp.topic, tp.partition)] = tp.offset
        return starts, ends, committed

    def _list(self, keys: list[Key]) -> tuple[dict[Key, int], dict[Key, int]]:
        """(log start, last stable offset) of the partitions the broker answers for: two requests."""
        if not keys:
            return {}, {}
        partitions = [TopicPartition(topic, p) for topic, p in keys]
        options = {"isolation_level": IsolationLevel.READ_COMMITTED, "request_timeout": self._timeout}
        earliest = self._admin.list_offsets(dict.fromkeys(partitions, _EARLIEST), **options)
        latest = self._admin.list_offsets(dict.fromkeys(partitions, _LATEST), **options)
        return self._listed(earliest), self._listed(latest)

    def _listed(self, futures: Mapping[Any, Future[Any]]) -> dict[Key, int]:
        offsets: dict[Key, int] = {}
        for tp, future in futures.items():
            try:
                offsets[(tp.topic, tp.partition)] = future.result().offset
            except KafkaException as exc:
                if exc.args[0].code() not in _GONE:
                    raise self._wrapped("cannot list offsets", exc) from exc
        return offsets

    def _wrapped(self, what: str, exc: KafkaException) -> KafkaError:
        error = exc.args[0]
        reason = f"{what} at {self._bootstrap}: {error.str()}"
        if error.retriable() or error.code() in UNAVAILABLE:
            return KafkaUnavailable(reason)
        return KafkaError(reason)

    def _positions(
        self,
        keys: Iterable[Key],
        starts: Mapping[Key, int],
        ends: Mapping[Key, int],
        committed: Mapping[Key, int],
        at: float,
    ) -> dict[Key, tuple[int, float | None]]:
        """(position, timestamp of the record there) per partition, probing those not known if due."""
        firsts = {key: head(committed.get(key), starts[key]) for key in keys}
        known: dict[Key, tuple[int, float | None]] = {}
        unknown: dict[Key, int] = {}
        for key, first in firsts.items():
            position, timestamp, done = resolve(self._probes.get(key), first, ends[key])
            known[key] = (position, timestamp)
            if not done:
                unknown[key] = position
        if unknown and at - self._probed_at >= self._probe_interval:
            self._probed_at = at
            for key, probe in self._probe(unknown).items():
                # Everything from the group's head to where this read started was already known empty.
                self._probes[key] = Probe(firsts[key], probe.offset, probe.found, probe.timestamp)
                position, timestamp, _ = resolve(self._probes[key], firsts[key], ends[key])
                known[key] = (position, timestamp)
        return known

    def _probe(self, starts: Mapping[Key, int]) -> dict[Key, Probe]:
        """The first record at or after each start offset, or the end if there is none."""
        found: dict[Key, Probe] = {}

        def visit(message: Any) -> bool:
            kind, stamp = message.timestamp()
            timestamp = None if kind == TIMESTAMP_NOT_AVAILABLE or stamp < 0 else stamp / 1000
            key = (message.topic(), message.partition())
            found[key] = Probe(starts[key], message.offset(), True, timestamp)
            return True

        ends = self._scanner.scan(starts, visit, timeout=self._timeout)
        for key, end in ends.items():
            found[key] = Probe(starts[key], end, False)
        return found


class _Scanner:
    """One group-less read_committed consumer that reads given partitions from given offsets.

    It joins no group and commits nothing, so the groups it looks at never notice it.
    """

    def __init__(self, settings: KafkaSettings, *, first_batch_only: bool = False) -> None:
        config = {
            **consumer_config(settings, naming.reader_group(uuid.uuid4().hex)),
            "enable.partition.eof": True,
            # An empty fetch at the end answers after this long; the end is what some reads wait for.
            "fetch.wait.max.ms": 10,
        }
        if first_batch_only:
            config["max.partition.fetch.bytes"] = 1
        self._consumer = build(Consumer, config)
        self._bootstrap = settings.bootstrap_servers

    def close(self) -> None:
        self._consumer.close()

    def partitions(self, topic: str, *, timeout: float) -> list[tuple[int, int, int]] | None:
        """(partition, log start, high watermark) of each partition of `topic`; None if it does not exist."""
        try:
            found = self._consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if found is None or found.error is not None:
                return None
            return [
                (p, *self._watermarks(TopicPartition(topic, p), timeout)) for p in sorted(found.partitions)
            ]
        except KafkaException as exc:
            reason = f"cannot read {topic!r} at {self._bootstrap}: {exc.args[0].str()}"
            raise KafkaUnavailable(reason) from exc

    def _watermarks(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        """(log start, high watermark), asked again while a new topic's leader does not answer yet."""
        for pause in _SETTLE:
            try:
                return self._low_high(partition, timeout)
            except KafkaException as exc:
                if exc.args[0].code() not in _GONE:
                    raise
            time.sleep(pause)
        return self._low_high(partition, timeout)

    def _low_high(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        low, high = self._consumer.get_watermark_offsets(partition, timeout=timeout, cached=False)
        return low, high

    def scan(
        self, starts: Mapping[Key, int], visit: Callable[[Any], bool], *, timeout: float
    ) -> dict[Key, int]:
        """Read each partition from its offset until `visit(record)` says stop, or its end.

        Returns the end offset of each partition that reached its end; a partition neither
        stopped nor ended within `timeout` seconds is just left.
        """
        if not starts:
            return {}
        consumer = self._consumer
        pending = set(starts)
        ends: dict[Key, int] = {}
        deadline = time.monotonic() + timeout
        consumer.assign([TopicPartition(topic, p, offset) for (topic, p), offset in starts.items()])
        try:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                messages = consumer.consume(500, 0) or consumer.consume(1, min(left, 0.1))
                for message in messages:
                    key = (message.topic(), message.partition())
                    if key not in pending:
                        continue
                    error = message.error()
                    if error is None:
                        if visit(message):
                            pending.discard(key)
                    elif error.code() == ClientError._PARTITION_EOF:
                        ends[key] = message.offset() or 0  # an end-of-partition event has its offset
                        pending.discard(key)
                    elif error.fatal():
                        raise KafkaError(f"reading {key[0]!r} failed: {error.str()}")
        finally:
            consumer.unassign()
        return ends


class DecisionLog:
    """The supervisor's latest scaling decision per function, following `naming.scaling_topic`.

    The first read takes the last `tail` records of each partition; later reads only what came
    since. A missing topic means no supervisor ran: no decisions (looked for again next read).
    """

    def __init__(self, settings: KafkaSettings, *, prefix: str | None = None, tail: int = 500) -> None:
        self._topic = naming.scaling_topic(prefix or settings.prefix)
        self._tail = tail
        self._scanner = _Scanner(settings)
        self._positions: dict[Key, int] = {}
        self._latest: dict[str, ScalingDecision] = {}

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the consumer."""
        self._scanner.close()

    def read(self, *, timeout: float = 5.0) -> dict[str, ScalingDecision]:
        """The latest decision per function as of now."""
        marks = self._scanner.partitions(self._topic, timeout=timeout)
        if marks is None:
            return dict(self._latest)
        starts: dict[Key, int] = {}
        for p, low, high in marks:
            key = (self._topic, p)
            known = self._positions.get(key)
            starts[key] = max(low, high - self._tail) if known is None else max(low, known)
        datas: list[Any] = []

        def visit(message: Any) -> bool:
            self._positions[(message.topic(), message.partition())] = message.offset() + 1
            event = _event(message)
            if event is not None and event.type == SCALING_DECISION:
                datas.append(event.data)
            return False

        for key, end in self._scanner.scan(starts, visit, timeout=timeout).items():
            self._positions[key] = end
        self._latest.update(latest_decisions(datas))
        return dict(self._latest)


def _event(message: Any) -> CloudEvent | None:
    try:
        return from_record(message.key(), message.value(), message.headers())
    except InvalidEvent:  # not a CloudEvent: not a decision
        return None


class DeadLetterCounter:
    """Counts the records in functions' dead-letter topics, reading only what came since the last count.

    Counted, not computed from offsets: the worker writes dead letters in transactions, whose
    markers take offsets too (one dead letter per transaction would count twice).
    """

    def __init__(self, settings: KafkaSettings, *, prefix: str | None = None) -> None:
        self._prefix = prefix or settings.prefix
        self._scanner = _Scanner(settings)
        self._counted: dict[Key, tuple[int, int, int]] = {}
        """(log start counted from, position, count) per partition."""

    def __enter__(self) -> DeadLetterCounter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the consumer."""
        self._scanner.close()

    def count(self, function: str, *, timeout: float = 5.0) -> int:
        """Dead letters of `function` now (0 if its DLQ does not exist yet).

        A DLQ too long to read within `timeout` counts its unread offsets (an upper bound) until
        later calls have read it.
        """
        return self.count_topic(naming.dlq_topic(self._prefix, function), timeout=timeout)

    def count_router(self, *, timeout: float = 5.0) -> int:
        """Dead letters of the router now (`<prefix>.router.dlq`), as `count` counts a function's."""
        return self.count_topic(naming.router_dlq_topic(self._prefix), timeout=timeout)

    def count_topic(self, topic: str, *, timeout: float = 5.0) -> int:
        """Records in the dead-letter topic `topic` now (0 if it does not exist yet)."""
        marks = self._scanner.partitions(topic, timeout=timeout)
        if marks is None:
            return 0
        starts: dict[Key, int] = {}
        for p, low, high in marks:
            key = (topic, p)
            since, position, count = self._counted.get(key, (low, low, 0))
            if since != low:  # retention deleted records: count again from the new start
                since, position, count = low, low, 0
            self._counted[key] = (since, position, count)
            if position < high:
                starts[key] = position

        def visit(message: Any) -> bool:
            key = (message.topic(), message.partition())
            since, _, count = self._counted[key]
            self._counted[key] = (since, message.offset() + 1, count + 1)
            return False

        ends = self._scanner.scan(starts, visit, timeout=timeout)
        total = 0
        for p, _, high in marks:
            key = (topic, p)
            since, position, count = self._counted[key]
            if key in ends:
                position = ends[key]
                self._counted[key] = (since, position, count)
            total += count if key not in starts or key in ends else count + max(0, high - position)
        return total

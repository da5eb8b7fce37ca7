"""Reading a time window of a topic without a consumer group (for `bus replay`).

Every partition is read from the first record stamped at or after the window's start
(`offsets_for_times`) up to its end as of opening, or to its first record stamped after the
window's end, whichever comes first. Read committed: the end is the last stable offset, and
records of aborted transactions are skipped. The reader assigns partitions itself: it joins no
group and commits nothing, so the topic's consumers never notice it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import cast

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as ClientError

from bus import naming
from bus.errors import KafkaError, KafkaUnavailable
from bus.kafka.config import build, consumer_config
from bus.kafka_binding import Record
from bus.settings import KafkaSettings

__all__ = ["Span", "Stamped", "WindowReader"]


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets of one partition a window covers: `[start, end)`, end as of opening."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Stamped:
    """A record with its position and timestamp (milliseconds since the epoch; -1 if none)."""

    partition: int
    offset: int
    timestamp_ms: int
    record: Record


class WindowReader:
    """`with WindowReader(...) as window:` then `window.spans` and `for item in window.records(stop)`."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        start_ms: int,
        end_ms: int | None,
        timeout: float = 30.0,
        stall_timeout: float = 60.0,
    ) -> None:
        """`end_ms` None: up to each partition's end as of opening. `timeout`: seconds per broker request;
        `stall_timeout`: seconds without any progress before the read fails."""
        self._settings = settings
        self._topic = topic
        self._start_ms = start_ms
        self._end_ms = end_ms
        self._timeout = timeout
        self._stall_timeout = stall_timeout
        self._consumer: Consumer | None = None
        self.spans: Mapping[int, Span] = {}
        """Partition -> the offsets the window covers; set on entering."""

    def __enter__(self) -> WindowReader:
        group = naming.reader_group(uuid.uuid4().hex)
        config = {**consumer_config(self._settings, group), "enable.partition.eof": True}
        self._consumer = build(Consumer, config)
        try:
            self.spans = self._find_spans(self._consumer)
            self._consumer.assign(
                [
                    TopicPartition(self._topic, p, span.start)
                    for p, span in self.spans.items()
                    if span.end > span.start
                ]
            )
        except BaseException:
            self._consumer.close()
            self._consumer = None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _find_spans(self, consumer: Consumer) -> dict[int, Span]:
        topic = self._topic
        try:
            found = consumer.list_topics(topic, timeout=self._timeout).topics.get(topic)
        except KafkaException as exc:
            raise KafkaUnavailable.at(self._settings.bootstrap_servers, exc) from exc
        if found is None or found.error is not None:
            raise KafkaError(f"topic {topic!r} does not exist: nothing was published under this prefix")
        partitions = sorted(found.partitions)
        ends: dict[int, int] = {}
        try:
            # Ends first: they are what "as of opening" means. With read_committed they are last
            # stable offsets (librdkafka >= 1.8 honours isolation.level here).
            for partition in partitions:
                marks = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self._timeout, cached=False
                )
                if marks is None:
                    raise KafkaUnavailable(f"{topic}[{partition}]: no end offset within {self._timeout:g} s")
                ends[partition] = marks[1]
            starts = consumer.offsets_for_times(
                [TopicPartition(topic, p, self._start_ms) for p in partitions], timeout=self._timeout
            )
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read the offsets of {topic!r}: {exc.args[0].str()}") from exc
        spans: dict[int, Span] = {}
        for found_start in starts:
            if found_start.error is not None:
                raise KafkaError(f"{topic}[{found_start.partition}]: {found_start.error.str()}")
            end = ends[found_start.partition]
            # -1: no record stamped at or after the start, so nothing to read.
            start = found_start.offset if 0 <= found_start.offset < end else end
            spans[found_start.partition] = Span(start, end)
        return spans

    def records(self, stop: Callable[[], bool]) -> Iterator[Stamped]:
        """Yield the window's records, partitions interleaved, each partition in offset order.

        Returns when every partition is done or `stop()` is true; raises KafkaUnavailable when no
        partition makes progress for `stall_timeout` seconds.
        """
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("WindowReader used outside its `with` block")
        pending = {p for p, span in self.spans.items() if span.end > span.start}

        def done(partition: int) -> None:
            pending.discard(partition)
            consumer.pause([TopicPartition(self._topic, partition)])

        progress = time.monotonic()
        while pending and not stop():
            message = consumer.poll(0.2)
            now = time.monotonic()
            if message is None:
                if now - progress > self._stall_timeout:
                    raise KafkaUnavailable(
                        f"{self._topic}: partitions {sorted(pending)} made no progress for "
                        f"{self._stall_timeout:g} s (is Kafka at {self._settings.bootstrap_servers} up?)"
                    )
                continue
            partition = message.partition()
            error = message.error()
            if error is not None:
                if error.code() == ClientError._PARTITION_EOF:
                    # The fetch position passed the records (and the markers of transactions) we saw.
                    progress = now
                    reached = message.offset()
                    if partition in pending and reached is not None and reached >= self.spans[partition].end:
                        done(partition)
                elif error.fatal():
                    raise KafkaError(f"reading {self._topic!r} failed: {error.str()}")
                continue
            progress = now
            offset = message.offset()
            if partition is None or offset is None or partition not in pending:
                continue  # fetched before the partition was paused
            span = self.spans[partition]
            if offset >= span.end:
                done(partition)
                continue
            _, timestamp_ms = message.timestamp()
            if self._end_ms is not None and timestamp_ms > self._end_ms:
                done(partition)
                continue
            record = Record(message.key(), message.value(), _headers(message.headers()))
            yield Stamped(partition, offset, timestamp_ms, record)
            if offset + 1 >= span.end:
                done(partition)


def _headers(raw: object) -> tuple[tuple[str, bytes], ...]:
    """A consumed record's headers as the binding sees them (a null value passes as it came)."""
    # Consumed headers are always a list of (str, bytes | None); the stubs also allow a dict.
    return tuple(cast(list[tuple[str, bytes]], raw or []))

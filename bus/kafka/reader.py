"""Reading a topic without a consumer group: for `bus tail`, checkers and tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Collection, Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as ClientError

from bus import naming
from bus.errors import KafkaError, KafkaUnavailable, Stopped
from bus.kafka.config import build, consumer_config
from bus.settings import KafkaSettings

__all__ = ["read_to_end", "read_topic"]


def read_topic(
    settings: KafkaSettings,
    topic: str,
    *,
    from_beginning: bool = True,
    timeout: float | None = None,
    idle_timeout: float | None = None,
) -> Iterator[Any]:
    """Yield committed records of every partition of `topic` (confluent_kafka.Message objects).

    Stops after `timeout` seconds in all, or `idle_timeout` seconds without a record; commits
    nothing and joins no group, so it never disturbs the topic's consumers.
    """
    config = consumer_config(settings, naming.reader_group(uuid.uuid4().hex))
    consumer = build(Consumer, config)
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise KafkaUnavailable.at(settings.bootstrap_servers, exc) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise KafkaError(f"topic {topic!r} does not exist")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in found.partitions])
        now = time.monotonic()
        deadline = now + timeout if timeout is not None else None
        last_record = now
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if idle_timeout is not None and now - last_record >= idle_timeout:
                return
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaError(f"reading {topic!r} failed: {error.str()}")
                continue
            last_record = time.monotonic()
            yield message
    finally:
        consumer.close()


def read_to_end(
    settings: KafkaSettings,
    topic: str,
    *,
    timeout: float,
    missing_ok: bool = False,
    partitions: Collection[int] | None = None,
    stop: threading.Event | None = None,
) -> list[Any]:
    """Every committed record of `topic` (of its `partitions`, default all) up to its end as of now
    (a compacted state topic's state).

    With read_committed the end is the last stable offset: records of open transactions wait.
    Raises KafkaUnavailable when the end is not reached within `timeout` seconds, KafkaError
    when the topic does not exist (unless `missing_ok`: then nothing was ever written), and
    Stopped once `stop` is set.
    """
    group = naming.reader_group(uuid.uuid4().hex)
    consumer = build(Consumer, {**consumer_config(settings, group), "enable.partition.eof": True})
    try:
        try:
            found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException as exc:
            raise KafkaUnavailable.at(settings.bootstrap_servers, exc) from exc
        if found is None or found.error is not None:
            if missing_ok:
                return []
            raise KafkaError(f"topic {topic!r} does not exist")
        pending = set(found.partitions if partitions is None else partitions)
        if not pending:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() >= deadline:
                raise KafkaUnavailable(f"{topic!r} was not read to its end within {timeout:g} s")
            if stop is not None and stop.is_set():
                raise Stopped(f"stopped while reading {topic!r} to its end")
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() == ClientError._PARTITION_EOF:
                pending.discard(message.partition())
            elif error.fatal():
                raise KafkaError(f"reading {topic!r} failed: {error.str()}")
        return records
    finally:
        consumer.close()

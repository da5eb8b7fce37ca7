"""Topic creation and broker reachability checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka import KafkaError as ClientError
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]  # exported at runtime, missing from the stubs's __all__

from bus.errors import KafkaError, KafkaUnavailable, Stopped
from bus.kafka.config import admin_config, build
from bus.settings import KafkaSettings
from bus.topology import TopicSpec

__all__ = [
    "TopicSpec",
    "end_offsets",
    "ensure_topics",
    "partition_counts",
    "topic_names",
    "wait_for_broker",
    "wait_settled",
]


def wait_for_broker(settings: KafkaSettings, *, timeout: float = 30.0) -> None:
    """Return once the broker answers a metadata request; raise KafkaUnavailable after `timeout`."""
    admin = build(AdminClient, admin_config(settings))
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            last = exc
        else:
            return
    raise KafkaUnavailable.at(settings.bootstrap_servers, last)


def ensure_topics(settings: KafkaSettings, specs: Sequence[TopicSpec], *, timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = build(AdminClient, admin_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailable.at(settings.bootstrap_servers, exc) from exc
    wanted = {spec.name: spec for spec in specs if spec.name not in existing}
    if not wanted:
        return []
    futures = admin.create_topics(
        # replication_factor -1: the broker's default.replication.factor (1 on the local broker).
        [NewTopic(s.name, s.partitions, -1, config=dict(s.config)) for s in wanted.values()],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != ClientError.TOPIC_ALREADY_EXISTS:
                raise KafkaError(f"cannot create topic {name!r}: {exc.args[0].str()}") from exc
    _wait_visible(admin, set(wanted), timeout)
    return created


def _wait_visible(admin: AdminClient, names: set[str], timeout: float) -> None:
    """Wait until new topics have leaders, so the first produce does not race their creation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout).topics
        if all(
            name in topics
            and topics[name].error is None
            and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        ):
            return
        time.sleep(0.05)
    raise KafkaError(f"topics {sorted(names)} did not get leaders within {timeout}s")


def partition_counts(
    settings: KafkaSettings, names: Sequence[str], *, timeout: float = 30.0
) -> dict[str, int]:
    """Partitions of each of `names` that exists (missing topics are left out)."""
    admin = build(AdminClient, admin_config(settings))
    try:
        topics = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise KafkaUnavailable.at(settings.bootstrap_servers, exc) from exc
    return {name: len(topics[name].partitions) for name in names if name in topics}


def end_offsets(
    settings: KafkaSettings, topics: Collection[str], *, timeout: float = 30.0
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset a read_committed reader would read next at the end of each
    partition of `topics` (the last stable offset); topics that do not exist are left out."""
    counts = partition_counts(settings, list(topics), timeout=timeout)
    wanted = {
        TopicPartition(topic, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
        for topic, count in counts.items()
        for p in range(count)
    }
    if not wanted:
        return {}
    admin = build(AdminClient, admin_config(settings))
    try:
        futures = admin.list_offsets(
            wanted, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout
        )
        return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot read the ends of {sorted(topics)}: {exc}") from exc


def topic_names(settings: KafkaSettings, *, timeout: float = 30.0) -> set[str]:
    """The names of every topic on the broker (one Metadata request)."""
    admin = build(AdminClient, admin_config(settings))
    try:
        return set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailable.at(settings.bootstrap_servers, exc) from exc


def wait_settled(
    settings: KafkaSettings,
    topic: str,
    partitions: Collection[int],
    *,
    timeout: float,
    stop: threading.Event | None = None,
) -> None:
    """Wait until no transaction is open on these partitions: each one's last stable offset has
    reached its high watermark (its commit markers are written). KafkaUnavailable after `timeout`;
    Stopped as soon as `stop` is set (a process shutting down waits for nothing)."""
    admin = build(AdminClient, admin_config(settings))
    deadline = time.monotonic() + timeout
    wanted = {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}  # type: ignore[no-untyped-call]
    while wanted:
        try:
            ends = [
                {
                    tp.partition: future.result().offset
                    for tp, future in admin.list_offsets(
                        wanted, isolation_level=level, request_timeout=timeout
                    ).items()
                }
                for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED)
            ]
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot read the ends of {topic!r}: {exc}") from exc
        if ends[0] == ends[1]:
            return
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(f"{topic!r} kept a transaction open for {timeout:g} s")
        # The coordinator is writing the markers: a moment.
        if stop is None:
            time.sleep(0.1)
        elif stop.wait(0.1):
            raise Stopped(f"stopped while waiting for the transactions on {topic!r} to end")

"""The Kafka side of `bus dlq`: find the function, read a queue's dead letters and markers, redrive.

The pure part (views of dead letters, markers, the plan and the records) is bus.dlq.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

from bus import manifest, naming
from bus.dlq import (
    INIT_TIMEOUT,
    READ_TIMEOUT,
    DeadLetterView,
    Queue,
    RedrivePlan,
    Targets,
    identity,
    markers_from,
    plan_redrive,
    position,
    redrive_summary,
    transactions,
)
from bus.errors import ConfigError, KafkaUnavailable, PublishError
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics, topic_names, wait_for_broker
from bus.kafka.config import build, producer_config
from bus.kafka.control_store import manifest_in_force
from bus.kafka.producer import UNAVAILABLE
from bus.kafka.reader import read_to_end
from bus.kafka.transactions import abort_quietly, produce_waiting, retrying
from bus.kafka_binding import Record
from bus.patterns import Pattern
from bus.settings import KafkaSettings

__all__ = ["RedriveProducer", "find_function", "read_dead_letters", "redrive"]


def find_function(
    environ: Mapping[str, str], function: str, *, manifest_path: Path | None, prefix: str | None
) -> tuple[manifest.Manifest, manifest.Function]:
    """The manifest (`manifest_path`, else the applied one) and `function` in it.

    Raises ConfigError naming the known functions when it has none of that name.
    """
    parsed = manifest_in_force(environ, manifest_path, prefix)
    found = parsed.functions.get(function)
    if found is None:
        known = ", ".join(sorted(parsed.functions)) or "none"
        raise ConfigError(f"unknown function {function!r}; known functions: {known}")
    return parsed, found


def read_dead_letters(
    settings: KafkaSettings,
    queue: Queue,
    *,
    read: Callable[[CloudEvent], CloudEvent] = identity,
    timeout: float = READ_TIMEOUT,
) -> list[DeadLetterView]:
    """Every committed dead letter of `queue` up to its end as of now, oldest first, with markers.

    A DLQ or marker topic that does not exist yet holds nothing.
    """
    wait_for_broker(settings, timeout=settings.delivery_timeout)
    found = read_to_end(settings, queue.markers.name, timeout=timeout, missing_ok=True)
    markers = markers_from((message.key(), message.value()) for message in found)
    messages = read_to_end(settings, queue.source, timeout=timeout, missing_ok=True)
    letters = [
        DeadLetterView.from_record(
            Record(message.key(), message.value(), tuple(message.headers() or ())),
            partition=message.partition(),
            offset=message.offset(),
            timestamp_ms=message.timestamp()[1],
            marker=markers.get(position(message.partition(), message.offset())),
            read=read,
        )
        for message in messages
    ]
    return sorted(letters, key=lambda letter: (letter.partition, letter.offset))


class RedriveProducer:
    """The transactional producer of one queue's redrives: `with RedriveProducer(...) as p: p.commit(...)`.

    Its transactional id is the same for every run on the queue, so entering fences an earlier
    run still producing and waits until its last transaction is complete: markers read after
    entering include every redrive committed before (docs/decisions/dlq-redrive.md).
    """

    def __init__(self, settings: KafkaSettings, queue: Queue) -> None:
        group = queue.markers.name
        self._config = producer_config(settings, transactional_id=naming.transactional_id(group, "redrive"))
        self._timeout = settings.delivery_timeout
        self._bootstrap = settings.bootstrap_servers
        self._producer: Producer | None = None

    def __enter__(self) -> RedriveProducer:
        producer = build(Producer, self._config)
        try:
            producer.init_transactions(max(self._timeout, INIT_TIMEOUT))
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"cannot initialise transactions at {self._bootstrap}: {exc.args[0].str()}"
            ) from None
        self._producer = producer
        return self

    def __exit__(self, *_: object) -> None:
        self._producer = None

    def commit(self, records: Sequence[tuple[str, Record]]) -> None:
        """Produce `records` in one transaction; raise KafkaUnavailable or PublishError if it aborted."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("RedriveProducer used outside its `with` block")
        try:
            producer.begin_transaction()
            for topic, record in records:
                produce_waiting(producer, topic, record)
            retrying(lambda: producer.commit_transaction(self._timeout))
        except KafkaException as exc:
            error = exc.args[0]
            abort_quietly(producer, min(self._timeout, 5.0))
            self._producer = None
            reason = f"the redrive transaction was aborted ({error.str()}); its dead letters stay"
            if error.fatal() or not (error.retriable() or error.code() in UNAVAILABLE):
                raise PublishError(reason) from None
            raise KafkaUnavailable(reason) from None


def redrive(
    settings: KafkaSettings,
    queue: Queue,
    *,
    pattern: Pattern | None,
    max_count: int | None,
    dry_run: bool,
    time: Callable[[], str],
    read: Callable[[CloudEvent], CloudEvent] = identity,
    targets: Targets | None = None,
    report: Callable[[dict[str, Any]], None],
) -> None:
    """Redrive `queue`'s dead letters that `pattern` matches; `report` gets the summary, also on failure.

    With `targets` (the router's queue), a dead letter for one target goes to that target's topic
    alone; ConfigError when one of those topics does not exist (nothing is produced). A dry run
    reads and decides only: it creates no topic and produces nothing.
    """
    redrive_id = str(uuid.uuid4())

    def summary(chosen: RedrivePlan, redriven: int) -> dict[str, Any]:
        return redrive_summary(
            chosen,
            function=queue.function,
            redrive_id=redrive_id,
            source=queue.source,
            target=queue.target,
            dry_run=dry_run,
            redriven=redriven,
        )

    def plan() -> RedrivePlan:
        letters = read_dead_letters(settings, queue, read=read)
        chosen = plan_redrive(
            letters, pattern, max_count=max_count, source=queue.redrives_from, targets=targets
        )
        _check_targets(settings, chosen)
        return chosen

    if dry_run:
        report(summary(plan(), 0))
        return
    wait_for_broker(settings, timeout=settings.delivery_timeout)
    ensure_topics(settings, list(queue.topics))
    with RedriveProducer(settings, queue) as producer:
        chosen = plan()
        redriven = 0
        try:
            for batch in transactions(
                chosen.selected,
                redrive_id=redrive_id,
                time=time(),
                target=queue.target,
                markers=queue.markers.name,
                origin=queue.origin,
                routed=chosen.routed,
            ):
                producer.commit(batch)
                redriven += sum(1 for topic, _ in batch if topic == queue.markers.name)
        finally:
            report(summary(chosen, redriven))


def _check_targets(settings: KafkaSettings, chosen: RedrivePlan) -> None:
    """ConfigError naming `bus apply` when a topic the plan sends dead letters to does not exist: the
    redrive does not create a function's topic (its settings come from the manifest)."""
    wanted = {topic for topic, _ in chosen.routed.values()}
    if not wanted:
        return
    missing = sorted(wanted - topic_names(settings, timeout=settings.delivery_timeout))
    if missing:
        named = ", ".join(repr(topic) for topic in missing)
        what = f"target topic {named} does not" if len(missing) == 1 else f"target topics {named} do not"
        them = "it" if len(missing) == 1 else "them"
        raise ConfigError(f"{what} exist: run `bus apply` to create {them}, then redrive again")

"""Calls every transactional producer of bus makes the same way: retried, produced, aborted."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError as ClientError
from confluent_kafka import KafkaException, Producer

from bus.kafka_binding import Record
from bus.logs import log_event

__all__ = ["abort_quietly", "produce_waiting", "retrying"]

logger = logging.getLogger("bus.kafka")


def retrying(call: Callable[[], None], attempts: int = 5, *, deadline: float | None = None) -> None:
    """Run a transaction call, repeating it on retriable errors (librdkafka allows the same call),
    at most `attempts` times and not after `deadline` (time.monotonic())."""
    for attempt in range(1, attempts + 1):
        try:
            call()
            return
        except KafkaException as exc:
            error: ClientError = exc.args[0]
            late = deadline is not None and time.monotonic() >= deadline
            if not error.retriable() or attempt == attempts or late:
                raise
            log_event(logger, "transaction_call_retried", attempt=attempt, reason=error.str())


def produce_waiting(producer: Producer, topic: str, record: Record, partition: int | None = None) -> None:
    """Produce into the open transaction, waiting while the local queue is full.

    `partition` pins the record to one partition; None lets the partitioner choose by key.
    """
    while True:
        try:
            if partition is None:
                producer.produce(topic, value=record.value, key=record.key, headers=list(record.headers))
            else:
                producer.produce(
                    topic,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers),
                    partition=partition,
                )
            return
        except BufferError:
            producer.poll(0.01)


def abort_quietly(producer: Producer, timeout: float) -> bool:
    """Abort the open transaction; False when the broker could not be told (the producer is then
    replaced: a new one with the same transactional id aborts it on `init_transactions`)."""
    with contextlib.suppress(KafkaException):
        producer.abort_transaction(timeout)
        return True
    return False

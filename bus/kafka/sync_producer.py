"""A blocking producer for batch commands (`bus replay`): send many, flush once, count what failed."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError as ClientError
from confluent_kafka import KafkaException, Message, Producer

from bus.errors import PublishError
from bus.kafka.config import build, producer_config
from bus.kafka_binding import Record
from bus.settings import KafkaSettings

__all__ = ["Deliveries", "SyncProducer"]

_FLUSH_MARGIN = 5.0
"""Seconds `finish` waits beyond the delivery timeout, by which every record has its report."""


@dataclass(frozen=True, slots=True)
class Deliveries:
    """What became of the records a SyncProducer sent."""

    acknowledged: int
    """Records the broker acknowledged (acks=all)."""
    failed: int
    """Records refused, timed out or still unreported after the flush."""
    first_error: str | None
    """The first failure's reason, if any."""


class SyncProducer:
    """An idempotent acks=all producer driven from one thread; `finish()` flushes and reports.

    `send` never blocks on an acknowledgement: records are batched by librdkafka, and delivery
    reports are served by `send`, `wait` and `finish`. A full local queue is waited out in `send`.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._flush_timeout = settings.delivery_timeout + _FLUSH_MARGIN
        self._producer = build(Producer, producer_config(settings))
        self._acknowledged = 0
        self._failed = 0
        self._first_error: str | None = None

    def send(self, topic: str, record: Record) -> None:
        """Queue one record; raise PublishError if the client refuses it outright."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers),
                    on_delivery=self._on_delivery,
                )
            except BufferError:
                # The local queue is full: serve reports until the broker has taken some records.
                self._producer.poll(0.1)
                continue
            except KafkaException as exc:
                error: ClientError = exc.args[0]
                raise PublishError(f"cannot produce to {topic!r}: {error.str()}") from exc
            self._producer.poll(0)
            return

    def wait(self, seconds: float) -> None:
        """Block up to `seconds`, serving delivery reports meanwhile (returns early after one)."""
        self._producer.poll(max(0.0, seconds))

    def finish(self) -> Deliveries:
        """Flush: wait until every record sent has its report, and say how many failed."""
        unreported = self._producer.flush(self._flush_timeout)
        first_error = self._first_error
        if unreported and first_error is None:
            first_error = f"{unreported} records had no delivery report after {self._flush_timeout:g} s"
        return Deliveries(self._acknowledged, self._failed + unreported, first_error)

    def _on_delivery(self, err: ClientError | None, msg: Message) -> None:
        if err is None:
            self._acknowledged += 1
            return
        self._failed += 1
        if self._first_error is None:
            self._first_error = f"{msg.topic()}: {err.str()}"

"""All-or-nothing publishing: each batch of records commits in one Kafka transaction, or not at all.

Batches that arrive while a transaction is committing share the next one (group commit), so the
cost of a commit is spread over every caller waiting for it. A failed transaction is aborted and
each of its callers gets the error: read_committed readers (the router) never see part of a batch.
After a failed transaction the producer is replaced; the new producer's `init_transactions`
(same transactional id) aborts whatever the old one left open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError as ClientError
from confluent_kafka import KafkaException, Producer

from bus.errors import KafkaError, KafkaUnavailable, PublishError
from bus.kafka.config import build, producer_config
from bus.kafka.producer import UNAVAILABLE
from bus.kafka.transactions import abort_quietly, produce_waiting, retrying
from bus.kafka_binding import Record
from bus.logs import log_event
from bus.settings import KafkaSettings

__all__ = ["TransactionalPublisher"]

logger = logging.getLogger("bus.kafka")

Batch = Sequence[tuple[str, Record]]


@dataclass(slots=True)
class _Waiting:
    records: Batch
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class TransactionalPublisher:
    """Publishes batches atomically over one transactional producer, one transaction at a time.

    Use as `async with TransactionalPublisher(settings, transactional_id=...) as publisher:`;
    leaving the block commits what is queued, then closes the producer.
    """

    def __init__(
        self, settings: KafkaSettings, *, transactional_id: str, max_records: int = 5_000, **overrides: Any
    ) -> None:
        self._config = {**producer_config(settings, transactional_id=transactional_id), **overrides}
        self._timeout = settings.delivery_timeout
        self._max_records = max_records
        self._producer: Producer | None = None
        self._queue: asyncio.Queue[_Waiting | None] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None
        self.transactions = 0
        """Committed transactions so far (each may hold several callers' batches)."""

    async def __aenter__(self) -> TransactionalPublisher:
        self._committer = asyncio.create_task(self._commit_loop(), name="bus-transactional-publisher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._queue.put_nowait(None)  # after everything queued before it
        if self._committer is not None:
            await self._committer
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, self._timeout)

    async def send_batch(self, records: Batch) -> None:
        """Return once every record is committed; raise KafkaUnavailable/PublishError if none is."""
        if self._committer is None or self._committer.done():
            raise RuntimeError("TransactionalPublisher used outside its `async with` block")
        waiting = _Waiting(records)
        waiting.done.add_done_callback(_retrieve)  # a caller that gave up leaves no unread error
        self._queue.put_nowait(waiting)
        # Shielded: a caller that gives up must not cancel a commit other callers share.
        await asyncio.shield(waiting.done)

    async def _commit_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            group, stop = self._gather(first)
            try:
                await asyncio.to_thread(self._commit, [r for w in group for r in w.records])
            except KafkaUnavailable as exc:
                for waiting in group:
                    waiting.done.set_exception(exc)
            except KafkaError:
                # A record the broker refused fails its whole transaction: one by one, the other
                # callers' batches still commit and only the refused batch gets the error.
                for waiting in group:
                    await self._commit_alone(waiting)
            else:
                for waiting in group:
                    waiting.done.set_result(None)
            if stop:
                return

    async def _commit_alone(self, waiting: _Waiting) -> None:
        try:
            await asyncio.to_thread(self._commit, waiting.records)
        except KafkaError as exc:
            waiting.done.set_exception(exc)
        else:
            waiting.done.set_result(None)

    def _gather(self, first: _Waiting) -> tuple[list[_Waiting], bool]:
        """`first` and the batches queued behind it, up to about `max_records` records."""
        group, count = [first], len(first.records)
        while count < self._max_records and not self._queue.empty():
            waiting = self._queue.get_nowait()
            if waiting is None:
                return group, True
            group.append(waiting)
            count += len(waiting.records)
        return group, False

    def _commit(self, records: Sequence[tuple[str, Record]]) -> None:
        """One transaction over `records` (runs in a worker thread)."""
        producer = self._ready_producer()
        try:
            producer.begin_transaction()
            for topic, record in records:
                produce_waiting(producer, topic, record)
            retrying(lambda: producer.commit_transaction(self._timeout))
        except KafkaException as exc:
            error: ClientError = exc.args[0]
            log_event(
                logger,
                "batch_transaction_failed",
                records=len(records),
                reason=error.str(),
                level=logging.WARNING,
            )
            # A fresh producer after every failure: librdkafka's idempotence state after an aborted
            # transaction can fail the next one (OUT_OF_ORDER_SEQUENCE_NUMBER, measured), and the
            # new producer's init_transactions aborts whatever the old one could not.
            abort_quietly(producer, self._timeout)
            self._discard(producer)
            if error.fatal() or not (error.retriable() or error.code() in UNAVAILABLE):
                raise PublishError(f"Kafka refused the batch: {error.str()}") from exc
            raise KafkaUnavailable(f"Kafka did not commit the batch: {error.str()}") from exc
        self.transactions += 1

    def _ready_producer(self) -> Producer:
        """The producer, created and registered with the transaction coordinator on first use."""
        if self._producer is not None:
            return self._producer
        producer = build(Producer, self._config)
        try:
            producer.init_transactions(self._timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot initialise transactions: {exc.args[0].str()}") from exc
        self._producer = producer
        return producer

    def _discard(self, producer: Producer) -> None:
        log_event(logger, "transactional_producer_replaced", level=logging.WARNING)
        producer.purge()
        self._producer = None


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()

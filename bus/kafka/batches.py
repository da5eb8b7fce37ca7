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
import time
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


@dataclass(slots=True, eq=False)
class _Waiting:
    records: Batch
    deadline: float
    """time.monotonic() by which the caller must have its answer."""
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class TransactionalPublisher:
    """Publishes batches atomically over one transactional producer, one transaction at a time.

    Use as `async with TransactionalPublisher(settings, transactional_id=...) as publisher:`;
    leaving the block commits what is queued, then closes the producer. Every caller is answered
    by its deadline: a batch still queued then is dropped (never committed later), and a
    transaction's calls get only the time its earliest caller has left.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str,
        max_records: int = 5_000,
        max_waiting: int = 1_000,
        **overrides: Any,
    ) -> None:
        self._config = {**producer_config(settings, transactional_id=transactional_id), **overrides}
        self._timeout = settings.delivery_timeout
        self._max_records = max_records
        self._max_waiting = max_waiting
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

    async def send_batch(self, records: Batch, *, within: float | None = None) -> None:
        """Return once every record is committed; raise KafkaUnavailable/PublishError if none is.

        The answer comes `within` seconds (default: the delivery timeout). A KafkaUnavailable
        raised while the commit was already under way is the one ambiguous answer: the broker may
        still complete it (the ids let readers drop the duplicate of a retry).
        """
        if self._committer is None or self._committer.done():
            raise RuntimeError("TransactionalPublisher used outside its `async with` block")
        if self._queue.qsize() >= self._max_waiting:
            raise KafkaUnavailable(f"{self._max_waiting} batches are waiting for Kafka already; retry")
        budget = self._timeout if within is None else within
        waiting = _Waiting(records, time.monotonic() + budget)
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
            group = _drop_expired(group)
            if group:
                await self._commit_group(group)
            if stop:
                return

    async def _commit_group(self, group: list[_Waiting]) -> None:
        try:
            await self._commit(group)
        except KafkaUnavailable as exc:
            _fail(group, exc)
        except KafkaError as exc:
            if len(group) == 1:
                _fail(group, exc)
                return
            # A record the broker refused fails its whole transaction: one by one, the other
            # callers' batches still commit and only the refused batch gets the error.
            for waiting in _drop_expired(group):
                await self._commit_group([waiting])
        except Exception as exc:  # never let the loop die: every later caller would wait for nothing
            log_event(logger, "batch_publisher_error", reason=repr(exc), level=logging.ERROR)
            _fail(group, PublishError(f"the batch publisher failed: {exc!r}"))
        else:
            for waiting in group:
                if not waiting.done.done():
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

    async def _commit(self, group: list[_Waiting]) -> None:
        records = [r for w in group for r in w.records]
        deadline = min(w.deadline for w in group)
        await asyncio.to_thread(self._commit_records, records, deadline)

    def _commit_records(self, records: Sequence[tuple[str, Record]], deadline: float) -> None:
        """One transaction over `records`, its calls bounded by `deadline` (runs in a worker thread)."""
        producer = self._ready_producer(deadline)
        try:
            producer.begin_transaction()
            for topic, record in records:
                produce_waiting(producer, topic, record)
            retrying(lambda: producer.commit_transaction(_left(deadline)), deadline=deadline)
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
            abort_quietly(producer, min(self._timeout, 5.0))
            self._discard(producer)
            if error.fatal() or not (error.retriable() or error.code() in UNAVAILABLE):
                raise PublishError(f"Kafka refused the batch: {error.str()}") from None
            raise KafkaUnavailable(f"Kafka did not commit the batch: {error.str()}") from None
        self.transactions += 1

    def _ready_producer(self, deadline: float) -> Producer:
        """The producer, created and registered with the transaction coordinator on first use."""
        if self._producer is not None:
            return self._producer
        producer = build(Producer, self._config)
        try:
            producer.init_transactions(_left(deadline))
        except KafkaException as exc:
            reason = exc.args[0].str()
            producer.purge()
            raise KafkaUnavailable(f"cannot initialise transactions: {reason}") from None
        self._producer = producer
        return producer

    def _discard(self, producer: Producer) -> None:
        log_event(logger, "transactional_producer_replaced", level=logging.WARNING)
        producer.purge()
        self._producer = None


def _left(deadline: float) -> float:
    """Seconds until `deadline`, at least a little: a call with no time left still gets its answer."""
    return max(0.1, deadline - time.monotonic())


def _drop_expired(group: list[_Waiting]) -> list[_Waiting]:
    """The batches whose callers still wait; the others are answered, and never committed."""
    now = time.monotonic()
    waiting: list[_Waiting] = []
    expired: list[_Waiting] = []
    for item in group:
        (expired if item.deadline <= now or item.done.done() else waiting).append(item)
    _fail(expired, KafkaUnavailable("the batch waited for Kafka past its deadline; retry"))
    return waiting


def _fail(group: Sequence[_Waiting], error: Exception) -> None:
    for waiting in group:
        if not waiting.done.done():
            waiting.done.set_exception(error)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()

"""Exactly-once consume→transform→produce: outputs and input offsets commit in one transaction.

Fencing follows KIP-447: offsets are sent with the consumer's group metadata, so a zombie of an
older group generation cannot commit. A batch whose transaction aborts is re-read from its first
offsets, so nothing is skipped and nothing is published twice. Records of partitions revoked while
a batch was being gathered are dropped before processing: their new owner processes them.

Pipelined (`pipelined=True`, the router's loop), a batch's offsets and commit go to a committer
thread once its outputs are produced, and the next batch is gathered and transformed meanwhile;
transactions still never overlap (the next begins after the last has ended). A revocation while
gathering waits for the commit in flight, so the partition's next owner starts after it. If that
commit aborts, the batch and the one gathered behind it are both read again from the first's offsets.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, NamedTuple, Protocol

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as ClientError

from bus import collector
from bus.errors import KafkaError
from bus.kafka.config import build, consumer_config, producer_config
from bus.kafka.transactions import retrying
from bus.kafka_binding import Record
from bus.logs import log_event
from bus.settings import KafkaSettings

__all__ = [
    "START_LOOKUP_TIMEOUT",
    "InMessage",
    "Output",
    "TransactionalLoop",
    "next_batch",
    "next_offsets",
    "owned",
    "rewind",
    "usable",
]

logger = logging.getLogger("bus.kafka")


START_LOOKUP_TIMEOUT = 5.0
"""Seconds an assignment waits for the committed offsets of partitions with a start (`subscribe`'s
`new_from`) before it leaves them at their committed offsets."""


class InMessage(Protocol):
    """What a transform sees of a consumed record (a confluent_kafka.Message)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class Output(NamedTuple):
    """A record to produce to `topic` as part of the batch's transaction.

    A named tuple, not a dataclass: a router makes one or more per input record, and a tuple
    is made in about half the time of a frozen dataclass.
    """

    topic: str
    record: Record


Transform = Callable[[Sequence[InMessage]], Sequence[Output]]


class TransactionalLoop:
    """Runs `transform` over batches of a group's records, one Kafka transaction per batch.

    Use as `with TransactionalLoop(...) as loop: loop.run(transform, stop)`; leaving the block
    closes the consumer (committing nothing further and leaving the group).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group: str,
        topics: Sequence[str],
        transactional_id: str,
        max_batch: int = 500,
        poll_timeout: float = 0.1,
        txn_timeout: float = 30.0,
        pipelined: bool = False,
        linger_ms: float | None = None,
    ) -> None:
        """`pipelined`: commit each batch on a committer thread while the next one is gathered and
        transformed (`run`). `linger_ms` replaces the producer's `linger.ms` (bus's default: 2)."""
        self._settings = settings
        self._pipelined = pipelined
        self._linger_ms = linger_ms
        self._committer: ThreadPoolExecutor | None = None
        self._flight: _Flight | None = None
        """The transaction committing on the committer thread (pipelined only)."""
        self._abandoned: dict[tuple[str, int], int] | None = None
        """First offsets of a batch whose transaction aborted while the next batch was gathered:
        the loop seeks back to them and drops what it gathered."""
        self._on_commit: Callable[[], None] | None = None
        self._group = group
        self._topics = list(topics)
        self._transactional_id = transactional_id
        self._max_batch = max_batch
        self._poll_timeout = poll_timeout
        self._txn_timeout = txn_timeout
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._in_transaction = False
        self._revoked = False
        """True once partitions were revoked during the gathering of the batch in hand."""
        self._wanted: list[str] | None = None
        """Topics to subscribe to before the next batch (`subscribe`); None: no change."""
        self._wanted_lock = threading.Lock()
        self._starts: dict[tuple[str, int], int] = {}
        """(topic, partition) -> where to start it when the group has no committed offset for it, or
        one before it (`subscribe`'s `new_from`); others start at the committed offset, else at the
        earliest."""
        self.batches = 0
        self.records_in = 0
        self.records_out = 0

    def __enter__(self) -> TransactionalLoop:
        config = producer_config(self._settings, transactional_id=self._transactional_id)
        if self._linger_ms is not None:
            config["linger.ms"] = self._linger_ms
        self._producer = build(Producer, config)
        try:
            self._producer.init_transactions(self._txn_timeout)
        except KafkaException as exc:
            raise KafkaError(f"cannot initialise transactions: {exc.args[0].str()}") from exc
        self._consumer = build(Consumer, consumer_config(self._settings, self._group))
        self._consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._producer is not None and self._in_transaction:
            # Left mid-transaction (an error): abort now rather than hold back read_committed readers.
            with contextlib.suppress(KafkaException):
                self._producer.abort_transaction(self._txn_timeout)
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush(5.0)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log_event(logger, "partitions_assigned", group=self._group, partitions=_names(partitions))
        with self._wanted_lock:
            starts = {
                key: self._starts[key] for p in partitions if (key := (p.topic, p.partition)) in self._starts
            }
        if not starts:
            return  # confluent-kafka assigns them from their committed offsets
        fresh = [TopicPartition(topic, partition) for topic, partition in starts]
        try:
            # Inside the rebalance callback: bounded well below the group's timeouts. A killed
            # member's open transaction holds a stable read of these offsets back until it times
            # out; the partitions then start at their committed offsets, as without a start.
            committed = consumer.committed(fresh, timeout=START_LOOKUP_TIMEOUT)
        except KafkaException as exc:
            log_event(
                logger,
                "start_offsets_not_read",
                group=self._group,
                partitions=_names(fresh),
                reason=exc.args[0].str(),
                level=logging.WARNING,
            )
            return
        # No committed offset (negative), or one from before the start: the group read this topic
        # for a step that was removed since, and the step following it again starts afresh.
        placed = {}
        for tp in committed:
            start = starts[(tp.topic, tp.partition)]
            if tp.offset < start:
                placed[(tp.topic, tp.partition)] = start
        if not placed:
            return
        consumer.incremental_assign(
            [
                TopicPartition(p.topic, p.partition, placed.get((p.topic, p.partition), p.offset))
                for p in partitions
            ]
        )
        # Committed at once, so that a restart before their first batch starts there too. The
        # group's transactions hold no offsets of these partitions now (none ever, or older ones
        # from before they were followed again): nothing to overtake.
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in placed.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log_event(logger, "start_offsets_not_committed", group=self._group, reason=exc.args[0].str())
        log_event(
            logger,
            "partitions_started_at",
            group=self._group,
            offsets=[f"{t}/{p}@{o}" for (t, p), o in placed.items()],
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Unpipelined, no transaction is open while the consumer polls; pipelined, the one
        # committing ends first, so that the next owner starts after it. Records of these
        # partitions already gathered into a batch are dropped by owned().
        self._settle()
        self._revoked = True
        log_event(logger, "partitions_revoked", group=self._group, partitions=_names(partitions))

    @property
    def topics(self) -> list[str]:
        """The topics the loop reads (or will, from its next batch)."""
        wanted = self._wanted
        return list(self._topics if wanted is None else wanted)

    def subscribe(
        self, topics: Sequence[str], *, new_from: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Read `topics` from the next batch on (any thread); partitions of dropped topics are
        revoked by the rebalance, after the batch in hand committed.

        `new_from`: (topic, partition) -> offset where a partition starts when the group has no
        committed offset for it, or one before it (a topic a new rule reads: its end when the rule
        was applied, so the rule acts on what comes after it only), instead of its earliest
        record or the older offset.
        """
        with self._wanted_lock:
            self._wanted = list(topics)
            if new_from:
                self._starts.update(new_from)

    def run(
        self,
        transform: Transform,
        stop: threading.Event,
        *,
        on_commit: Callable[[], None] | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        """Process batches until `stop` is set; the batch in hand is finished first.

        `on_commit` is called after each batch whose transaction committed, in order (for example
        to count it in metrics only then). `on_drop` is called when every batch transformed and
        not committed yet was dropped, to be read again (an aborted transaction, a revocation).
        Pipelined, a batch is transformed before the one ahead of it has committed.
        """
        consumer = self._require(self._consumer)
        self._on_commit = on_commit
        if self._pipelined:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix=f"bus-commit-{self._group}")
        try:
            while not stop.is_set():
                self._resubscribe(consumer)
                with collector.paused:
                    if self._pipelined:
                        self._pipelined_step(consumer, transform, on_drop)
                    else:
                        self._step(consumer, transform, on_drop)
        finally:
            try:
                self._settle()
            finally:
                if self._committer is not None:
                    self._committer.shutdown(wait=True)
                    self._committer = None

    def _resubscribe(self, consumer: Consumer) -> None:
        with self._wanted_lock:
            wanted, self._wanted = self._wanted, None
        if wanted is not None and wanted != self._topics:
            consumer.subscribe(wanted, on_assign=self._on_assign, on_revoke=self._on_revoke)
            log_event(logger, "topics_subscribed", group=self._group, topics=wanted)
            self._topics = wanted

    def _pipelined_step(
        self, consumer: Consumer, transform: Transform, on_drop: Callable[[], None] | None
    ) -> None:
        """Gather and transform a batch while the one before commits; then produce it and hand its
        commit to the committer thread.

        A revocation while gathering waits for the commit in flight (`_on_revoke`). If that
        transaction aborted, its batch and the one gathered are both read again.
        """
        self._revoked = False
        batch = usable(next_batch(consumer, self._max_batch, self._poll_timeout))
        if self._revoked:
            batch = owned(consumer, batch)
        if self._abandoned is None and batch:
            try:
                outputs = transform(batch)
            except BaseException:
                self._settle()
                _seek(consumer, _merged(self._abandoned, _first_offsets(batch)))
                raise
        if not self._settle() or self._abandoned is not None:  # the batch before aborted
            _seek(consumer, _merged(self._abandoned, _first_offsets(batch)))
            self._abandoned = None
            if on_drop is not None:
                on_drop()
            return
        if batch:
            self._flight = self._start_commit(consumer, batch, outputs)

    def _start_commit(self, consumer: Consumer, batch: Sequence[Any], outputs: Sequence[Output]) -> _Flight:
        """Open the batch's transaction, produce its outputs into it, and hand the commit (offsets,
        then the transaction) to the committer thread."""
        producer = self._require(self._producer)
        committer = self._require(self._committer)
        firsts = _first_offsets(batch)
        try:
            self._in_transaction = True
            producer.begin_transaction()
            _produce_all(producer, outputs)
        except KafkaException as exc:
            failed: Future[None] = Future()
            failed.set_exception(exc)
            return _Flight(failed, firsts, len(batch), len(outputs))
        offsets = next_offsets(batch)
        metadata = consumer.consumer_group_metadata()
        future = committer.submit(self._commit, offsets, metadata)
        return _Flight(future, firsts, len(batch), len(outputs))

    def _commit(self, offsets: list[TopicPartition], metadata: Any) -> None:
        """Commit the open transaction with the batch's offsets (on the committer thread)."""
        producer = self._require(self._producer)
        retrying(lambda: producer.send_offsets_to_transaction(offsets, metadata, self._txn_timeout))
        retrying(lambda: producer.commit_transaction(self._txn_timeout))

    def _settle(self) -> bool:
        """Wait for the transaction in flight, if any, and act on how it ended; False if it aborted
        (its first offsets are then in `_abandoned`, for the loop to seek back to)."""
        flight, self._flight = self._flight, None
        if flight is None:
            return True
        try:
            flight.future.result()
        except KafkaException as exc:
            self._aborted(exc)
            self._abandoned = _merged(self._abandoned, flight.firsts)
            return False
        self._in_transaction = False
        self.batches += 1
        self.records_in += flight.records_in
        self.records_out += flight.records_out
        if self._on_commit is not None:
            self._on_commit()
        return True

    def _step(self, consumer: Consumer, transform: Transform, on_drop: Callable[[], None] | None) -> None:
        """Gather, transform and commit one batch.

        It runs with the garbage collector paused: a batch makes thousands of objects that all go
        when it does (by reference counting, none is in a cycle); the collector, counting them,
        went over them again and again and found nothing (7 us of 44 per event in the router).
        """
        self._revoked = False
        batch = usable(next_batch(consumer, self._max_batch, self._poll_timeout))
        if self._revoked:  # a consume() above revoked partitions: drop what they gave
            batch = owned(consumer, batch)
        if not batch:
            return
        if self.process(batch, transform):
            if self._on_commit is not None:
                self._on_commit()
        elif on_drop is not None:
            on_drop()

    def process(self, batch: Sequence[Any], transform: Transform) -> bool:
        """Transform one batch and commit its outputs with its offsets, atomically; True if committed.

        If the transform raises, the batch's partitions are rewound before the error propagates,
        so the same records are processed again by whoever owns them next. An aborted transaction
        rewinds them too, and returns False.
        """
        if not batch:
            return False
        producer = self._require(self._producer)
        consumer = self._require(self._consumer)
        try:
            outputs = transform(batch)
        except BaseException:
            rewind(consumer, batch)
            raise
        try:
            self._in_transaction = True
            producer.begin_transaction()
            _produce_all(producer, outputs)
            offsets = next_offsets(batch)
            metadata = consumer.consumer_group_metadata()
            retrying(lambda: producer.send_offsets_to_transaction(offsets, metadata, self._txn_timeout))
            retrying(lambda: producer.commit_transaction(self._txn_timeout))
            self._in_transaction = False
        except KafkaException as exc:
            self._aborted(exc)
            rewind(consumer, batch)
            return False
        self.batches += 1
        self.records_in += len(batch)
        self.records_out += len(outputs)
        return True

    def _aborted(self, exc: KafkaException) -> None:
        """Abort the transaction `exc` ended, or raise KafkaError when it cannot be (fatal)."""
        error: ClientError = exc.args[0]
        if not error.txn_requires_abort():
            raise KafkaError(
                f"transaction failed for group {self._group!r}: {error.str()}",
                retriable=error.retriable(),
            ) from exc
        log_event(logger, "transaction_aborted", group=self._group, reason=error.str())
        self._abort()

    def _abort(self) -> None:
        producer = self._require(self._producer)
        try:
            producer.abort_transaction(self._txn_timeout)
        except KafkaException as exc:
            raise KafkaError(f"cannot abort the transaction of {self._group!r}: {exc.args[0].str()}") from exc
        self._in_transaction = False

    @staticmethod
    def _require(client: Any) -> Any:
        if client is None:
            raise RuntimeError("TransactionalLoop used outside its `with` block")
        return client


def _produce_all(producer: Producer, outputs: Sequence[Output]) -> None:
    """Produce every output into the open transaction, waiting while the local queue is full.

    `bus.kafka.transactions.produce_waiting` inlined: this runs for every record the router writes.
    """
    produce = producer.produce
    for topic, record in outputs:
        key, value, headers = record
        while True:
            try:
                produce(topic, value, key, headers=list(headers))
                break
            except BufferError:
                producer.poll(0.01)


def next_batch(consumer: Consumer, max_batch: int, poll_timeout: float) -> list[Any]:
    """What is fetched already, up to `max_batch`; wait up to `poll_timeout` only when nothing is.

    librdkafka's consume(n, timeout) waits the whole timeout unless n records arrive, which
    would add `poll_timeout` of latency to every event on a quiet topic.
    """
    messages = consumer.consume(max_batch, 0)
    if not messages:
        messages = consumer.consume(1, poll_timeout)
        if messages:
            messages += consumer.consume(max_batch - 1, 0)
    return messages


def usable(messages: list[Any]) -> list[Any]:
    """The records of a consume() without its error events (a fatal one raises)."""
    batch = [message for message in messages if message.error() is None]
    if len(batch) != len(messages):
        for message in messages:
            _is_error(message)
    return batch


def owned(consumer: Consumer, batch: list[Any]) -> list[Any]:
    """The records of partitions still assigned (a later consume() may have revoked some)."""
    assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    kept = [m for m in batch if (m.topic(), m.partition()) in assigned]
    if len(kept) != len(batch):
        log_event(logger, "revoked_records_dropped", dropped=len(batch) - len(kept))
    return kept


def next_offsets(batch: Sequence[Any]) -> list[TopicPartition]:
    """The offset to commit per partition: one past the highest processed record."""
    highest: dict[tuple[str, int], int] = {}
    get = highest.get
    for message in batch:
        key = (message.topic(), message.partition())
        offset = message.offset()
        if offset > get(key, -1):
            highest[key] = offset
    return [TopicPartition(topic, part, offset + 1) for (topic, part), offset in highest.items()]


def rewind(consumer: Consumer, batch: Sequence[Any]) -> None:
    """Seek each partition back to the batch's first record so it is read again."""
    _seek(consumer, _first_offsets(batch))


def _first_offsets(batch: Sequence[Any]) -> dict[tuple[str, int], int]:
    """The offset of the batch's first record per partition."""
    first: dict[tuple[str, int], int] = {}
    for message in batch:
        key = (message.topic(), message.partition())
        first[key] = min(first.get(key, message.offset()), message.offset())
    return first


def _merged(
    earlier: dict[tuple[str, int], int] | None, later: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """First offsets of two batches together: per partition, the lower."""
    if not earlier:
        return later
    return {key: min(earlier.get(key, offset), offset) for key, offset in {**earlier, **later}.items()}


def _seek(consumer: Consumer, first: dict[tuple[str, int], int]) -> None:
    """Seek the partitions still assigned back to these offsets (the others' new owners start
    from the committed offsets)."""
    if not first:
        return
    assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    for (topic, part), offset in first.items():
        if (topic, part) in assigned:
            consumer.seek(TopicPartition(topic, part, offset))


class _Flight(NamedTuple):
    """A batch whose transaction commits on the committer thread."""

    future: Future[None]
    firsts: dict[tuple[str, int], int]
    records_in: int
    records_out: int


def _is_error(message: Any) -> bool:
    error = message.error()
    if error is None:
        return False
    if error.fatal():
        raise KafkaError(f"consumer failed: {error.str()}")
    if error.code() != ClientError._PARTITION_EOF:
        log_event(logger, "consumer_error", reason=error.str())
    return True


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]

"""The joiner: runs flow joins (bus.flow_joins) over the join topic, exactly once, state in Kafka.

Each router process runs one joiner (when the rules in force have joins) in the group
`<prefix>.flows.joiner`, which shares the join topic's partitions. Per batch, one Kafka
transaction holds the joined events and errors it publishes, the new state of every join the batch
touched (a record per join in the compacted state topic, on the partition numbered like the
join topic's) and the join topic's offsets, sent with the group's metadata, so a joiner of an older
generation (a zombie) cannot commit. A joiner killed at any moment leaves each join either before or
after a whole batch.

The next owner of a partition restores its joins before reading on from the committed offset: it
fetches the committed offsets (stable: librdkafka retries while a transaction of the group is
pending), waits until no transaction is open on the state partition (its commit markers may trail
the offsets'), and reads it to its end. A restored join's deadline fires only once the partition
was read to its end: parts that waited in the topic while no joiner ran are taken first.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as ClientError

from bus import naming
from bus.deadletter import dead_letter
from bus.errors import ConfigError, KafkaError, Stopped
from bus.events import to_json_dict
from bus.flow_joins import (
    JoinSpec,
    Waiting,
    arrive,
    complete,
    decode_waiting,
    encode_waiting,
    join_error,
    join_specs,
    joined_event,
    state_key,
    timeout_message,
)
from bus.flows import FLOW, FLOW_JOIN, FLOW_RUN, FLOW_STEP
from bus.kafka.admin import ensure_topics, partition_counts, wait_settled
from bus.kafka.config import build, consumer_config, producer_config
from bus.kafka.reader import read_to_end
from bus.kafka.transactions import abort_quietly, produce_waiting, retrying
from bus.kafka.txloop import next_batch, next_offsets, owned, rewind, usable
from bus.kafka_binding import Record, from_record, record_size, to_record
from bus.logs import log_event
from bus.manifest import Manifest
from bus.metrics import Registry
from bus.settings import KafkaSettings
from bus.topology import join_topics

__all__ = ["JoinMetrics", "JoinService", "Joiner"]

logger = logging.getLogger("bus.flows")

MAX_BATCH = 500
RESTORE_TIMEOUT = 30.0
TXN_TIMEOUT = 30.0
UNKNOWN_GRACE_MS = 30_000
"""How long a part of a join this joiner's rules do not have yet waits for them (another process
may have applied the manifest first) before it goes to the router DLQ."""


class JoinMetrics:
    """The joiner's Prometheus metrics (in the router process's registry)."""

    def __init__(self, registry: Registry) -> None:
        self.ended = registry.counter(
            "bus_flow_joins_total",
            "Joins ended: joined (published), timeout or too_large.",
            labels=("outcome",),
        )
        self.waiting = registry.gauge("bus_flow_joins_waiting", "Joins of this process waiting for parts.")


@dataclass(frozen=True, slots=True)
class _Join:
    """A join of the rules in force, with where its outcomes go."""

    spec: JoinSpec
    topic: str
    """The join function's topic: the joined event goes there."""
    errors: str | None
    """The function's failure destination (None: `on_failure: none`, the error is only logged)."""


def _joins(manifest: Manifest) -> dict[tuple[str, str], _Join]:
    return {
        key: _Join(
            spec,
            naming.function_topic(manifest.prefix, spec.function),
            manifest.functions[spec.function].destinations.on_failure,
        )
        for key, spec in join_specs(manifest.flows).items()
    }


@dataclass(frozen=True, slots=True)
class _Send:
    topic: str
    record: Record
    partition: int | None = None


class _NotYet(Exception):
    """A part of a join the rules in force lack, young enough to wait for them."""


@dataclass(slots=True)
class _Step:
    """What one batch changes, committed together or not at all."""

    now_ms: int
    stamp: str
    joins: dict[tuple[str, str], _Join]
    sends: list[_Send] = field(default_factory=list)
    changed: dict[tuple[int, bytes], Waiting | None] = field(default_factory=dict)
    ended: Counter[str] = field(default_factory=Counter)


class Joiner:
    """One process's share of the joins: consume parts, keep state, publish, in transactions.

    Use as `with Joiner(...) as joiner: joiner.run(stop)`; `update` swaps the joins in force
    (any thread; the batch in hand finishes with the joins it started with).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        manifest: Manifest,
        *,
        poll_timeout: float = 0.2,
        clock: Callable[[], float] = time.time,
        instance: str = "",
        metrics: JoinMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._prefix = manifest.prefix
        self._joins = _joins(manifest)
        self._poll_timeout = poll_timeout
        self._stopping: threading.Event | None = None
        """`run`'s stop: a restore (in the consumer's assignment callback) gives up when it is set."""
        self._clock = clock
        self._group = naming.flow_joiner_group(self._prefix)
        self._topic = naming.flow_join_topic(self._prefix)
        self._state_topic = naming.flow_join_state_topic(self._prefix)
        self._dlq = naming.router_dlq_topic(self._prefix)
        self._transactional_id = naming.transactional_id(self._group, instance or str(id(self)))
        self._metrics = metrics
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        # Per partition of the join topic owned: its joins, what was read of it, whether it was
        # read to its end since it was assigned.
        self._waiting: dict[int, dict[bytes, Waiting]] = {}
        self._offsets: dict[int, int] = {}
        """Partition -> the offset committed for it (or to be, with the batch in hand)."""
        self._caught_up: set[int] = set()
        self._revoked = False
        self._deadlines: list[tuple[int, int, bytes]] = []
        """Heap of (deadline, partition, state key); an entry whose join changed is skipped."""

    def update(self, manifest: Manifest) -> None:
        """Use the joins of `manifest` from the next batch on."""
        self._joins = _joins(manifest)

    def __enter__(self) -> Joiner:
        self._producer = build(
            Producer, producer_config(self._settings, transactional_id=self._transactional_id)
        )
        try:
            self._producer.init_transactions(TXN_TIMEOUT)
        except KafkaException as exc:
            raise KafkaError(f"cannot initialise the joiner's transactions: {exc.args[0].str()}") from exc
        config = {**consumer_config(self._settings, self._group), "enable.partition.eof": True}
        self._consumer = build(Consumer, config)
        self._consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            self._consumer.close()  # leaves the group: the partitions go to the other joiners now
        if self._producer is not None:
            self._producer.flush(5.0)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        try:
            committed = consumer.committed(partitions, timeout=RESTORE_TIMEOUT)
        except KafkaException as exc:
            raise KafkaError(f"cannot read the joiner's offsets: {exc.args[0].str()}") from exc
        for tp in committed:
            if tp.error is not None:
                raise KafkaError(f"cannot read the joiner's offset of partition {tp.partition}: {tp.error}")
            if tp.offset >= 0:
                self._offsets[tp.partition] = tp.offset
        # A stop during the restore raises Stopped out of the consumer's poll: the joiner ends
        # without having processed a record on a partial state.
        stop = self._stopping
        log_event(logger, "joins_restoring", partitions=numbers)
        wait_settled(self._settings, self._state_topic, numbers, timeout=RESTORE_TIMEOUT, stop=stop)
        restored: dict[int, dict[bytes, Waiting]] = {number: {} for number in numbers}
        for message in read_to_end(
            self._settings, self._state_topic, timeout=RESTORE_TIMEOUT, partitions=numbers, stop=stop
        ):
            joins = restored[message.partition()]
            key, value = message.key(), message.value()
            if value is None:
                joins.pop(key, None)
                continue
            try:
                joins[key] = decode_waiting(value)
            except (ValueError, KeyError, TypeError) as exc:
                log_event(logger, "join_state_unreadable", key=repr(key), reason=str(exc))
        self._waiting.update(restored)
        self._caught_up.difference_update(numbers)
        self._recount()
        count = sum(len(joins) for joins in restored.values())
        log_event(logger, "joins_restored", partitions=numbers, joins=count)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # No transaction is open while the consumer polls: what was committed is the new owner's.
        self._revoked = True
        for tp in partitions:
            self._waiting.pop(tp.partition, None)
            self._offsets.pop(tp.partition, None)
            self._caught_up.discard(tp.partition)
        self._recount()
        log_event(logger, "join_partitions_revoked", partitions=[tp.partition for tp in partitions])

    def _recount(self) -> None:
        heap = [(w.deadline_ms, p, key) for p, joins in self._waiting.items() for key, w in joins.items()]
        heapq.heapify(heap)
        self._deadlines = heap
        if self._metrics is not None:
            self._metrics.waiting.set(
                sum(not w.done for joins in self._waiting.values() for w in joins.values())
            )

    def run(self, stop: threading.Event) -> None:
        """Gather, publish and time out joins until `stop` is set (the batch in hand finishes)."""
        consumer = _require(self._consumer)
        self._stopping = stop
        while not stop.is_set():
            self._revoked = False
            messages = next_batch(consumer, MAX_BATCH, self._poll_timeout)
            self._caught_up.update(m.partition() for m in messages if _at_end(m))
            batch = usable(messages)
            if self._revoked:  # a consume() above revoked partitions: their records are not ours
                batch = owned(consumer, batch)
            if self.step(batch) is None:
                stop.wait(self._poll_timeout)  # a part waits for the rules that name its join

    def step(self, batch: Sequence[Any]) -> bool | None:
        """One transaction: fold `batch` (join topic records), time out what is due.

        True if committed, False if there was nothing to do or the transaction aborted (the
        batch is read again), None if a part waits for rules this joiner does not have yet.
        """
        now = self._clock()
        step = _Step(
            now_ms=round(now * 1000),
            stamp=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            joins=self._joins,
        )
        try:
            for message in batch:
                self._fold(message, step)
        except _NotYet:
            rewind(_require(self._consumer), batch)
            return None
        offsets = {tp.partition: tp for tp in next_offsets(batch)}
        self._expire(step, offsets)
        if not batch and not step.changed:
            return False
        for (partition, key), waiting in step.changed.items():
            value = None if waiting is None else encode_waiting(waiting)
            step.sends.append(_Send(self._state_topic, Record(key, value, ()), partition))
        if not self._commit(batch, step.sends, list(offsets.values())):
            self._recount()  # the due deadlines popped are due again
            return False
        self._offsets.update((partition, tp.offset) for partition, tp in offsets.items())
        self._apply(step)
        return True

    def _expire(self, step: _Step, offsets: dict[int, TopicPartition]) -> None:
        """End the joins whose deadline passed, in partitions read to their end whose offsets the
        transaction can carry (so a zombie's timeouts are fenced); others wait for a later step."""
        later = []
        while self._deadlines and self._deadlines[0][0] <= step.now_ms:
            entry = heapq.heappop(self._deadlines)
            _, partition, key = entry
            waiting = _current(self._waiting, step, partition, key)
            if waiting is None or waiting.deadline_ms > step.now_ms:
                continue  # changed since: its new deadline has its own entry
            if partition not in self._caught_up or (
                partition not in offsets and partition not in self._offsets
            ):
                later.append(entry)
                continue
            offsets.setdefault(partition, TopicPartition(self._topic, partition, self._offsets[partition]))
            step.changed[(partition, key)] = None  # done or timed out: forgotten
            if not waiting.done:
                self._end(
                    step.joins.get((waiting.flow, waiting.step)), waiting, partition, step, too_large=False
                )
        for entry in later:
            heapq.heappush(self._deadlines, entry)

    def _apply(self, step: _Step) -> None:
        """Take a committed step's changes into the joins in memory, the deadlines and the metrics."""
        for (partition, key), waiting in step.changed.items():
            joins = self._waiting.setdefault(partition, {})
            if waiting is None:
                joins.pop(key, None)
            else:
                joins[key] = waiting
                heapq.heappush(self._deadlines, (waiting.deadline_ms, partition, key))
        if self._metrics is not None:
            for outcome, count in step.ended.items():
                self._metrics.ended.inc(count, outcome=outcome)
            self._metrics.waiting.set(
                sum(not w.done for joins in self._waiting.values() for w in joins.values())
            )

    def _fold(self, message: Any, step: _Step) -> None:
        """Add one part to its join; publish the join when it is complete."""
        record = Record(message.key(), message.value(), tuple(message.headers() or ()))
        partition = message.partition()
        try:
            event = from_record(record.key, record.value, record.headers)
            names = (FLOW, FLOW_JOIN, FLOW_STEP, FLOW_RUN)
            flow, join_step, part, run = (event.extensions.get(name) for name in names)
            join = step.joins.get((str(flow), str(join_step)))
            if join is None:
                if step.now_ms - message.timestamp()[1] < UNKNOWN_GRACE_MS:
                    raise _NotYet
                raise ValueError(f"no join {flow}.{join_step} in the rules in force")
            if not isinstance(run, str) or not run:
                raise ValueError(f"the part has no {FLOW_RUN}")
            key = state_key(join.spec.flow, join.spec.step, run)
            before = _current(self._waiting, step, partition, key)
            waiting = arrive(
                before,
                join.spec,
                str(part),
                to_json_dict(event),
                run=run,
                at_ms=step.now_ms,
                offset=message.offset(),
            )
        except _NotYet:
            log_event(logger, "join_part_waits_for_rules", flow=str(flow), step=str(join_step))
            raise
        except Exception as exc:  # one bad record must not stop the partition
            origin = f"{message.topic()}/{partition}/{message.offset()}"
            log_event(logger, "join_part_to_dlq", reason=str(exc), origin=origin)
            dead = dead_letter(record, error_type="JoinFailed", reason=str(exc), origin=origin)
            step.sends.append(_Send(self._dlq, dead))
            return
        if waiting is before:
            log_event(
                logger, "join_part_repeated", flow=join.spec.flow, step=join.spec.step, run=run, part=part
            )
            return
        if complete(join.spec, waiting):
            waiting = self._publish(join, waiting, partition, step)
        elif len(encode_waiting(waiting)) > self._settings.max_record_bytes:
            self._end(join, waiting, partition, step, too_large=True)
            waiting = replace(waiting, done=True, parts={})
        step.changed[(partition, key)] = waiting

    def _publish(self, join: _Join, waiting: Waiting, partition: int, step: _Step) -> Waiting:
        joined = to_record(joined_event(self._prefix, join.spec, waiting, time=step.stamp))
        if record_size(joined) > self._settings.max_record_bytes:
            self._end(join, waiting, partition, step, too_large=True)
        else:
            step.sends.append(_Send(join.topic, joined))
            step.ended["joined"] += 1
        return replace(waiting, done=True, parts={})

    def _end(
        self, join: _Join | None, waiting: Waiting, partition: int, step: _Step, *, too_large: bool
    ) -> None:
        """Publish the error that ends the join's run: it timed out, or it would be too large
        (then without the parts' data, which is what did not fit)."""
        if join is None:  # the join left the rules: nobody waits for it any more
            log_event(logger, "join_dropped", flow=waiting.flow, step=waiting.step, run=waiting.run)
            return
        step.ended["too_large" if too_large else "timeout"] += 1
        if too_large:
            error_type = "JoinTooLarge"
            message = (
                f"the joined event of {join.spec.flow}.{join.spec.step} is over the "
                f"{self._settings.max_record_bytes}-byte record limit"
            )
        else:
            error_type, message = "JoinTimeout", timeout_message(join.spec, waiting)
        error = join_error(
            self._prefix,
            join.spec,
            waiting,
            error_type=error_type,
            message=message,
            time=step.stamp,
            topic=self._topic,
            partition=partition,
            embed_data=not too_large,
        )
        log_event(logger, "join_failed", error_type=error_type, run=waiting.run, reason=message)
        if join.errors is not None:
            step.sends.append(_Send(join.errors, to_record(error)))

    def _commit(self, batch: Sequence[Any], sends: Sequence[_Send], offsets: list[TopicPartition]) -> bool:
        producer = _require(self._producer)
        consumer = _require(self._consumer)
        try:
            producer.begin_transaction()
            for send in sends:
                produce_waiting(producer, send.topic, send.record, send.partition)
            if offsets:
                metadata = consumer.consumer_group_metadata()
                retrying(lambda: producer.send_offsets_to_transaction(offsets, metadata, TXN_TIMEOUT))
            retrying(lambda: producer.commit_transaction(TXN_TIMEOUT))
        except KafkaException as exc:
            error = exc.args[0]
            abort_quietly(producer, TXN_TIMEOUT)
            rewind(consumer, batch)
            if not error.txn_requires_abort():
                raise KafkaError(f"the joiner's transaction failed: {error.str()}") from exc
            log_event(logger, "transaction_aborted", group=self._group, reason=error.str())
            return False
        return True


def _current(
    waiting: dict[int, dict[bytes, Waiting]], step: _Step, partition: int, key: bytes
) -> Waiting | None:
    """The join as the step has it so far: its change, else what was committed."""
    if (partition, key) in step.changed:
        return step.changed[(partition, key)]
    return waiting.get(partition, {}).get(key)


def _at_end(message: Any) -> bool:
    error = message.error()
    return error is not None and error.code() == ClientError._PARTITION_EOF


class JoinService:
    """Runs a `Joiner` on its own thread while the rules in force have joins (from the first on).

    A joiner that fails (Kafka unreachable, a restore that times out) is logged and started again
    after a pause: joins wait meanwhile, their parts kept in Kafka.
    """

    def __init__(
        self, settings: KafkaSettings, *, instance: str = "", registry: Registry | None = None
    ) -> None:
        self._settings = settings
        self._instance = instance
        self._metrics = None if registry is None else JoinMetrics(registry)
        self._manifest: Manifest | None = None
        self._joiner: Joiner | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def update(self, manifest: Manifest) -> None:
        """The rules in force changed (or are first known): follow them, starting if they join."""
        with self._lock:
            self._manifest = manifest
            if self._joiner is not None:
                self._joiner.update(manifest)
            if self._thread is None and join_specs(manifest.flows):
                self._thread = threading.Thread(target=self._run, name="flow-joiner", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        pause = 1.0
        while not self._stop.is_set():
            with self._lock:
                manifest = self._manifest
            assert manifest is not None
            try:
                self._check_topics(manifest.prefix)
                with Joiner(
                    self._settings, manifest, instance=self._instance, metrics=self._metrics
                ) as joiner:
                    with self._lock:
                        self._joiner = joiner
                        joiner.update(self._manifest or manifest)
                    log_event(logger, "joiner_ready", prefix=manifest.prefix)
                    joiner.run(self._stop)
                    pause = 1.0
            except Stopped:
                log_event(logger, "joiner_stopped", during="restore")
                return
            except Exception as exc:  # the joins must outlive any one failure
                log_event(logger, "joiner_failed", reason=str(exc), retry_in=pause, level=logging.ERROR)
                self._stop.wait(pause)
                pause = min(pause * 2, 30.0)
            finally:
                with self._lock:
                    self._joiner = None

    def _check_topics(self, prefix: str) -> None:
        """Create the join topics; refuse a join topic resized apart from its state topic."""
        specs = join_topics(prefix)
        ensure_topics(self._settings, specs)
        counts = partition_counts(self._settings, [spec.name for spec in specs])
        if len(set(counts.values())) > 1:
            raise ConfigError(
                f"the join topics must keep one partition count, found {counts}: a run's parts and state "
                "are placed by it; give them back their count (or a new prefix)"
            )

    def __enter__(self) -> JoinService:
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TXN_TIMEOUT)


def _require(client: Any) -> Any:
    if client is None:
        raise RuntimeError("Joiner used outside its `with` block")
    return client

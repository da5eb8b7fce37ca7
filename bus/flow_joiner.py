"""The joiner: runs flow joins (bus.flow_joins) over the join topic, exactly once, state in Kafka.

Each router process runs one joiner (when the rules in force have joins) in the group
`<prefix>.flows.joiner`, which shares the join topic's partitions. Per batch, one Kafka
transaction holds the joined events and errors it publishes, the new state of every join the batch
touched (a record per join in the compacted state topic, on the partition numbered like the
join topic's), and the join topic's offsets. So a joiner killed at any moment leaves each join
either before or after a whole batch, and the next owner of a partition restores its joins from
the state topic before reading on from the committed offset.

The restore reads the committed offsets first: they are fetched as stable (no transaction of the
group pending), so any transaction that moved them is complete, and its state records are below
the state topic's last stable offset read next.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from bus import naming
from bus.deadletter import dead_letter
from bus.errors import KafkaError
from bus.events import CloudEvent, to_json_dict
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
from bus.kafka.admin import ensure_topics
from bus.kafka.config import build, consumer_config, producer_config
from bus.kafka.reader import read_to_end
from bus.kafka.transactions import abort_quietly, produce_waiting, retrying
from bus.kafka.txloop import next_batch, next_offsets, rewind, usable
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


@dataclass(frozen=True, slots=True)
class _Send:
    topic: str
    record: Record
    partition: int | None = None


def _joins(manifest: Manifest) -> dict[tuple[str, str], _Join]:
    return {
        key: _Join(
            spec,
            naming.function_topic(manifest.prefix, spec.function),
            manifest.functions[spec.function].destinations.on_failure,
        )
        for key, spec in join_specs(manifest.flows).items()
    }


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
        self._clock = clock
        self._group = naming.flow_joiner_group(self._prefix)
        self._topic = naming.flow_join_topic(self._prefix)
        self._state_topic = naming.flow_join_state_topic(self._prefix)
        self._dlq = naming.router_dlq_topic(self._prefix)
        self._transactional_id = naming.transactional_id(self._group, instance or str(id(self)))
        self._waiting: dict[int, dict[bytes, Waiting]] = {}
        """Partition of the join topic -> its joins by state key (only partitions owned)."""
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._metrics = metrics
        self._ended: Counter[str] = Counter()
        """Outcomes of the batch in hand, counted once its transaction commits."""
        self._deadlines: list[tuple[int, int, bytes]] = []
        """Heap of (deadline, partition, state key); an entry whose join changed is skipped."""
        self._open = 0
        """Joins in memory still waiting for parts (the waiting gauge)."""

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
        self._consumer = build(Consumer, consumer_config(self._settings, self._group))
        self._consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush(5.0)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        consumer.committed(partitions, timeout=RESTORE_TIMEOUT)  # stable: no transaction pending
        restored: dict[int, dict[bytes, Waiting]] = {number: {} for number in numbers}
        for message in read_to_end(
            self._settings, self._state_topic, timeout=RESTORE_TIMEOUT, partitions=numbers
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
        self._recount()
        count = sum(len(joins) for joins in restored.values())
        log_event(logger, "joins_restored", partitions=numbers, joins=count)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # No transaction is open while the consumer polls: what was committed is the new owner's.
        for tp in partitions:
            self._waiting.pop(tp.partition, None)
        self._recount()
        log_event(logger, "join_partitions_revoked", partitions=[tp.partition for tp in partitions])

    def _recount(self) -> None:
        self._deadlines = _deadlines(self._waiting)
        self._open = sum(not waiting.done for owned in self._waiting.values() for waiting in owned.values())

    def run(self, stop: threading.Event) -> None:
        """Gather, publish and time out joins until `stop` is set (the batch in hand finishes)."""
        consumer = _require(self._consumer)
        while not stop.is_set():
            self.step(usable(next_batch(consumer, MAX_BATCH, self._poll_timeout)))

    def step(self, batch: Sequence[Any]) -> bool:
        """One transaction: fold `batch` (join topic records), time out what is due; True if committed."""
        joins = self._joins
        now = self._clock()
        now_ms = round(now * 1000)
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        sends: list[_Send] = []
        changed: dict[tuple[int, bytes], Waiting | None] = {}
        self._ended.clear()

        def current(partition: int, key: bytes) -> Waiting | None:
            if (partition, key) in changed:
                return changed[(partition, key)]
            return self._waiting.get(partition, {}).get(key)

        for message in batch:
            self._fold(
                message, joins=joins, current=current, changed=changed, sends=sends, now=(now_ms, stamp)
            )
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, partition, key = heapq.heappop(self._deadlines)
            waiting = current(partition, key)
            if waiting is not None and waiting.deadline_ms <= now_ms:
                changed[(partition, key)] = None  # done or timed out: forgotten
                if not waiting.done:
                    self._end(joins.get((waiting.flow, waiting.step)), waiting, partition, sends, stamp)
        if not batch and not changed:
            return False
        for (partition, key), waiting in changed.items():
            value = None if waiting is None else encode_waiting(waiting)
            sends.append(_Send(self._state_topic, Record(key, value, ()), partition))
        if not self._commit(batch, sends):
            self._deadlines = _deadlines(self._waiting)  # what was popped is due again
            return False
        self._apply(changed)
        return True

    def _apply(self, changed: dict[tuple[int, bytes], Waiting | None]) -> None:
        """Take a committed batch's changes into the joins in memory, the deadlines and the metrics."""
        for (partition, key), waiting in changed.items():
            owned = self._waiting.get(partition)
            if owned is None:  # revoked meanwhile: its new owner restores what was committed
                continue
            before = owned.pop(key, None)
            self._open -= before is not None and not before.done
            if waiting is not None:
                owned[key] = waiting
                self._open += not waiting.done
                heapq.heappush(self._deadlines, (waiting.deadline_ms, partition, key))
        if self._metrics is not None:
            for outcome, count in self._ended.items():
                self._metrics.ended.inc(count, outcome=outcome)
            self._metrics.waiting.set(self._open)

    def _fold(
        self,
        message: Any,
        *,
        joins: dict[tuple[str, str], _Join],
        current: Callable[[int, bytes], Waiting | None],
        changed: dict[tuple[int, bytes], Waiting | None],
        sends: list[_Send],
        now: tuple[int, str],
    ) -> None:
        """Add one part to its join; publish the join when it is complete. `now`: ms and RFC 3339."""
        now_ms, stamp = now
        record = Record(message.key(), message.value(), tuple(message.headers() or ()))
        partition = message.partition()
        try:
            event = from_record(record.key, record.value, record.headers)
            flow, step, part, run = (
                event.extensions.get(name) for name in (FLOW, FLOW_JOIN, FLOW_STEP, FLOW_RUN)
            )
            join = joins.get((str(flow), str(step)))
            if join is None:
                raise ValueError(f"no join {flow}.{step} in the rules in force")
            if not isinstance(run, str) or not run:
                raise ValueError(f"the part has no {FLOW_RUN}")
            key = state_key(join.spec.flow, join.spec.step, run)
            before = current(partition, key)
            waiting = arrive(
                before,
                join.spec,
                str(part),
                to_json_dict(event),
                run=run,
                at_ms=now_ms,
                offset=message.offset(),
            )
        except Exception as exc:  # one bad record must not stop the partition
            origin = f"{message.topic()}/{partition}/{message.offset()}"
            log_event(logger, "join_part_to_dlq", reason=str(exc), origin=origin)
            sends.append(
                _Send(self._dlq, dead_letter(record, error_type="JoinFailed", reason=str(exc), origin=origin))
            )
            return
        if waiting is before:
            log_event(
                logger, "join_part_repeated", flow=join.spec.flow, step=join.spec.step, run=run, part=part
            )
            return
        if complete(join.spec, waiting):
            waiting = self._publish(join, waiting, partition, sends, stamp)
        elif len(encode_waiting(waiting)) > self._settings.max_record_bytes:
            self._end(join, waiting, partition, sends, stamp, too_large=True)
            waiting = replace(waiting, done=True, parts={})
        changed[(partition, key)] = waiting

    def _publish(
        self, join: _Join, waiting: Waiting, partition: int, sends: list[_Send], stamp: str
    ) -> Waiting:
        joined = to_record(joined_event(self._prefix, join.spec, waiting, time=stamp))
        if record_size(joined) > self._settings.max_record_bytes:
            self._end(join, waiting, partition, sends, stamp, too_large=True)
        else:
            sends.append(_Send(join.topic, joined))
            self._ended["joined"] += 1
        return replace(waiting, done=True, parts={})

    def _end(
        self,
        join: _Join | None,
        waiting: Waiting,
        partition: int,
        sends: list[_Send],
        stamp: str,
        *,
        too_large: bool = False,
    ) -> None:
        """Publish the error that ends the join's run: it timed out, or it would be too large."""
        if join is None:  # the join left the rules: nobody waits for it any more
            log_event(logger, "join_dropped", flow=waiting.flow, step=waiting.step, run=waiting.run)
            return
        self._ended["too_large" if too_large else "timeout"] += 1
        if too_large:
            error_type = "JoinTooLarge"
            message = f"the joined event of {join.spec.flow}.{join.spec.step} is over the record limit"
        else:
            error_type, message = "JoinTimeout", timeout_message(join.spec, waiting)
        error: CloudEvent = join_error(
            self._prefix,
            join.spec,
            waiting,
            error_type=error_type,
            message=message,
            time=stamp,
            topic=self._topic,
            partition=partition,
        )
        log_event(logger, "join_failed", error_type=error_type, run=waiting.run, reason=message)
        if join.errors is not None:
            sends.append(_Send(join.errors, to_record(error)))

    def _commit(self, batch: Sequence[Any], sends: Sequence[_Send]) -> bool:
        producer = _require(self._producer)
        consumer = _require(self._consumer)
        try:
            producer.begin_transaction()
            for send in sends:
                produce_waiting(producer, send.topic, send.record, send.partition)
            if batch:
                offsets = next_offsets(batch)
                metadata = consumer.consumer_group_metadata()
                retrying(lambda: producer.send_offsets_to_transaction(offsets, metadata, TXN_TIMEOUT))
            retrying(lambda: producer.commit_transaction(TXN_TIMEOUT))
        except KafkaException as exc:
            error = exc.args[0]
            if not error.txn_requires_abort():
                abort_quietly(producer, TXN_TIMEOUT)
                raise KafkaError(f"the joiner's transaction failed: {error.str()}") from exc
            log_event(logger, "transaction_aborted", group=self._group, reason=error.str())
            abort_quietly(producer, TXN_TIMEOUT)
            rewind(consumer, batch)
            return False
        return True


class JoinService:
    """Runs a `Joiner` on its own thread while the rules in force have joins (from the first on).

    A joiner that fails (Kafka unreachable) is logged and started again a second later: joins
    wait meanwhile, their parts kept in Kafka.
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
                ensure_topics(self._settings, join_topics(manifest.prefix))
                self._thread = threading.Thread(target=self._run, name="flow-joiner", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                manifest = self._manifest
            assert manifest is not None
            try:
                with Joiner(
                    self._settings, manifest, instance=self._instance, metrics=self._metrics
                ) as joiner:
                    with self._lock:
                        self._joiner = joiner
                        joiner.update(self._manifest or manifest)
                    log_event(logger, "joiner_ready", prefix=manifest.prefix)
                    joiner.run(self._stop)
            except KafkaError as exc:
                log_event(logger, "joiner_failed", reason=str(exc))
                self._stop.wait(1.0)
            finally:
                with self._lock:
                    self._joiner = None

    def __enter__(self) -> JoinService:
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TXN_TIMEOUT)


def _deadlines(waiting: dict[int, dict[bytes, Waiting]]) -> list[tuple[int, int, bytes]]:
    heap = [
        (join.deadline_ms, partition, key)
        for partition, owned in waiting.items()
        for key, join in owned.items()
    ]
    heapq.heapify(heap)
    return heap


def _require(client: Any) -> Any:
    if client is None:
        raise RuntimeError("Joiner used outside its `with` block")
    return client

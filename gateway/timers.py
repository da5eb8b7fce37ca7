"""Timers: the one gateway replica that leads fires each schedule's ticks, exactly once.

Leadership comes from Kafka: every replica's consumer joins the group `<prefix>.timers` on the
one-partition checkpoint topic, and the replica assigned that partition leads. On taking the lead
it registers the transactional id all replicas share, which aborts whatever the previous leader
left open and fences it for good; then it reads the checkpoints committed so far. From then on,
each tick's event and the schedule's new checkpoint are published in one transaction, so a tick is
either fired and checkpointed, or neither. A leader paused past its session (SIGSTOP) that wakes up
cannot commit any more: its producer is fenced.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from bus import naming
from bus.errors import InvalidEvent, KafkaError, ManifestError
from bus.kafka.config import build, consumer_config, producer_config
from bus.kafka.reader import read_to_end
from bus.kafka.transactions import abort_quietly, produce_waiting, retrying
from bus.kafka_binding import Record, record_size, to_record
from bus.logs import log_event
from bus.metrics import Registry
from bus.schedules import Checkpoint, Schedule, due, fired_event, last_fired, next_tick, timing_digest
from bus.settings import KafkaSettings
from bus.typed_events import EdgeSchemas, typed

__all__ = [
    "Scheduler",
    "TimerMetrics",
    "check_templates",
    "checkpoint_record",
    "read_checkpoint",
    "tombstone_record",
]

logger = logging.getLogger("bus.timers")

Clock = Callable[[], float]


def checkpoint_record(schedule: str, checkpoint: Checkpoint) -> Record:
    """The compacted-topic record saying `schedule` has fired every tick up to the checkpoint's time."""
    value = orjson.dumps(
        {"through": checkpoint.through.astimezone(UTC).isoformat(), "digest": checkpoint.digest}
    )
    return Record(key=schedule.encode(), value=value, headers=())


def tombstone_record(schedule: str) -> Record:
    """The compacted-topic record deleting the checkpoint of a schedule no longer in the manifest."""
    return Record(key=schedule.encode(), value=None, headers=())


def read_checkpoint(value: bytes | None) -> Checkpoint | None:
    """A checkpoint record's value; None for a tombstone or an unreadable one.

    A checkpoint written before digests were recorded has digest "": it matches no schedule, so
    that schedule starts from now, once, rather than risk firing a stale tick.
    """
    if not value:
        return None
    try:
        body = orjson.loads(value)
        digest = body.get("digest", "")
        through = datetime.fromisoformat(body["through"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(digest, str) or through.tzinfo is None:
        return None
    return Checkpoint(through=through, digest=digest)


def check_templates(
    schedules: Sequence[Schedule], schemas: EdgeSchemas, now: datetime, *, max_record_bytes: int
) -> None:
    """Refuse, naming the schedule, a template whose events its type's schema or Kafka would not take."""
    for index, schedule in enumerate(schedules):
        try:
            (event,) = typed([fired_event(schedule, now, now)], schemas)
        except InvalidEvent as exc:
            raise ManifestError(f"schedules[{index}].event", f"{exc.field}: {exc.reason}") from exc
        size = record_size(to_record(event))
        if size > max_record_bytes:
            reason = f"its events are {size} bytes on Kafka; the limit is {max_record_bytes}: shrink the data"
            raise ManifestError(f"schedules[{index}].event.data", reason)


class TimerMetrics:
    """The timers' Prometheus metrics, registered in the gateway's registry."""

    def __init__(self, registry: Registry) -> None:
        self.leading = registry.gauge("bus_timer_leader", "1 while this gateway leads the timers, else 0.")
        self.leads = registry.counter(
            "bus_timer_leads_taken_total", "Times this gateway took the timer lead."
        )
        self.fired = registry.counter(
            "bus_timer_ticks_fired_total",
            "Ticks published (caught-up ones included), by schedule.",
            ["schedule"],
        )
        self.skipped = registry.counter(
            "bus_timer_ticks_skipped_total", "Missed ticks not fired under the catch-up policy.", ["schedule"]
        )


class Scheduler:
    """Fires `schedules` while this replica leads; `run(stop)` blocks, so give it a thread."""

    def __init__(
        self,
        settings: KafkaSettings,
        schedules: Sequence[Schedule],
        *,
        schemas: EdgeSchemas | None = None,
        metrics: TimerMetrics | None = None,
        clock: Clock = time.time,
        max_wait: float = 0.5,
    ) -> None:
        self._settings = settings
        self._schedules = tuple(schedules)
        self._schemas = schemas or EdgeSchemas()
        self._metrics = metrics or TimerMetrics(Registry())
        self._clock = clock
        self._max_wait = max_wait
        prefix = settings.prefix
        self._topic = naming.timer_topic(prefix)
        self._group = naming.timer_group(prefix)
        self._ingress = naming.ingress_topic(prefix)
        self._transactional_id = naming.transactional_id(self._group, "leader")
        self._assigned = False
        self._producer: Producer | None = None
        self._checkpoints: dict[str, Checkpoint] = {}
        self._failures = 0
        self._stop: threading.Event | None = None
        """Set while `running()`'s block runs: then the election thread runs while there are schedules."""
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self.fired = 0
        """Ticks this replica fired (committed)."""

    @property
    def leading(self) -> bool:
        """True while this replica holds the lead and may fire."""
        return self._producer is not None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run in a thread of its own for the block's duration; leaving hands the lead over.

        With no schedules the replica stays out of the election until `update` brings some.
        """
        stop = self._stop = threading.Event()
        self._start()
        try:
            yield
        finally:
            stop.set()
            with self._thread_lock:
                thread, self._thread = self._thread, None
            if thread is not None:
                await asyncio.to_thread(thread.join)

    def update(self, schedules: Sequence[Schedule], schemas: EdgeSchemas) -> None:
        """Fire these schedules from the next round on (any thread; a newly applied manifest).

        A new schedule starts from now, as at first start, and so does a changed one (its checkpoint
        was made for another timing); a dropped one fires no more and its checkpoint is deleted.
        """
        self._schemas = schemas
        self._schedules = tuple(schedules)
        log_event(logger, "timers_updated", schedules=[schedule.name for schedule in self._schedules])
        self._start()

    def _start(self) -> None:
        with self._thread_lock:
            stop = self._stop
            if self._schedules and self._thread is None and stop is not None and not stop.is_set():
                self._thread = threading.Thread(target=self.run, args=(stop,), name="bus-timers", daemon=True)
                self._thread.start()

    def run(self, stop: threading.Event) -> None:
        """Take part in the leader election and fire while leading, until `stop` is set.

        An unexpected error leaves the group (another replica takes the lead), is logged, and the
        replica joins again after a growing pause: the timers never stop silently.
        """
        pause = 1.0
        while not stop.is_set():
            try:
                self._elect_and_fire(stop)
            except Exception as exc:  # the thread must outlive any one failure
                log_event(logger, "timer_failed", reason=repr(exc), retry_in=pause, level=logging.ERROR)
                stop.wait(pause)
                pause = min(pause * 2, 30.0)

    def _elect_and_fire(self, stop: threading.Event) -> None:
        consumer = build(Consumer, consumer_config(self._settings, self._group))
        try:
            consumer.subscribe(
                [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
            wait = 0.0
            while not stop.is_set():
                # Heartbeats and rebalance callbacks; the checkpoints are read on taking the lead.
                consumer.poll(wait)
                wait = self._max_wait
                if self._assigned and self._producer is None:
                    self._take_lead()
                if self._producer is not None:
                    wait = self._fire_due()
        finally:
            self._drop_lead("stopping")
            self._assigned = False
            consumer.close()  # leaves the group: another replica takes the lead at once

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self._assigned = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self._assigned = False
            self._drop_lead("partition revoked")

    def _take_lead(self) -> None:
        """Fence the previous leader, then load the checkpoints it committed."""
        producer = build(Producer, producer_config(self._settings, transactional_id=self._transactional_id))
        try:
            producer.init_transactions(self._settings.delivery_timeout)
            records = read_to_end(self._settings, self._topic, timeout=self._settings.delivery_timeout)
        except (KafkaException, KafkaError) as exc:
            log_event(logger, "timer_lead_deferred", reason=str(exc), level=logging.WARNING)
            return
        self._checkpoints = {}
        for record in records:
            checkpoint = read_checkpoint(record.value())
            key = (record.key() or b"").decode()
            if checkpoint is None:
                self._checkpoints.pop(key, None)
            else:
                self._checkpoints[key] = checkpoint
        self._producer = producer
        self._metrics.leading.set(1)
        self._metrics.leads.inc()
        log_event(
            logger, "timer_lead_taken", schedules=len(self._schedules), checkpoints=len(self._checkpoints)
        )

    def _drop_lead(self, reason: str) -> None:
        if self._producer is None:
            return
        self._producer = None
        self._metrics.leading.set(0)
        log_event(logger, "timer_lead_dropped", reason=reason)

    def _fire_due(self) -> float:
        """Fire every due tick in one transaction; return the seconds until the next one (capped)."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        outputs: list[tuple[str, Record]] = []
        through: dict[str, Checkpoint] = {}
        decisions = {}
        for schedule in self._schedules:
            last = self._last_fired(schedule)
            decision = decisions[schedule.name] = due(schedule, last, now)
            if decision.skipped:
                log_event(logger, "timer_ticks_skipped", schedule=schedule.name, reason=decision.reason)
            events = [fired_event(schedule, tick, now) for tick in decision.ticks]
            outputs.extend((self._ingress, to_record(event)) for event in typed(events, self._schemas))
            if decision.ticks:
                through[schedule.name] = Checkpoint(
                    through=max(decision.ticks), digest=timing_digest(schedule)
                )
            elif decision.skipped or last is None:
                # Skipped ticks are handled; with no checkpoint for this timing yet (a new or changed
                # schedule), one starts now, so that a new leader catches up from here.
                through[schedule.name] = Checkpoint(through=now, digest=timing_digest(schedule))
        names = {schedule.name for schedule in self._schedules}
        dropped = [name for name in self._checkpoints if name not in names]
        if (through or dropped) and not self._commit(outputs, through, dropped):
            self._failures += 1
            return min(5.0, self._max_wait * 2.0**self._failures)  # back off while Kafka refuses
        self._failures = 0
        for name, decision in decisions.items():
            if decision.ticks:
                self._metrics.fired.inc(len(decision.ticks), schedule=name)
            if decision.skipped:
                self._metrics.skipped.inc(decision.skipped, schedule=name)
        return self._until_next(now)

    def _commit(
        self,
        outputs: Sequence[tuple[str, Record]],
        through: Mapping[str, Checkpoint],
        dropped: Sequence[str] = (),
    ) -> bool:
        producer = self._producer
        assert producer is not None
        timeout = self._settings.delivery_timeout
        try:
            producer.begin_transaction()
            for topic, record in outputs:
                produce_waiting(producer, topic, record)
            for name, checkpoint in through.items():
                produce_waiting(producer, self._topic, checkpoint_record(name, checkpoint))
            for name in dropped:  # the topic is compacted: a re-added schedule finds no checkpoint
                produce_waiting(producer, self._topic, tombstone_record(name))
            retrying(lambda: producer.commit_transaction(timeout))
        except KafkaException as exc:
            error = exc.args[0]
            log_event(logger, "timer_transaction_failed", reason=error.str(), level=logging.WARNING)
            abort_quietly(producer, timeout)
            # Fenced (a new leader) or unsure: take the lead afresh, from the committed checkpoints.
            self._drop_lead(error.str())
            return False
        self._checkpoints.update(through)
        for name in dropped:
            self._checkpoints.pop(name, None)
        self.fired += len(outputs)
        if outputs:
            log_event(logger, "timer_fired", ticks=len(outputs), schedules=sorted(through))
        if dropped:
            log_event(logger, "timer_checkpoints_deleted", schedules=sorted(dropped))
        return True

    def _last_fired(self, schedule: Schedule) -> datetime | None:
        return last_fired(schedule, self._checkpoints.get(schedule.name))

    def _until_next(self, now: datetime) -> float:
        upcoming = [
            tick
            for schedule in self._schedules
            if (tick := next_tick(schedule, max(now, self._last_fired(schedule) or now))) is not None
        ]
        if not upcoming:
            return self._max_wait
        return max(0.0, min(self._max_wait, (min(upcoming) - now).total_seconds()))

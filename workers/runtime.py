"""One worker replica of a function: consume, run handlers concurrently, commit outcomes exactly once.

The replica reads the function's topic and its retry topics with one consumer. Same-numbered
partitions of all of them belong to the same replica (the `range` assignor over topics of equal
partition counts), so a key's first attempts and its retries are decided in one place.

- `workers.lanes` decides which consumed records may start (ordering none/partition/key,
  concurrency, retry due times, keys blocked behind a retry);
- the handler runs in `workers.sandbox`'s host process, never in this one;
- `workers.verdict` turns each outcome into records (result, retry, dead letter, error event);
- `workers.progress` tracks, per partition, the lowest unfinished offset and the finished ones
  above it. Outcome records and those offsets (finished ones in the commit's metadata) commit in
  one Kafka transaction, so after a crash or rebalance nothing finished runs again for a result,
  and the committed offset never passes an unfinished event.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as ClientError

from bus import naming
from bus.avro_store import TypedReader
from bus.clock import now_rfc3339, rfc3339_at
from bus.errors import InvalidEvent, KafkaError, RegistryError
from bus.events import CloudEvent
from bus.kafka.config import build, consumer_config, producer_config
from bus.kafka.transactions import retrying
from bus.kafka_binding import Headers, Record, from_record, to_record
from bus.logs import log_event
from bus.manifest import Function
from bus.metrics import Registry
from bus.settings import KafkaSettings
from bus.typed_events import EdgeSchemas
from workers.invocation import Call, Finished, Outcome, Results, Run
from workers.lanes import MAX_IN_FLIGHT_BYTES, Item, Lanes
from workers.progress import Progress
from workers.retries import Attempt, attempt_of
from workers.sandbox import Sandbox
from workers.verdict import Judge, Verdict

__all__ = ["Replica", "WorkerMetrics"]

logger = logging.getLogger("bus.worker")

FETCH_BATCH = 500
"""Most records taken from the consumer per loop turn."""
MAX_WAITING = 5_000
"""Records of one partition number waiting to start before its fetching pauses."""
MAX_AHEAD = 2_000
"""Unfinished records of one partition before it pauses, where records finish out of order (key
and none modes): what a crash may run again. The holes they leave in the commit metadata are
bounded apart (`Progress.metadata_full`): a pause at a few fetches' worth would stall the
partition on every fetch (a paused partition's prefetched records are dropped)."""
MAX_RETRY_WAITING = 10_000
"""Waiting records of one retry partition before it pauses (they are kept in memory until due)."""
MAX_DRAIN = 240.0
"""Longest wait for in-flight work on a revocation: inside the group's rebalance timeout (300 s)."""
COMMIT_INTERVAL = 0.1
"""Seconds between transactions while outcomes keep coming (one transaction covers many): Kafka
Streams' commit interval under exactly-once. Every transaction costs the broker commit markers
on each partition it wrote and a write of the offsets: at 0.05 s and 2,000 records the broker
took 5-10 us per no-op event, at this interval 3-5 us, and the replica ran 5-20% faster
(docs/decisions/function-runtime.md). Results show up to this much later under load; alone,
an outcome commits at once (`_maybe_commit`)."""
COMMIT_RECORDS = 10_000
"""Outcome records that trigger a transaction before the interval is up."""
OUTCOME_WAIT = 0.005
"""Longest wait for an outcome while invocations are in flight (new records wait at most this)."""
IDLE_POLL = 0.1
"""Longest wait for a record while nothing is in flight."""
COMMIT_WAIT = 0.002
"""Longest wait for a record while a transaction is in flight and the next batch waits for it."""
RUN_SECONDS = 0.05
"""About how long a run of one lane's records should take the handler (from its mean duration):
long enough to share the per-run costs, short enough to drain quickly on a revocation."""
MAX_RUN = 256
"""Most records of one lane sent to the host as one run."""
BUNDLE_SECONDS = 0.005
"""About how much handler time (from its mean duration) a host run made of several lanes' runs
should hold at least, before lanes are spread over more host runs (up to `concurrency`)."""


REPLY_TOPIC_TIMEOUT = 5.0
"""Seconds to learn whether a synchronous caller's reply topic exists (once per topic)."""
FETCH_WAIT_MS = 100
"""Longest the broker holds an empty fetch: bounds the delay of a new replica's first records."""


class WorkerMetrics:
    """What a replica counts, served on `BUS_METRICS_PORT` (all labelled by function)."""

    def __init__(self, registry: Registry) -> None:
        self.invocations = registry.counter(
            "bus_worker_invocations_total", "Finished invocations by outcome", ("function", "outcome")
        )
        self.retries = registry.counter(
            "bus_worker_retries_total", "Events sent to a retry topic", ("function",)
        )
        self.dead_letters = registry.counter(
            "bus_worker_dead_letters_total", "Events sent to the DLQ", ("function", "error_type")
        )
        self.duration = registry.histogram(
            "bus_worker_invocation_seconds", "Handler wall-clock time", ("function",)
        )
        self.in_flight = registry.gauge("bus_worker_in_flight", "Invocations running now", ("function",))
        self.cold_start = registry.gauge(
            "bus_worker_cold_start_seconds", "Spawn to ready of the latest handler host", ("function",)
        )


class _Retry:
    """The payload of a retry record's Item (a first attempt's is its consumed message)."""

    __slots__ = ("attempt", "message")

    def __init__(self, message: Any, attempt: Attempt) -> None:
        self.message = message
        self.attempt = attempt


_Send = tuple[str, Any, Any, Any, int | None]
"""(topic, key, value, headers, partition or None) of a record to produce: bytes or text."""


@dataclass(slots=True)
class _Batch:
    """Outcome records and finished offsets not yet committed.

    `sends` holds records in the order they are to be produced: single ones, and the result
    records of `Results` (to the success destination), all of them.
    """

    sends: list[_Send | Results] = field(default_factory=list)
    records: int = 0
    touched: set[tuple[str, int]] = field(default_factory=set)
    since: float = 0.0


class Replica:
    """Consumes one function's topics and keeps the handler host busy until `stop` is set."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        prefix: str,
        function: Function,
        retry_topics: Sequence[str],
        sandbox: Sandbox,
        outcomes: queue.SimpleQueue[list[Finished]],
        reader: TypedReader,
        metrics: WorkerMetrics,
        schemas: EdgeSchemas | None = None,
        instance: str | None = None,
        clock: Callable[[], str] = now_rfc3339,
        max_in_flight_bytes: int = MAX_IN_FLIGHT_BYTES,
    ) -> None:
        """`sandbox` must deliver its outcomes to `outcomes`.

        `retry_topics` are the function's retry topics to read (`bus.topology.retry_topics`): its
        policy's and those an earlier policy left on the broker.

        `schemas`: what emitted events of typed types are written with, as the gateway writes them
        (None: every emitted event stays JSON).

        `max_in_flight_bytes` bounds the record values in flight (in this process and the host's
        queue), whatever the lanes allow: no run starts past it, but one record always may.

        `instance` names this replica among its group's (unique per live replica, stable across its
        restarts): its transactional id, so a restarted replica aborts the open transaction of the
        process it replaces at once instead of leaving read_committed readers waiting for the
        transaction timeout. None: a random one.
        """
        self._instance = instance or uuid.uuid4().hex[:12]
        self._settings = settings
        self._function = function
        self._sandbox = sandbox
        self._outcomes = outcomes
        self._reader = reader
        self._metrics = metrics
        self._clock = clock
        self._now = clock()
        """The time as RFC 3339 text, read once per loop turn (milliseconds; ~6 µs a read)."""
        self._group = naming.function_group(prefix, function.name)
        self._main = naming.function_topic(prefix, function.name)
        self._retry_topics = list(retry_topics)
        self._replies = naming.reply_topic(prefix, "")
        self._reply_topics: set[str] = set()
        self._judge = Judge(
            prefix=prefix,
            function=function,
            max_record_bytes=settings.max_record_bytes,
            clock=lambda: self._now,
            schemas=schemas,
        )
        # Lanes may start more than `concurrency` (of different lanes: keys or partitions): the
        # host runs `concurrency` at a time, first in first out, and the rest wait in its queue,
        # so a handler thread never waits for a round trip through this process.
        self._window = function.concurrency + max(4, function.concurrency)
        self._lanes = Lanes(function.ordering, self._window, max_bytes=max_in_flight_bytes)
        self._progress: dict[tuple[str, int], Progress] = {}
        self._running: dict[int, tuple[Item, str, CloudEvent | None]] = {}
        """Invocations in the host: their record, when their run was submitted, a typed event read here."""
        self._mean_duration = RUN_SECONDS
        self._run_length = 1
        self._abandoned: dict[int, Item] = {}
        """Invocations of forgotten partitions still in the host: they hold their lane until they end."""
        self._broken = False
        """A transaction failed without a way to abort it: commit nothing more, leave."""
        self._ids = itertools.count()
        self._assigned: set[tuple[str, int]] = set()
        self._batch = _Batch()
        self._catching_up: dict[int, set[str]] = {}
        self._paused: set[tuple[str, int]] = set()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._committer: ThreadPoolExecutor | None = None
        self._committing: Future[None] | None = None
        """The transaction in flight on the committer thread, while the loop goes on."""
        self.records_in = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set; then finish the work in flight, commit it and leave the group."""
        group = self._group
        self._producer = build(
            Producer,
            producer_config(self._settings, transactional_id=naming.transactional_id(group, self._instance)),
        )
        try:
            self._producer.init_transactions(30.0)
        except KafkaException as exc:
            raise KafkaError(f"cannot initialise transactions: {exc.args[0].str()}") from exc
        config = consumer_config(self._settings, group, assignment="range")
        config["enable.partition.eof"] = True
        # A fetch in flight when the assignment's offsets arrive holds the first records back for
        # up to this long (librdkafka's 500 ms default made a replica's first result ~1 s late).
        config["fetch.wait.max.ms"] = FETCH_WAIT_MS
        self._consumer = build(Consumer, config)
        self._consumer.subscribe(
            [self._main, *self._retry_topics],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        # One thread runs each transaction while the loop keeps the host busy; the next batch
        # collects meanwhile and starts when it ends (transactions never overlap).
        self._committer = ThreadPoolExecutor(1, thread_name_prefix=f"bus-commit-{self._function.name}")
        try:
            while not stop.is_set():
                self._turn(stop)
            self._drain(self._all_partitions())
        finally:
            self._committer.shutdown(wait=True)
            self._consumer.close()
            self._producer.flush(5.0)
            log_event(logger, "worker_stopped", function=self._function.name, records_in=self.records_in)

    # --- the loop -----------------------------------------------------------------------------

    def _turn(self, stop: threading.Event | None = None) -> None:
        consumer = self._need(self._consumer)
        self._now = self._clock()
        messages = consumer.consume(FETCH_BATCH, 0)
        outcomes = self._take_outcomes()
        if not messages and not outcomes:
            if self._running:
                with contextlib.suppress(queue.Empty):
                    outcomes = [self._outcomes.get(timeout=OUTCOME_WAIT)]
            elif messages := consumer.consume(1, self._idle_wait()):
                # consume(n, timeout) would wait the whole timeout unless n records arrive.
                messages += consumer.consume(FETCH_BATCH - 1, 0)
        if stop is not None and stop.is_set():
            # Stopping (SIGTERM; a changed function's replicas restart on the new spec): records
            # fetched now are not started. Never committed, they go to the partitions' next owner.
            messages = []
        self._accept(messages)
        self._finish(outcomes + self._take_outcomes())
        self._start_ready()
        self._maybe_commit()
        self._flow_control()

    def _idle_wait(self) -> float:
        wait = IDLE_POLL
        due = self._lanes.next_due()
        if due is not None:
            wait = min(wait, max(0.0, due - time.monotonic()))
        if self._batch.sends or self._batch.touched:
            wait = COMMIT_WAIT if self._committing is not None else 0.0
        return wait

    def _take_outcomes(self) -> list[list[Finished]]:
        taken: list[list[Finished]] = []
        with contextlib.suppress(queue.Empty):
            while True:
                taken.append(self._outcomes.get_nowait())
        return taken

    def _accept(self, messages: list[Any]) -> None:
        # confluent_kafka.Message's accessors are typed Optional; a consumed record has them all.
        if not messages:
            return
        now = time.monotonic()
        now_ms = time.time() * 1000
        main = self._main
        assigned = self._assigned
        progresses = self._progress
        lanes = self._lanes
        touched = self._batch.touched
        taken = 0
        # A fetch holds runs of records of one partition: what is looked up per partition is
        # looked up once a run, and its main records are offered together.
        current: tuple[str, int] | None = None
        progress: Progress | None = None
        fresh_main: list[Item] = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._consumer_error(message, error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if current is None or partition != current[1] or topic != current[0]:
                if fresh_main:
                    lanes.offer_main(current[1], fresh_main)  # type: ignore[index]  # set with them
                    fresh_main = []
                current = (topic, partition)
                if current not in assigned:
                    progress = None  # revoked while this fetch was under way: its next owner reads it
                    continue
                progress = progresses.get(current)
                if progress is None:
                    progress = progresses[current] = Progress(offset)
            elif progress is None:
                continue
            try:
                fresh = progress.add(offset)
            except ValueError:
                # The position moved back (an offset reset after log truncation): what was
                # tracked above it no longer describes this log.
                log_event(
                    logger,
                    "offset_moved_back",
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    level=logging.WARNING,
                )
                progress = progresses[current] = Progress(offset)
                fresh = progress.add(offset)
            taken += 1
            if not fresh:
                touched.add(current)  # finished before a crash or rebalance: its outcome is committed
                continue
            if topic == main:
                fresh_main.append(
                    Item(topic, partition, offset, message.key(), 0.0, False, message, len(message))
                )
                continue
            attempt = attempt_of(topic, partition, offset, message.headers())
            due = self._due(attempt, now, now_ms)
            retry = _Retry(message, attempt)
            lanes.offer(Item(topic, partition, offset, message.key(), due, True, retry, len(message)))
        if fresh_main:
            lanes.offer_main(current[1], fresh_main)  # type: ignore[index]  # set with them
        self.records_in += taken

    def _due(self, attempt: Attempt, now: float, now_ms: float) -> float:
        """The monotonic time a retry may start: when due, but at once if it will not run because
        the policy no longer allows it (`_spent`): it ends now, not after the old backoff."""
        if not attempt.due_ms or not self._judge.allows(attempt):
            return 0.0
        return now + (attempt.due_ms - now_ms) / 1000

    def _consumer_error(self, message: Any, error: ClientError) -> None:
        if error.fatal():
            raise KafkaError(f"consumer failed: {error.str()}")
        if error.code() != ClientError._PARTITION_EOF:
            log_event(logger, "consumer_error", reason=error.str())
            return
        number = message.partition() or 0
        waiting = self._catching_up.get(number)
        if waiting is not None:
            waiting.discard(message.topic() or "")
            if not waiting:
                del self._catching_up[number]
                self._lanes.release(number)

    def _start_ready(self) -> None:
        runs = self._lanes.ready_runs(time.monotonic(), self._run_length)
        if not runs:
            return
        started = self._now
        running = self._running
        ids = self._ids
        key_order = self._function.ordering == "key"
        by_partition: dict[tuple[str, int], list[list[Call]]] = {}
        for run in runs:
            calls: list[Call] = []
            for index, item in enumerate(run):
                payload = item.payload
                if type(payload) is _Retry:
                    message, attempt = payload.message, payload.attempt.number
                    if not self._judge.allows(payload.attempt):
                        self._apply(item, self._spent(item))  # the policy was changed to fewer attempts
                        continue
                else:
                    message, attempt = payload, 1
                key, value, headers = item.key, message.value(), message.headers()
                event = None
                if headers and headers[-1] != _JSON_TYPE and _is_avro(headers):
                    verdict, event = self._read_typed(item)
                    if verdict is not None:
                        self._apply(item, verdict)
                        if verdict.retrying and key_order:
                            # Its key waits for the retry: the rest of the run must not go ahead.
                            self._lanes.unstart(run[index + 1 :])
                            break
                        continue
                    assert event is not None
                    key, value, headers = to_record(event, structured=True)
                invocation_id = next(ids)
                running[invocation_id] = (item, started, event)
                calls.append((invocation_id, attempt, key, value, headers))
            if calls:
                by_partition.setdefault((run[0].topic, run[0].partition), []).append(calls)
        if by_partition:
            self._sandbox.submit_runs(self._bundle(by_partition, key_order))
        self._metrics.in_flight.set(len(running), function=self._function.name)

    def _bundle(self, by_partition: dict[tuple[str, int], list[list[Call]]], key_order: bool) -> list[Run]:
        """The host runs for lanes' runs: short ones of one partition's main records put together,
        up to the run length, into as many host runs as keep about BUNDLE_SECONDS of handler time
        each (at most `concurrency`, at least one a partition).

        A key's records still run in order, on one thread; the host's per-run costs (a frame
        entry, a thread hand-off, an outcome entry) are paid per host run, and with keys of a
        few records each (key and none modes) they were most of an event's; with fast handlers,
        fewer runs also keep fewer host threads contending for its interpreter lock. A slow
        handler's lanes stay a run each, up to `concurrency`. A failure in key mode skips the
        rest of its host run: they go back to their lanes (`Lanes.unstart`). Where each lane's
        calls begin is sent along (`Run.breaks`): behind a call that runs long the host hands
        the other lanes' calls back (`workers.host.HAND_BACK_AFTER`), so keys stay independent.
        """
        timeout = self._function.timeout
        lane_runs = [calls for runs in by_partition.values() for calls in runs]
        total = sum(map(len, lane_runs))
        wanted = math.ceil(total * self._mean_duration / BUNDLE_SECONDS)
        runs = max(1, min(self._function.concurrency, wanted))
        if len(lane_runs) == 1 or self._run_length == 1 or len(lane_runs) <= runs:
            # One lane, or a slow handler's lanes: each its own run, as many in parallel.
            return [Run(calls=calls, timeout=timeout, stop_on_failure=key_order) for calls in lane_runs]
        cap = min(self._run_length, -(-total // runs))
        # With one handler thread no other could run what a stalled call's bundle hands back:
        # it would only queue behind the runs sent meanwhile (later than staying in the bundle).
        handing_back = self._function.concurrency > 1
        bundles: list[Run] = []
        for (topic, _), partition_runs in by_partition.items():
            if topic != self._main:
                # A retry record runs alone: `Lanes.unstart` puts back main records only.
                bundles += [
                    Run(calls=calls, timeout=timeout, stop_on_failure=key_order) for calls in partition_runs
                ]
                continue
            bundle: list[Call] = []
            breaks: list[int] = []
            for calls in partition_runs:
                if bundle and len(bundle) + len(calls) > cap:
                    bundles.append(
                        Run(calls=bundle, timeout=timeout, stop_on_failure=key_order, breaks=tuple(breaks))
                    )
                    bundle = []
                    breaks = []
                if bundle and handing_back:
                    breaks.append(len(bundle))
                bundle += calls
            bundles.append(
                Run(calls=bundle, timeout=timeout, stop_on_failure=key_order, breaks=tuple(breaks))
            )
        return bundles

    def _read_typed(self, item: Item) -> tuple[Verdict | None, CloudEvent | None]:
        """An Avro event read with this function's own schema for its type (Avro resolution), or
        the verdict on a record that cannot be read."""
        record, attempt = _record(item), _attempt(item)
        try:
            return None, self._reader.read(from_record(record.key, record.value, record.headers))
        except InvalidEvent as exc:
            return self._judge.invalid(record, attempt, str(exc)), None
        except (RegistryError, KafkaError) as exc:
            # The schema store is unreachable: a failure of this attempt, retried per the policy.
            return self._judge.unreadable(record, attempt, exc, started=self._now), None

    def _spent(self, item: Item) -> Verdict:
        """The end of a retry whose attempt the retry policy no longer allows."""
        record, attempt = _record(item), _attempt(item)
        try:
            event = from_record(record.key, record.value, record.headers)
        except InvalidEvent as exc:
            return self._judge.invalid(record, attempt, str(exc))
        return self._judge.spent(record, event, attempt, started=self._now)

    def _finish(self, delivered: list[list[Finished]]) -> None:
        """Apply outcomes: plain ok ones (`Results`) here, in a few C-level list operations a run."""
        running = self._running
        progresses = self._progress
        lanes = self._lanes
        batch = self._batch
        sends = batch.sends
        touched = batch.touched
        target = self._function.destinations.on_success
        durations: list[float] = []
        skipped: list[Item] = []
        if not sends and not touched:
            batch.since = time.monotonic()
        for outcomes in delivered:
            for outcome in outcomes:
                if type(outcome) is not Results:
                    self._finish_other(outcome, skipped)  # type: ignore[arg-type]  # an Outcome
                    continue
                ids = outcome.ids
                entries = list(map(running.pop, ids, itertools.repeat(None, len(ids))))
                if None in entries:
                    self._finish_apart(outcome, entries)
                    continue
                items: list[Item] = [entry[0] for entry in entries]  # type: ignore[index]  # none is None
                lanes.finished_all(items)
                durations += outcome.durations
                # A host run holds one topic-partition's records (one lane's, or `_bundle`'s).
                key = (items[0].topic, items[0].partition)
                progress = progresses.get(key)
                if progress is None:
                    continue
                if target is not None and outcome.keys:  # always, for the host builds results only then
                    sends.append(outcome)
                    batch.records += len(ids)
                touched.add(key)
                progress.finish_all([item.offset for item in items])
        if skipped:
            lanes.unstart(skipped)
        if durations:
            self._finished_ok(durations)

    def _finished_ok(self, durations: list[float]) -> None:
        name = self._function.name
        self._metrics.duration.observe_many(durations, function=name)
        self._metrics.invocations.inc(len(durations), outcome="ok", function=name)
        self._learn(durations)

    def _finish_apart(self, results: Results, entries: list[Any]) -> None:
        """`Results` some of whose invocations were abandoned (their partition forgotten): one by one."""
        target = self._function.destinations.on_success
        durations: list[float] = []
        for n, entry in enumerate(entries):
            if entry is None:
                self._finish_abandoned(results.ids[n])
                continue
            item = entry[0]
            self._lanes.finished(item)
            durations.append(results.durations[n])
            key = (item.topic, item.partition)
            progress = self._progress.get(key)
            if progress is None:
                continue
            if target is not None and results.keys:
                self._batch.sends.append(
                    (target, results.keys[n], results.values[n], results.headers[n], None)
                )
                self._batch.records += 1
            self._batch.touched.add(key)
            progress.finish(item.offset)
        if durations:
            self._finished_ok(durations)

    def _learn(self, durations: list[float]) -> None:
        """Follow the handler's duration (every outcome's, failures too): runs last about
        RUN_SECONDS, long enough to share their costs, short enough for a drain."""
        count = len(durations)
        mean = sum(durations) / count
        self._mean_duration += (mean - self._mean_duration) * min(1.0, count / 64)
        self._run_length = max(1, min(MAX_RUN, int(RUN_SECONDS / max(self._mean_duration, 1e-6))))
        # Lanes' runs are put together into host runs (`_bundle`): with a fast handler, lanes of
        # a few records each may fly by the hundred, about two host runs' worth of records; not
        # more, for what waits in the host is walked by its collector and copied at a crash.
        self._lanes.allow(max(self._window, 2 * self._run_length))

    def _finish_abandoned(self, id: int) -> None:
        if (abandoned := self._abandoned.pop(id, None)) is not None:
            self._lanes.finished(abandoned)  # its lane (key) may run again: nothing is committed

    def _finish_other(self, outcome: Outcome, skipped: list[Item]) -> None:
        entry = self._running.pop(outcome.id, None)
        if entry is None:
            if outcome.kind == "skipped" and (abandoned := self._abandoned.pop(outcome.id, None)):
                self._lanes.unstart([abandoned])
            else:
                self._finish_abandoned(outcome.id)
            return
        item, started, event = entry
        if outcome.kind == "skipped":
            skipped.append(item)  # back to its lane, in order (a run's skips arrive together)
            return
        self._metrics.duration.observe(outcome.duration, function=self._function.name)
        self._learn([outcome.duration])  # a slow failure shortens the runs as a slow success does
        record, attempt = _record(item), _attempt(item)
        if outcome.kind == "invalid":
            self._apply(item, self._judge.invalid(record, attempt, outcome.message))
            return
        if event is None:
            try:
                event = from_record(record.key, record.value, record.headers)
            except InvalidEvent as exc:  # not read by a host (none could start), and not an event
                self._apply(item, self._judge.invalid(record, attempt, str(exc)))
                return
        now = time.time()
        # The call started when its outcome came less its duration: it may have waited in the
        # host's queue well past `started` (when its run was sent), and the error record's
        # attempt times are the handler's (the outcome is written within FLUSH_LATEST of its end).
        if outcome.duration > 0:
            started = max(started, rfc3339_at(now - outcome.duration))
        now_ms = int(now * 1000)
        self._apply(item, self._judge.decide(record, event, attempt, outcome, started=started, now_ms=now_ms))

    def _apply(self, item: Item, verdict: Verdict) -> None:
        key = (item.topic, item.partition)
        progress = self._progress.get(key)
        self._lanes.finished(item, retrying=verdict.retrying)
        if progress is None:
            return
        if not self._batch.sends and not self._batch.touched:
            self._batch.since = time.monotonic()
        sends = [
            (send.topic, send.record.key, send.record.value, list(send.record.headers), send.partition)
            for send in verdict.outputs
            if not send.topic.startswith(self._replies) or self._reply_topic_exists(send.topic)
        ]
        self._batch.sends.extend(sends)
        self._batch.records += len(sends)
        self._batch.touched.add(key)
        progress.finish(item.offset)
        name = self._function.name
        self._metrics.invocations.inc(outcome=verdict.label, function=name)
        if verdict.label == "ok":
            return
        if verdict.retrying:
            self._metrics.retries.inc(function=name)
        elif verdict.label == "dead_letter":
            self._metrics.dead_letters.inc(function=name, error_type=verdict.error_type)
        attempt = _attempt(item)
        log_event(
            logger,
            "invocation_failed",
            function=name,
            decision=verdict.label,
            attempt=attempt.number,
            origin=attempt.origin,
            error_type=verdict.error_type,
            reason=verdict.reason[:500],
            level=logging.WARNING,
        )

    def _reply_topic_exists(self, topic: str) -> bool:
        """Whether a synchronous caller's reply topic exists: producing to a missing one would abort
        every transaction of this replica (the reply is dropped instead: the caller times out)."""
        if topic in self._reply_topics:
            return True
        try:
            metadata = self._need(self._consumer).list_topics(topic, timeout=REPLY_TOPIC_TIMEOUT)
            found = metadata.topics.get(topic)
            exists = found is not None and found.error is None
        except KafkaException:
            exists = False
        if exists:
            self._reply_topics.add(topic)
        else:
            log_event(logger, "reply_dropped", topic=topic, reason="no such topic", level=logging.WARNING)
        return exists

    # --- transactions ---------------------------------------------------------------------------

    def _maybe_commit(self) -> None:
        if self._committing is not None:
            if not self._committing.done():
                return
            self._settle_commit()
        batch = self._batch
        if not batch.sends and not batch.touched:
            return
        if not self._running and not self._lanes.waiting():
            self._commit()  # idle: nothing to overlap with, so at once, on this thread (latency)
            return
        if not self._running:
            self._start_commit()  # what is waiting cannot start yet (a key behind its retry)
            return
        if batch.records >= COMMIT_RECORDS or time.monotonic() - batch.since >= COMMIT_INTERVAL:
            self._start_commit()

    def _start_commit(self) -> None:
        """Hand the batch's transaction to the committer thread (none may be in flight)."""
        prepared = self._prepare_commit()
        if prepared is not None:
            self._committing = self._need_committer().submit(self._transact, *prepared)

    def _commit(self) -> bool:
        """Produce the batch's records and commit its offsets in one transaction, now; False if aborted.

        Waits for a transaction in flight first (and settles it: it may have aborted).
        """
        if self._committing is not None and not self._settle_commit():
            return False
        prepared = self._prepare_commit()
        if prepared is None:
            return not self._broken
        try:
            self._transact(*prepared)
        except KafkaException as exc:
            return self._failed_commit(exc)
        return True

    def _prepare_commit(self) -> tuple[list[_Send | Results], list[TopicPartition], Any] | None:
        """Take the batch: its records, and its partitions' offsets and metadata as of now."""
        batch, self._batch = self._batch, _Batch()
        if self._broken or (not batch.sends and not batch.touched):
            return None
        offsets = [
            TopicPartition(topic, partition, progress.committable, metadata=progress.metadata())
            for topic, partition in batch.touched
            if (progress := self._progress.get((topic, partition))) is not None
        ]
        metadata = self._need(self._consumer).consumer_group_metadata() if offsets else None
        return batch.sends, offsets, metadata

    def _transact(self, sends: list[_Send | Results], offsets: list[TopicPartition], group: Any) -> None:
        """One transaction: the records and the offsets (on the committer thread, or the loop's)."""
        producer = self._need(self._producer)
        producer.begin_transaction()
        _produce_all(producer, sends, self._function.destinations.on_success)
        if offsets:
            retrying(lambda: producer.send_offsets_to_transaction(offsets, group, 30.0))
        retrying(lambda: producer.commit_transaction(30.0))

    def _settle_commit(self) -> bool:
        """Wait for the transaction in flight and act on how it ended; False if it aborted."""
        committing, self._committing = self._committing, None
        if committing is None:
            return True
        try:
            committing.result()
        except KafkaException as exc:
            return self._failed_commit(exc)
        return True

    def _failed_commit(self, exc: KafkaException) -> bool:
        error: ClientError = exc.args[0]
        if not error.txn_requires_abort():
            self._broken = True
            raise KafkaError(f"transaction failed for {self._group!r}: {error.str()}") from exc
        log_event(logger, "transaction_aborted", group=self._group, reason=error.str(), level=logging.WARNING)
        try:
            self._need(self._producer).abort_transaction(30.0)
        except KafkaException as abort_exc:
            raise KafkaError(
                f"cannot abort the transaction of {self._group!r}: {abort_exc.args[0].str()}"
            ) from abort_exc
        self._restart_from_committed()
        return False

    def _need_committer(self) -> ThreadPoolExecutor:
        if self._committer is None:
            raise RuntimeError("Replica used before run()")
        return self._committer

    def _restart_from_committed(self) -> None:
        """After an aborted transaction: forget everything uncommitted and read again from the commits."""
        consumer = self._need(self._consumer)
        partitions = consumer.assignment()
        self._forget(partitions)
        self._load(partitions, seek=True)

    # --- rebalancing ----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log_event(logger, "partitions_assigned", group=self._group, partitions=_names(partitions))
        self._settle_commit()  # the committed offsets read next must include it
        self._load(partitions, seek=False)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish what is running (bounded by the function's timeout) and commit it: the next owner
        # starts after it, so nothing runs twice (RELIABILITY R3). Waiting records are handed back.
        self._drain(partitions)
        self._forget(partitions)
        log_event(logger, "partitions_revoked", group=self._group, partitions=_names(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another replica owns them already (this one was too slow): committing now would be fenced.
        # A transaction in flight ends first (committed, or fenced and aborted: then forgotten too).
        self._settle_commit()
        self._forget(partitions)
        log_event(
            logger, "partitions_lost", group=self._group, partitions=_names(partitions), level=logging.WARNING
        )

    def _drain(self, partitions: list[TopicPartition]) -> None:
        if self._broken:
            return
        numbers = {tp.partition for tp in partitions}
        deadline = time.monotonic() + min(self._function.timeout + 5.0, MAX_DRAIN)
        while (
            any(entry[0].partition in numbers for entry in self._running.values())
            and time.monotonic() < deadline
        ):
            with contextlib.suppress(queue.Empty):
                self._finish([self._outcomes.get(timeout=0.05), *self._take_outcomes()])
        self._finish(self._take_outcomes())
        self._commit()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """Drop all state of `partitions`; work still running for them is abandoned (never committed).

        The uncommitted batch is dropped too: with the eager `range` assignor, partitions are
        always revoked, lost or restarted all at once.
        """
        numbers = {tp.partition for tp in partitions}
        keys = {(tp.topic, tp.partition) for tp in partitions}
        for key in keys:
            self._progress.pop(key, None)
        self._assigned -= keys
        if paused := self._paused & keys:
            self._paused -= paused
            with contextlib.suppress(KafkaException):  # assigned again later, they start unpaused
                self._need(self._consumer).resume([TopicPartition(t, n) for t, n in paused])
        for number in numbers:
            self._lanes.drop(number)
            self._catching_up.pop(number, None)
        for invocation_id, entry in list(self._running.items()):
            if entry[0].partition in numbers:
                # Still running in the host: its lane stays busy until its outcome arrives (and is
                # dropped), so the same key never runs twice at once after a restart from the commit.
                self._abandoned[invocation_id] = self._running.pop(invocation_id)[0]
        self._batch = _Batch()

    def _load(self, partitions: list[TopicPartition], *, seek: bool) -> None:
        """Start each partition at its committed offset, skipping what its commit says is finished."""
        consumer = self._need(self._consumer)
        if not partitions:
            return
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        try:
            committed = consumer.committed(partitions, 30.0)
        except KafkaException as exc:
            raise KafkaError(
                f"cannot read the committed offsets of {self._group!r}: {exc.args[0].str()}"
            ) from exc
        for tp in committed:
            if tp.error is not None:
                # Treating it as "never committed" would replay the partition from its start.
                raise KafkaError(
                    f"cannot read the committed offset of {tp.topic}[{tp.partition}]: {tp.error.str()}"
                )
            if tp.offset >= 0:
                self._progress[(tp.topic, tp.partition)] = Progress.resume(tp.offset, tp.metadata)
            if seek:
                consumer.seek(
                    TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                )
        if self._function.ordering == "key" and self._retry_topics:
            # A key whose retry is pending must not run ahead of it: read the retry topics' pending
            # records (to their end) before starting any first attempt of the partition.
            for number in {tp.partition for tp in partitions if tp.topic == self._main}:
                retry = {tp.topic for tp in partitions if tp.partition == number and tp.topic != self._main}
                if retry:
                    self._catching_up[number] = retry
                    self._lanes.hold(number)

    def _flow_control(self) -> None:
        """Pause partitions that would outgrow their bounds; resume them when they have room.

        A function partition pauses when its commit metadata is nearly full, when records that
        finish out of order pile up (MAX_AHEAD), or when too many wait to start; a retry
        partition only when very many wait for their due time (MAX_RETRY_WAITING).
        """
        consumer = self._need(self._consumer)
        ahead = MAX_AHEAD if self._function.ordering != "partition" else MAX_WAITING
        full = {key for key, progress in self._progress.items() if self._over(key, progress, ahead)}
        to_pause = full - self._paused
        to_resume = {
            key
            for key in self._paused - full
            if (progress := self._progress.get(key)) is None or not self._over(key, progress, ahead // 2)
        }
        if to_pause:
            consumer.pause([TopicPartition(topic, number) for topic, number in to_pause])
            self._paused |= to_pause
            log_event(logger, "partitions_paused", group=self._group, partitions=sorted(to_pause))
        if to_resume:
            consumer.resume([TopicPartition(topic, number) for topic, number in to_resume])
            self._paused -= to_resume

    def _over(self, key: tuple[str, int], progress: Progress, ahead: int) -> bool:
        if progress.metadata_full:
            return True
        if key[0] != self._main:
            return progress.unfinished > MAX_RETRY_WAITING
        return progress.unfinished > ahead or self._lanes.waiting(key[1]) > MAX_WAITING

    def _all_partitions(self) -> list[TopicPartition]:
        return list(self._need(self._consumer).assignment())

    @staticmethod
    def _need(client: Consumer | Producer | None) -> Any:
        if client is None:
            raise RuntimeError("Replica used before run()")
        return client


def _produce_all(producer: Producer, sends: list[_Send | Results], target: str | None) -> None:
    """Produce into the open transaction (`Results` to `target`), waiting while the local queue is full."""
    produce = producer.produce
    for send in sends:
        if isinstance(send, Results):
            for key, value, headers in zip(send.keys, send.values, send.headers, strict=True):
                while True:
                    try:
                        produce(target, value, key, headers=headers)  # type: ignore[arg-type]  # text
                        break
                    except BufferError:
                        producer.poll(0.01)
            continue
        topic, record_key, record_value, record_headers, partition = send
        while True:
            try:
                if partition is None:
                    produce(topic, value=record_value, key=record_key, headers=record_headers)
                else:
                    produce(
                        topic, value=record_value, key=record_key, headers=record_headers, partition=partition
                    )
                break
            except BufferError:
                producer.poll(0.01)


_JSON_TYPE = ("content-type", b"application/json")
"""The last header of most records bus writes: not Avro, at the cost of a tuple comparison."""


def _is_avro(headers: Headers) -> bool:
    """Whether a binary-mode record's content type is Avro (content-type comes last, as bus writes)."""
    for name, value in reversed(headers):
        if name == "content-type":
            # As bus.avro_codec.is_avro reads it: parameters and spaces aside, any case.
            return bool(value) and value.split(b";", 1)[0].strip().lower() == b"application/avro"
    return False


def _record(item: Item) -> Record:
    payload = item.payload
    message = payload.message if type(payload) is _Retry else payload
    headers = message.headers()
    return Record(message.key(), message.value(), tuple(headers) if headers else ())


def _attempt(item: Item) -> Attempt:
    payload = item.payload
    if type(payload) is _Retry:
        attempt: Attempt = payload.attempt
        return attempt
    return Attempt(number=1, first_time="", topic=item.topic, partition=item.partition, offset=item.offset)


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]

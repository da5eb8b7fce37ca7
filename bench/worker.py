"""The function runtime against the raw limits: one worker replica (`python -m workers`) at a time.

Each measurement writes a manifest of one function (a name of its own, so topics and group of
its own) and the bench's handler module to a temporary folder, fills the function's topic, and
starts one replica as a child process, as `bus up` does. Results are read from the results
topic with read_committed, so an event counts once the transaction holding its result committed.

- Throughput runs from the first results read (which start the clock and are not counted) to
  the last: the replica's start, group join and first transaction are its cold start, reported
  apart. The no-op figures' limit is bench.router's plain loop copying the same input records
  to one topic (`worker.raw`).
- Latency: one event in flight, publish to its result read. Each sample follows a raw round trip
  of the same record (produce, read back) on the same producer, so both see the same load.
- Cold start, per replica started: spawn to its `worker_ready` line (that line's timestamp), the
  handler host's own spawn to ready (the line's `cold_start_ms`), spawn to the first result read.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from bench.broker import BenchKafka
from bench.cpu import process_cpu_seconds
from bench.processes import Child
from bench.raw import next_batch, producer_settings
from bench.router import _Copy, _plain_loop  # the router's raw-loop limit, on this bench's records
from bench.samples import Latency, Throughput
from bench.sizes import Sizes
from bus import naming
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.config import consumer_config
from bus.kafka.transactions import produce_waiting
from bus.kafka_binding import Record, header, to_record
from bus.manifest import Function, read
from bus.topology import function_topics
from workers.runtime import FETCH_BATCH

__all__ = [
    "KEYS",
    "NOOP_RUNS",
    "SLEEP_CONCURRENCY",
    "SLEEP_KEYS",
    "SLEEP_PARTITIONS",
    "Spec",
    "Start",
    "Starts",
    "manifest_text",
    "noop_rate",
    "raw_rate",
    "records",
    "round_trips",
    "sleep_rate",
    "steady_rate",
]

PARTITIONS = 3
"""Partitions of the no-op functions' topics (the manifest default)."""
KEYS = 1024
"""Distinct partition keys of the no-op workload."""
NOOP_RUNS = (("partition", 1), ("partition", 16), ("key", 16))
"""(ordering, concurrency) of the no-op throughput figures."""
SLEEP_PARTITIONS = 2
SLEEP_KEYS = 64
SLEEP_CONCURRENCY = 64
_WARM_TRIPS = 5
"""Round trips before the latency samples (connections, fetch sessions): not samples."""
_START_TIMEOUT = 60.0
"""Seconds a replica may take from spawn to its first result."""
_STOP_GRACE = 15.0
_REPO = Path(__file__).resolve().parent.parent
_EVENT_TYPE = "bench.work"

_HANDLERS = '''\
"""The bench's functions: one that does nothing, one that waits 20 ms (I/O-bound work)."""

import time


def noop(event, ctx):
    return None


def sleep20(event, ctx):
    time.sleep(0.02)
'''


@dataclass(frozen=True, slots=True)
class Spec:
    """One function of a measurement: its name, handler (`noop` or `sleep20`) and how it runs."""

    name: str
    handler: str
    ordering: str
    concurrency: int
    partitions: int = PARTITIONS


@dataclass(frozen=True, slots=True)
class Start:
    """One replica's cold start, in milliseconds from its spawn."""

    ready_ms: float
    """Spawn to the replica's `worker_ready` line (topics ensured, handler host ready)."""
    host_ms: float
    """The handler host's own spawn to ready, as the worker reports it."""
    first_result_ms: float
    """Spawn to the first result of its pre-filled topic read (group joined, one transaction)."""


@dataclass(slots=True)
class Starts:
    """The cold starts of every replica a bench run started."""

    taken: list[Start] = field(default_factory=list)

    def latencies(self) -> dict[str, Latency]:
        """Each cold-start span as a Latency of one sample per replica."""
        spans = {
            "ready": [s.ready_ms for s in self.taken],
            "host": [s.host_ms for s in self.taken],
            "first_result": [s.first_result_ms for s in self.taken],
        }
        return {name: Latency(tuple(samples), len(samples)) for name, samples in spans.items()}


def prefix(kafka: BenchKafka) -> str:
    """The topic prefix of every function this group runs (each under a name of its own)."""
    return f"{kafka.platform_prefix}-worker"


def manifest_text(prefix: str, spec: Spec) -> str:
    """A manifest (YAML) of the one function `spec`, its handler in the bench's module."""
    return (
        f"prefix: {prefix}\n"
        "functions:\n"
        f"  {spec.name}:\n"
        f"    handler: benchworker:{spec.handler}\n"
        f"    partitions: {spec.partitions}\n"
        f"    ordering: {spec.ordering}\n"
        f"    concurrency: {spec.concurrency}\n"
    )


def records(count: int, *, keys: int, label: str) -> list[Record]:
    """`count` binary-mode CloudEvents as the router writes them, keyed over `keys` partition keys."""
    return [
        to_record(
            CloudEvent.create(
                id=f"{label}-{n}",
                source="bench/worker",
                type=_EVENT_TYPE,
                time="2025-01-01T00:00:00Z",
                datacontenttype="application/json",
                extensions={"partitionkey": f"k{n % keys}"},
                data={"seq": n, "pad": "x" * 64},
            )
        )
        for n in range(count)
    ]


def steady_rate(arrivals: Sequence[tuple[float, int]], target: int) -> Throughput:
    """Results per second from `arrivals`, (monotonic time, results) per read in order.

    The first read starts the clock and its results are not counted: they waited for the
    replica's start, so counting them would credit the cold start to the steady rate.
    """
    if not arrivals:
        return Throughput(0, 0.0, target)
    started, first = arrivals[0]
    counted = sum(n for _, n in arrivals[1:])
    return Throughput(counted, arrivals[-1][0] - started, max(0, target - first))


# --- measurements ---------------------------------------------------------------------------------


def raw_rate(kafka: BenchKafka, sizes: Sizes, *, label: str = "worker-raw") -> Throughput:
    """The limit: the plain loop copying `sizes.events` no-op workload records to one topic.

    More records than a worker run reads: the loop copies them many times faster, and a run of
    well under a second is mostly its own noise. They cycle `sizes.worker_events` distinct ones.
    `label` names its topics and group (measured again after the no-op figures: the drift).
    """
    source = kafka.topic(f"{label}-in", PARTITIONS)
    pool = records(min(sizes.worker_events, sizes.events), keys=KEYS, label="raw")
    _fill(kafka, source, itertools.islice(itertools.cycle(pool), sizes.events), sizes)
    return _plain_loop(
        kafka,
        sizes,
        source=source,
        group=kafka.group(label),
        transform=_Copy(kafka.topic(f"{label}-out", PARTITIONS)),
        total=sizes.events,
        max_batch=FETCH_BATCH,  # the replica's own fetch
    )


def noop_rate(
    kafka: BenchKafka, sizes: Sizes, starts: Starts, *, ordering: str, concurrency: int
) -> tuple[Throughput, dict[str, float]]:
    """Results per second of one replica running the no-op handler on a filled topic, and CPU shares."""
    spec = Spec(f"noop-{ordering}-c{concurrency}", "noop", ordering, concurrency)
    return _throughput(kafka, sizes, starts, spec, events=sizes.worker_events, keys=KEYS)


def sleep_rate(
    kafka: BenchKafka, sizes: Sizes, starts: Starts, *, ordering: str
) -> tuple[Throughput, dict[str, float]]:
    """Results per second of one replica running a 20 ms handler, 2 partitions, 64 keys, concurrency 64."""
    spec = Spec(f"sleep20-{ordering}", "sleep20", ordering, SLEEP_CONCURRENCY, SLEEP_PARTITIONS)
    events = sizes.worker_key_events if ordering == "key" else sizes.worker_partition_events
    return _throughput(kafka, sizes, starts, spec, events=events, keys=SLEEP_KEYS)


def round_trips(kafka: BenchKafka, sizes: Sizes, starts: Starts) -> tuple[Latency, Latency]:
    """(publish → result read, raw produce → read back) in milliseconds, one record in flight.

    The replica runs the no-op handler with ordering partition, concurrency 1. Raw and worker
    round trips alternate, both with bus's producer configuration and the same records.
    """
    spec = Spec("latency", "noop", "partition", 1)
    samples = sizes.worker_latency_samples
    trips = records(_WARM_TRIPS + samples + 1, keys=KEYS, label="latency")
    raw_topic = kafka.topic("worker-raw-latency", 1)
    worker_ms: list[float] = []
    raw_ms: list[float] = []
    with _Function(kafka, spec) as function:
        # One pre-filled event: the replica's start is timed to its result like every other's.
        _fill(kafka, function.topic, trips[:1], sizes)
        producer = Producer(producer_settings(kafka.settings))
        raw_reader = Consumer(consumer_config(kafka.settings, kafka.group("worker-raw-latency")))
        raw_reader.assign([TopicPartition(raw_topic, 0, OFFSET_BEGINNING)])
        with closing(raw_reader), function.results() as results, function.replica() as replica:
            replica.wait_ready(time.monotonic() + _START_TIMEOUT)
            first = _await_result(results, trips[0], replica, time.monotonic() + _START_TIMEOUT)
            starts.taken.append(replica.start(first))
            deadline = time.monotonic() + 2 * sizes.deadline
            for n, record in enumerate(trips[1:]):
                if time.monotonic() >= deadline:
                    break
                sent = time.monotonic()
                produce_waiting(producer, raw_topic, record)
                producer.poll(0)
                _await_any(raw_reader, replica, deadline)
                raw = time.monotonic() - sent
                sent = time.monotonic()
                produce_waiting(producer, function.topic, record)
                producer.poll(0)
                arrived = _await_result(results, record, replica, deadline)
                if n >= _WARM_TRIPS:
                    raw_ms.append(raw * 1000)
                    worker_ms.append((arrived - sent) * 1000)
        producer.flush(5.0)
    return Latency(tuple(worker_ms), samples), Latency(tuple(raw_ms), samples)


# --- one function, its replica and its results ------------------------------------------------


class _Replica:
    """A running `python -m workers` child, its log and when it was spawned."""

    def __init__(self, child: Child, spawned_wall: float, spawned: float) -> None:
        self.child = child
        self._spawned_wall = spawned_wall
        self._spawned = spawned
        self._ready: dict[str, Any] = {}
        self.host_pid: int | None = None

    def check_alive(self) -> None:
        """Raise with the end of its log if the replica exited."""
        code = self.child.process.poll()
        if code is not None:
            tail = self.child.log.read_text(errors="replace").strip().splitlines()[-8:]
            raise RuntimeError(f"worker {self.child.name} exited with {code}: " + " | ".join(tail))

    def wait_ready(self, deadline: float) -> None:
        """Wait for its `worker_ready` line (and note its handler host's pid)."""
        while time.monotonic() < deadline:
            self.check_alive()
            for line in self.child.log.read_bytes().splitlines():
                with contextlib.suppress(orjson.JSONDecodeError):
                    doc = orjson.loads(line)
                    if doc.get("event") == "host_ready":
                        self.host_pid = doc.get("pid")
                    elif doc.get("event") == "worker_ready":
                        self._ready = doc
                        return
            time.sleep(0.05)  # polling a child's log file: there is nothing to wait on
        raise RuntimeError(f"worker {self.child.name} not ready within {_START_TIMEOUT:g}s")

    def start(self, first_result: float) -> Start:
        """Its cold start, given when its first result was read (monotonic)."""
        stamp = datetime.strptime(self._ready["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return Start(
            ready_ms=round((stamp.timestamp() - self._spawned_wall) * 1000, 1),
            host_ms=float(self._ready["cold_start_ms"]),
            first_result_ms=round((first_result - self._spawned) * 1000, 1),
        )

    def cpu_seconds(self) -> dict[str, float | None]:
        """CPU seconds used so far by the replica, its handler host and this process."""
        return {
            "worker": self.child.cpu_seconds(),
            "host": process_cpu_seconds(self.host_pid) if self.host_pid else None,
            "bench_reader": time.process_time(),
        }


class _Function:
    """A temporary folder holding one function's manifest and handler, its topics created."""

    def __init__(self, kafka: BenchKafka, spec: Spec) -> None:
        self._kafka = kafka
        self._spec = spec
        self._folder = Path()
        self._manifest = Path()
        self.topic = naming.function_topic(prefix(kafka), spec.name)
        self.results_topic = naming.result_topic(prefix(kafka), spec.name)

    def __enter__(self) -> _Function:
        self._folder = Path(tempfile.mkdtemp(prefix="bus-bench-worker-"))
        try:
            (self._folder / "benchworker.py").write_text(_HANDLERS)
            self._manifest = self._folder / "bus.yaml"
            self._manifest.write_text(manifest_text(prefix(self._kafka), self._spec))
            function: Function = read(self._manifest).functions[self._spec.name]
            ensure_topics(self._kafka.settings, function_topics(prefix(self._kafka), function))
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)

    def results(self) -> closing[Consumer]:
        """A read_committed reader of the results topic from its start (assigned, no group)."""
        consumer = Consumer(
            consumer_config(self._kafka.settings, self._kafka.group(f"{self._spec.name}-res"))
        )
        consumer.assign(
            [TopicPartition(self.results_topic, p, OFFSET_BEGINNING) for p in range(self._spec.partitions)]
        )
        return closing(consumer)

    @contextmanager
    def replica(self) -> Iterator[_Replica]:
        """One replica of the function, stopped (SIGTERM, then SIGKILL) however the block ends."""
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self._kafka.bootstrap,
            "BUS_HOME": str(self._folder / "home"),
            "BUS_PREFIX": prefix(self._kafka),
            "BUS_LOG_LEVEL": "INFO",
        }
        env.pop("BUS_METRICS_PORT", None)
        log = self._folder / "worker.log"
        command = [sys.executable, "-m", "workers", "-f", str(self._manifest), "--function", self._spec.name]
        with log.open("wb") as out:
            spawned_wall, spawned = time.time(), time.monotonic()
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=_REPO
            )
        try:
            yield _Replica(Child(self._spec.name, process, log), spawned_wall, spawned)
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _throughput(
    kafka: BenchKafka, sizes: Sizes, starts: Starts, spec: Spec, *, events: int, keys: int
) -> tuple[Throughput, dict[str, float]]:
    """Fill the function's topic with `events`, start a replica, read results until all arrived.

    Also returns the CPU seconds per second of the replica, its host and this process (the
    results reader) between the first results read and the last.
    """
    with _Function(kafka, spec) as function:
        _fill(kafka, function.topic, records(events, keys=keys, label=spec.name), sizes)
        with function.results() as results, function.replica() as replica:
            replica.wait_ready(time.monotonic() + _START_TIMEOUT)
            arrivals: list[tuple[float, int]] = []
            before: dict[str, float | None] = {}
            deadline = time.monotonic() + _START_TIMEOUT
            total = 0
            while total < events and time.monotonic() < deadline:
                batch = next_batch(results, FETCH_BATCH, 0.1)
                if not batch:
                    replica.check_alive()
                    continue
                now = time.monotonic()
                if not arrivals:
                    before = _cpu(replica, kafka)
                    starts.taken.append(replica.start(now))
                    deadline = now + sizes.deadline
                arrivals.append((now, len(batch)))
                total += len(batch)
            after = _cpu(replica, kafka)
    rate = steady_rate(arrivals, events)
    return rate, _shares(before, after, rate.seconds)


def _cpu(replica: _Replica, kafka: BenchKafka) -> dict[str, float | None]:
    """CPU seconds so far of the replica, its host, this process and the broker (when local)."""
    broker = process_cpu_seconds(kafka.broker_pid) if kafka.broker_pid else None
    return {**replica.cpu_seconds(), "broker": broker}


def _shares(before: dict[str, float | None], after: dict[str, float | None], wall: float) -> dict[str, float]:
    shares: dict[str, float] = {}
    for name, start in before.items():
        end = after.get(name)
        if start is not None and end is not None and wall > 0:
            shares[name] = round((end - start) / wall, 2)
    return shares


def _await_result(results: Consumer, record: Record, replica: _Replica, deadline: float) -> float:
    """When the result of `record`'s event was read (monotonic)."""
    wanted = header(list(record.headers), "ce_id")
    while time.monotonic() < deadline:
        for message in next_batch(results, FETCH_BATCH, 0.1):
            # A consumed record's headers are a list of (str, bytes); the stubs allow a producer's dict.
            if header(cast("list[tuple[str, bytes]]", message.headers()), "ce_causationid") == wanted:
                return time.monotonic()
        replica.check_alive()
    raise RuntimeError(f"no result for {wanted!r} before the deadline")


def _await_any(reader: Consumer, replica: _Replica, deadline: float) -> None:
    while time.monotonic() < deadline:
        if next_batch(reader, 1, 0.1):
            return
        replica.check_alive()
    raise RuntimeError("the raw round trip's record was not read back before the deadline")


def _fill(kafka: BenchKafka, topic: str, batch: Iterable[Record], sizes: Sizes) -> None:
    """Produce `batch` to `topic` with bus's producer configuration (as the router writes it)."""
    acknowledged = 0
    produced = 0

    def delivered(err: KafkaError | None, msg: Message) -> None:
        nonlocal acknowledged
        acknowledged += err is None

    producer = Producer({**producer_settings(kafka.settings), "on_delivery": delivered})
    for record in batch:
        produce_waiting(producer, topic, record)
        produced += 1
        if produced % 1000 == 0:
            producer.poll(0)
    if producer.flush(max(30.0, sizes.deadline)) or acknowledged != produced:
        raise RuntimeError(f"filling {topic!r}: {acknowledged} of {produced} records acknowledged")

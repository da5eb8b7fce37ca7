"""The local autoscaler (bus.supervisor, what `bus up` runs) against its own limits, on one broker.

- Drain: a backlog of `sizes.autoscale_backlog` events whose handler sleeps 10 ms waits on a
  4-partition function topic; a supervisor starts and runs until every result is read
  (read_committed). Autoscaled: `min: 1, max: 4`, so it starts one replica and scales out on the
  lag. Pinned: `min: 4, max: 4`, four replicas from the start: the limit. Goal: autoscaled time
  ÷ pinned time ≤ 1.25.
- From zero: `min: 0`; the supervisor has stopped every replica; one event is published and
  timed to its result read. The limit: the same event, with a replica started directly (`python
  -m workers`, what a supervisor starts) at the moment of publishing, to its result read: the
  cold start of a replica, which scaling from zero adds only its detection and decision to.
  Goal: under 2 s.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.broker import BenchKafka
from bench.samples import Latency
from bench.sizes import Sizes
from bus import naming
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.config import consumer_config
from bus.kafka.transactions import produce_waiting
from bus.kafka_binding import to_record
from bus.manifest import Function, read
from bus.supervisor import Supervisor
from bus.topology import function_topics

__all__ = ["drain_time", "from_zero"]

PARTITIONS = 4
_HANDLERS = '''\
"""The autoscaling bench's function: 10 ms of waiting (I/O-bound work) per event."""

import time


def sleep10(event, ctx):
    time.sleep(0.01)
'''
_START_TIMEOUT = 60.0
_names = itertools.count()


class _Scaled:
    """A temporary folder with one function's manifest and handler; its topics created."""

    def __init__(self, kafka: BenchKafka, scaling: str) -> None:
        self.kafka = kafka
        self.prefix = f"{kafka.platform_prefix}-scale{next(_names)}"
        self.name = "drained"
        self.folder = Path(tempfile.mkdtemp(prefix="bus-bench-autoscale-"))
        (self.folder / "benchscale.py").write_text(_HANDLERS)
        self.manifest = self.folder / "bus.yaml"
        self.manifest.write_text(
            f"prefix: {self.prefix}\nfunctions:\n  {self.name}:\n"
            f"    handler: benchscale:sleep10\n    partitions: {PARTITIONS}\n"
            f"    ordering: partition\n    concurrency: 1\n    scaling: {{{scaling}}}\n"
        )
        function: Function = read(self.manifest).functions[self.name]
        ensure_topics(kafka.settings, function_topics(self.prefix, function))
        self.topic = naming.function_topic(self.prefix, self.name)
        self.producer = Producer(
            {"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "linger.ms": 1}
        )
        self.environ = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "BUS_LOG_LEVEL": "INFO",
        }

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def publish(self, count: int, label: str) -> None:
        """`count` events on the function topic, spread over 64 keys, all acknowledged."""
        producer = self.producer
        for n in range(count):
            event = CloudEvent.create(
                id=f"{label}-{n}",
                source="bench/autoscale",
                type="bench.work",
                extensions={"partitionkey": f"k{n % 64}"},
                data={"seq": n},
            )
            produce_waiting(producer, self.topic, to_record(event))
        if producer.flush(30) != 0:
            raise RuntimeError(f"{label}: the broker did not acknowledge every event")

    def results(self) -> closing[Consumer]:
        """A read_committed reader of the results topic from its start (assigned, no group)."""
        consumer = Consumer(consumer_config(self.kafka.settings, self.kafka.group(f"{self.prefix}-res")))
        topic = naming.result_topic(self.prefix, self.name)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        return closing(consumer)

    @contextmanager
    def supervisor(self) -> Iterator[Supervisor]:
        """The supervisor of this function, running in a thread, closed (replicas stopped) after."""
        supervisor = Supervisor(
            self.kafka.settings,
            read(self.manifest),
            manifest_path=self.manifest,
            environ=self.environ,
            logs=self.folder,
            python=sys.executable,
        )
        stop = threading.Event()
        thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
        thread.start()
        try:
            yield supervisor
        finally:
            stop.set()
            thread.join(timeout=10)
            supervisor.close(grace=15)


def _read(results: Consumer, have: int, want: int, deadline: float) -> int:
    """Read results until `want` in all (from `have`); raise past `deadline`."""
    while have < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {have} of {want} results by the deadline")
        have += sum(1 for m in results.consume(500, 0.05) if m.error() is None)
    return have


def drain_time(kafka: BenchKafka, sizes: Sizes, *, pinned: bool) -> Latency:
    """Supervisor start to the last result of a pre-filled backlog, autoscaled from 1 or pinned at 4."""
    scaling = "min: 4, max: 4" if pinned else "min: 1, max: 4, lag_threshold: 100"
    backlog = sizes.autoscale_backlog
    samples: list[float] = []
    for run in range(sizes.autoscale_drains):
        function = _Scaled(kafka, scaling)
        try:
            function.publish(backlog, f"drain{run}")
            with function.results() as results:
                began = time.monotonic()
                with function.supervisor():
                    _read(results, 0, backlog, began + _START_TIMEOUT + backlog / 50)
                    samples.append((time.monotonic() - began) * 1000)
        finally:
            function.close()
    return Latency(tuple(samples), sizes.autoscale_drains)


def from_zero(kafka: BenchKafka, sizes: Sizes) -> tuple[Latency, Latency]:
    """(publish → result with the group at zero replicas, the same with a replica spawned at once)."""
    scaled: list[float] = []
    direct: list[float] = []
    function = _Scaled(kafka, "min: 0, max: 4, cooldown: 1s, stabilization: 1s")
    try:
        with function.results() as results:
            have = 0
            with function.supervisor() as supervisor:
                pool = supervisor.pools[function.name]
                # Not timed: the first event connects the bench's producer (a new idempotent
                # producer takes ~0.5 s to its first acknowledgement).
                function.publish(1, "warm")
                have = _read(results, have, have + 1, time.monotonic() + _START_TIMEOUT)
                for n in range(sizes.autoscale_zero_samples):
                    _until(lambda: pool.desired == 0 and not pool.instances(), what="scaled to zero")
                    began = time.monotonic()
                    function.publish(1, f"zero{n}")
                    have = _read(results, have, have + 1, began + _START_TIMEOUT)
                    scaled.append((time.monotonic() - began) * 1000)
            for n in range(sizes.autoscale_zero_samples):
                began = time.monotonic()
                function.publish(1, f"direct{n}")
                with _replica(function):
                    have = _read(results, have, have + 1, began + _START_TIMEOUT)
                    direct.append((time.monotonic() - began) * 1000)
    finally:
        function.close()
    count = sizes.autoscale_zero_samples
    return Latency(tuple(scaled), count), Latency(tuple(direct), count)


@contextmanager
def _replica(function: _Scaled) -> Iterator[None]:
    """One replica started as the supervisor starts them, stopped (SIGTERM) after the block."""
    command = [sys.executable, "-m", "workers", "-f", str(function.manifest), "--function", function.name]
    with (function.folder / "direct.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            env={**function.environ, "BUS_INSTANCE": f"{function.name}-direct"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _until(condition: Callable[[], bool], *, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} within {timeout:g}s")
        time.sleep(0.05)  # polling the supervisor's pool: there is nothing to wait on

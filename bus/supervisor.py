"""The local autoscaler: worker processes per function, as many as the lag asks for.

Every second (four times a second while a function has no replica, so the first event after an
idle spell is picked up at once) the supervisor samples each worker group's lag
(`bus.kafka.lag.LagMonitor`), asks the pure `bus.scaling.decide` how many replicas to run, starts
or stops worker processes to match, restarts crashed ones with backoff, and publishes each
decision with its reason to `<prefix>.scaling` for `bus status` and the dashboard.

Each replica runs in a slot with a stable name (`BUS_INSTANCE=<function>-<slot>`), so a restarted
replica aborts its predecessor's open transaction at once (workers.runtime).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import Producer

from bus import naming
from bus.clock import now_rfc3339
from bus.errors import KafkaError
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.config import build, producer_config
from bus.kafka.lag import LagMonitor
from bus.kafka.transactions import produce_waiting
from bus.kafka_binding import to_record
from bus.latency import LatencyWindow, histogram_buckets
from bus.localkafka import free_port
from bus.logs import log_event
from bus.manifest import Function, Manifest
from bus.metrics import Registry
from bus.scaling import Decision, Observation, PartitionLag, ScalerState, decide, partitions_cap
from bus.settings import KafkaSettings
from bus.status import SCALING_DECISION, GroupSample
from bus.topology import TopicSpec, function_topics

__all__ = ["Supervisor", "SupervisorMetrics", "WorkerPool"]

logger = logging.getLogger("bus.supervisor")

INTERVAL = 1.0
"""Seconds between samples."""
FAST_INTERVAL = 0.25
"""Seconds between samples while some function runs no replica (scale from zero at once)."""
HEARTBEAT = 10.0
"""Seconds after which an unchanged decision is published again (so `bus status` stays current)."""
MAX_BACKOFF = 30.0
"""Longest wait before restarting a replica that keeps crashing."""
SCRAPE_TIMEOUT = 0.2
"""Seconds to wait for one replica's metrics."""
LATENCY_WINDOW = 30.0
"""Seconds of handler durations the published p99 covers."""
DURATION_METRIC = "bus_worker_invocation_seconds"


@dataclass
class _Slot:
    """One replica's place in a pool."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    stopping_since: float | None = None
    crashes: int = 0
    next_start: float = 0.0
    metrics_port: int = 0
    """Where the replica serves its metrics (BUS_METRICS_PORT), for the latency quantiles."""


@dataclass
class WorkerPool:
    """The worker processes of one function: slots 0..desired-1 run, the rest are stopped."""

    function: Function
    argv: list[str]
    environ: Mapping[str, str]
    log: Path
    clock: Callable[[], float] = time.monotonic
    desired: int = 0
    slots: dict[int, _Slot] = field(default_factory=dict)

    @property
    def actual(self) -> int:
        """Replicas running and not asked to stop."""
        return sum(1 for s in self.slots.values() if s.process is not None and s.stopping_since is None)

    def scale_to(self, desired: int) -> None:
        """Start the missing slots below `desired`; SIGTERM the running ones at or above it."""
        self.desired = desired
        for number in range(desired):
            slot = self.slots.setdefault(number, _Slot(number))
            if slot.process is None and self.clock() >= slot.next_start:
                self._start(slot)
        for slot in self.slots.values():
            if slot.number >= desired and slot.process is not None and slot.stopping_since is None:
                slot.process.send_signal(signal.SIGTERM)  # it finishes its work, commits, leaves
                slot.stopping_since = self.clock()

    def restart(self) -> None:
        """SIGTERM every running replica; each starts again (with `argv` as it is now) once it exited."""
        for slot in self.slots.values():
            if slot.process is not None and slot.stopping_since is None:
                slot.process.send_signal(signal.SIGTERM)
                slot.stopping_since = self.clock()

    def reap(self) -> None:
        """Collect exited replicas; kill stopping ones past their grace; plan restarts of crashed ones."""
        grace = self.function.timeout + 30.0
        for slot in self.slots.values():
            if slot.process is None:
                continue
            code = slot.process.poll()
            if code is None:
                if slot.stopping_since is not None and self.clock() - slot.stopping_since > grace:
                    slot.process.kill()
                continue
            if slot.stopping_since is None:
                slot.crashes += 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** min(slot.crashes - 1, 6))
                slot.next_start = self.clock() + delay
                log_event(
                    logger,
                    "replica_exited",
                    function=self.function.name,
                    slot=slot.number,
                    code=code,
                    restart_in_s=delay,
                    level=logging.WARNING,
                )
            slot.process = None
            slot.stopping_since = None
        self.scale_to(self.desired)  # restart what is due

    def stop(self, grace: float) -> None:
        """SIGTERM every replica, wait up to `grace` seconds, then SIGKILL what is left."""
        self.scale_to(0)
        deadline = self.clock() + grace
        for slot in self.slots.values():
            if slot.process is None:
                continue
            try:
                slot.process.wait(timeout=max(0.1, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                slot.process.kill()
                slot.process.wait()
            slot.process = None

    def scrape(self, timeout: float = SCRAPE_TIMEOUT) -> dict[str, str]:
        """Each running replica's metrics exposition, by its instance name (those that answer)."""
        texts: dict[str, str] = {}
        for slot in self.slots.values():
            if slot.process is None or not slot.metrics_port:
                continue
            url = f"http://127.0.0.1:{slot.metrics_port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    texts[self._instance(slot)] = response.read().decode()
            except (OSError, ValueError):
                continue  # starting or stopping: the next sample will see it
        return texts

    def instances(self) -> list[str]:
        """Instance names of the replicas running now (stopping ones included)."""
        return [self._instance(slot) for slot in self.slots.values() if slot.process is not None]

    def _instance(self, slot: _Slot) -> str:
        return f"{self.function.name}-{slot.number}"

    def _start(self, slot: _Slot) -> None:
        slot.metrics_port = free_port()
        env = {
            **self.environ,
            "BUS_INSTANCE": self._instance(slot),
            "BUS_METRICS_PORT": str(slot.metrics_port),
        }
        with self.log.open("ab") as log:
            slot.process = subprocess.Popen(
                self.argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops replicas in order
            )
        log_event(
            logger, "replica_started", function=self.function.name, slot=slot.number, pid=slot.process.pid
        )


class SupervisorMetrics:
    """What the supervisor serves (all labelled by function): the inputs and outcome of each decision."""

    def __init__(self, registry: Registry) -> None:
        self.lag = registry.gauge("bus_function_lag", "Events waiting on the function topic", ("function",))
        self.retry_lag = registry.gauge(
            "bus_function_retry_lag", "Retries waiting in the retry topics", ("function",)
        )
        self.desired = registry.gauge(
            "bus_function_replicas_desired", "Replicas the latest decision asked for", ("function",)
        )
        self.actual = registry.gauge("bus_function_replicas_actual", "Replicas running", ("function",))
        self.incoming = registry.gauge(
            "bus_function_incoming_rate", "Events per second into the function topic (5 s)", ("function",)
        )
        self.processed = registry.gauge(
            "bus_function_processed_rate", "Events per second the group committed (5 s)", ("function",)
        )
        self.p99 = registry.gauge(
            "bus_function_duration_p99_seconds", "p99 handler duration over the last 30 s", ("function",)
        )
        self.decisions = registry.counter(
            "bus_scaling_decisions_total",
            "Changes of the desired replica count, by direction (out, in)",
            ("function", "direction"),
        )

    def observe(
        self, name: str, sample: GroupSample, decision: Decision, actual: int, p99: float | None
    ) -> None:
        """Set every gauge of function `name` from one sample and its decision."""
        self.lag.set(sample.lag, function=name)
        self.retry_lag.set(sample.retry_lag, function=name)
        self.desired.set(decision.desired, function=name)
        self.actual.set(actual, function=name)
        for gauge, value in (
            (self.incoming, sample.produce_rate),
            (self.processed, sample.consume_rate),
            (self.p99, p99),
        ):
            if value is not None:
                gauge.set(value, function=name)


class Supervisor:
    """Scales every function of a manifest on its lag; `step()` once per sample, or `run(stop)`."""

    def __init__(
        self,
        settings: KafkaSettings,
        manifest: Manifest,
        *,
        manifest_path: Path,
        environ: Mapping[str, str],
        logs: Path,
        python: str,
        registry: Registry | None = None,
    ) -> None:
        """`registry`: where to count (`SupervisorMetrics`); a private one when None."""
        self._settings = settings
        self._manifest = manifest
        self._environ = environ
        self._logs = logs
        self._python = python
        self._monitor = LagMonitor(settings, functions=manifest.functions, prefix=manifest.prefix)
        self._pools: dict[str, WorkerPool] = {}
        self._states: dict[str, ScalerState] = {}
        self._latencies: dict[str, LatencyWindow] = {}
        self._fewer_partitions: set[str] = set()
        """Functions whose topic has fewer partitions than declared (warned about once)."""
        for function in manifest.functions.values():
            self._add(function, ["-f", str(manifest_path)])
        self._retired: list[WorkerPool] = []
        """Pools of functions the applied manifest dropped, until their last replica exited."""
        self._next: Manifest | None = None
        """A newly applied manifest, taken in at the next step (`update`)."""
        self._next_lock = threading.Lock()
        self._metrics = SupervisorMetrics(registry or Registry())
        self._published: dict[str, tuple[int, int, float]] = {}
        self._topic = naming.scaling_topic(manifest.prefix)
        # The functions' topics too: at zero replicas no worker has created them yet.
        decisions_topic = TopicSpec(self._topic, 1, {"retention.ms": str(24 * 3600 * 1000)})
        ensure_topics(settings, [decisions_topic, *self._topics(manifest.functions.values())])
        self._producer = build(Producer, producer_config(settings))

    def _add(self, function: Function, source: list[str]) -> None:
        """A pool for `function`, its workers reading the manifest from `source` (-f PATH, or none:
        the applied one)."""
        argv = [self._python, "-P", "-m", "workers", *source, "--function", function.name]
        log = self._logs / f"worker-{function.name}.log"
        self._pools[function.name] = WorkerPool(function=function, argv=argv, environ=self._environ, log=log)
        self._states[function.name] = ScalerState.initial()
        self._latencies[function.name] = LatencyWindow(LATENCY_WINDOW)

    def _topics(self, functions: Iterable[Function]) -> list[TopicSpec]:
        return [spec for f in functions for spec in function_topics(self._manifest.prefix, f)]

    def update(self, manifest: Manifest) -> None:
        """Follow a newly applied manifest (any thread): from the next step, new functions get a
        pool, dropped ones are stopped, and changed ones restart their replicas on the new spec."""
        with self._next_lock:
            self._next = manifest

    def _take_update(self) -> None:
        with self._next_lock:
            manifest, self._next = self._next, None
        if manifest is None:
            return
        old = self._manifest.functions
        new = manifest.functions
        self._manifest = manifest
        ensure_topics(self._settings, self._topics(f for name, f in new.items() if old.get(name) != f))
        for name in old.keys() - new.keys():
            pool = self._pools.pop(name)
            pool.scale_to(0)
            self._retired.append(pool)
            del self._states[name], self._latencies[name]
            log_event(logger, "function_removed", function=name, replicas=pool.actual)
        for name, function in new.items():
            if name not in old:
                self._add(function, [])  # its workers read the applied manifest
                log_event(logger, "function_added", function=name)
            elif old[name] != function:
                pool = self._pools[name]
                pool.function = function
                pool.argv = [self._python, "-P", "-m", "workers", "--function", name]
                pool.restart()
                log_event(logger, "function_changed", function=name, replicas=pool.actual)
        self._monitor.watch(new)

    @property
    def pools(self) -> Mapping[str, WorkerPool]:
        """The worker pool of each function."""
        return self._pools

    def run(self, stop: threading.Event) -> None:
        """Sample, decide and scale until `stop` is set."""
        while not stop.is_set():
            try:
                self.step()
            except KafkaError as exc:  # a sample failed (broker busy, leader moving): keep the replicas
                log_event(logger, "sample_failed", reason=str(exc), level=logging.WARNING)
            idle = any(pool.desired == 0 for pool in self._pools.values())
            stop.wait(FAST_INTERVAL if idle else INTERVAL)

    def step(self) -> dict[str, Decision]:
        """One sample of every group, one decision per function, applied and published."""
        self._take_update()
        for pool in self._pools.values():
            pool.reap()
        for pool in self._retired:
            pool.reap()
        self._retired = [pool for pool in self._retired if any(s.process for s in pool.slots.values())]
        samples = self._monitor.sample()
        decisions: dict[str, Decision] = {}
        for name, pool in self._pools.items():
            sample = samples.get(name)
            if sample is None:
                continue
            decision = self._decide(pool.function, sample, pool.actual)
            decisions[name] = decision
            if decision.desired != pool.desired:
                direction = "out" if decision.desired > pool.desired else "in"
                self._metrics.decisions.inc(function=name, direction=direction)
                log_event(
                    logger,
                    "scaling_decision",
                    function=name,
                    desired=decision.desired,
                    actual=pool.actual,
                    total_lag=decision.total_lag,
                    reason=decision.reason,
                )
            pool.scale_to(decision.desired)
        # Every function is scaled before any replica is scraped: a slow scrape delays no decision.
        for name, decision in decisions.items():
            pool, sample = self._pools[name], samples[name]
            p99 = self._p99(name, pool, sample.at)
            self._metrics.observe(name, sample, decision, pool.actual, p99)
            self._publish(name, decision, pool.actual, sample.wall, p99)
        self._producer.poll(0)
        return decisions

    def _decide(self, function: Function, sample: GroupSample, actual: int) -> Decision:
        observation = Observation(
            at=sample.at,
            # position, not committed: a consumer never commits past a transaction marker, so
            # a drained partition would show a lag of 1 forever (bus.kafka.lag).
            partitions=tuple(
                PartitionLag(
                    partition=p.partition,
                    committed=p.position,
                    start=p.start,
                    end=p.end,
                    incoming_rate=p.produce_rate,
                )
                for p in sample.inputs
            ),
            replicas=actual,
            incoming_rate=sample.produce_rate,
            processed_rate=sample.consume_rate,
            rates_span=self._monitor.rate_window,
        )
        found = len(sample.inputs)
        if 0 < found < function.partitions and function.name not in self._fewer_partitions:
            self._fewer_partitions.add(function.name)
            log_event(
                logger,
                "partitions_fewer_than_declared",
                function=function.name,
                declared=function.partitions,
                found=found,
                reason="bus does not add partitions to an existing topic (it would move keys);"
                " scaling is capped at the topic's own count",
                level=logging.WARNING,
            )
        decision, self._states[function.name] = decide(
            function.scaling,
            observation,
            self._states[function.name],
            partitions_cap=partitions_cap(function.partitions, found),
        )
        if decision.desired == 0 and sample.retry_lag > 0:
            # Retries wait in their topics: a replica must be there when they fall due.
            return Decision(
                desired=1,
                current=decision.current,
                total_lag=decision.total_lag,
                reason=f"keep 1: {sample.retry_lag} retries pending ({decision.reason})",
                inputs={**decision.inputs, "retry_lag": sample.retry_lag},
            )
        return decision

    def _p99(self, name: str, pool: WorkerPool, at: float) -> float | None:
        """The p99 handler duration of the function's replicas over the last LATENCY_WINDOW s."""
        window = self._latencies[name]
        texts = pool.scrape()
        for instance, text in texts.items():
            window.add(instance, at, histogram_buckets(text, DURATION_METRIC))
        window.keep(pool.instances())
        return window.quantile(0.99)

    def _publish(self, name: str, decision: Decision, actual: int, wall: float, p99: float | None) -> None:
        last = self._published.get(name)
        if last is not None and last[:2] == (decision.desired, actual) and wall - last[2] < HEARTBEAT:
            return
        self._published[name] = (decision.desired, actual, wall)
        event = CloudEvent.create(
            id=f"{name}-{int(wall * 1000)}",
            source=f"bus://{self._manifest.prefix}/supervisor/{os.uname().nodename}",
            type=SCALING_DECISION,
            time=now_rfc3339(),
            subject=name,
            datacontenttype="application/json",
            data={
                "function": name,
                "desired": decision.desired,
                "actual": actual,
                "reason": decision.reason,
                "total_lag": decision.total_lag,
                "p99_seconds": p99,
                "at": now_rfc3339(),
                "inputs": orjson.loads(orjson.dumps(decision.inputs, default=str)),
            },
        )
        produce_waiting(self._producer, self._topic, to_record(event))

    def close(self, grace: float = 30.0) -> None:
        """Stop every replica (gracefully, up to `grace`), flush the decision log, close the monitor."""
        for pool in [*self._pools.values(), *self._retired]:
            pool.stop(grace)
        self._producer.flush(5.0)
        self._monitor.close()

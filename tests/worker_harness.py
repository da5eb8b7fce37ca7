"""RELIABILITY harness for worker groups: a stub function that fails on command, real worker
processes, an event generator that records what Kafka acknowledged, and a checker that reads
results, errors and dead letters with read_committed and prints the plan's figures."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bus import naming
from bus.events import CloudEvent
from bus.kafka.config import producer_config
from bus.kafka_binding import from_record, header, to_record
from bus.localkafka import free_port
from tests.support import ChildProcess, KafkaEnv, wait_until

STUB = '''
import os, time

def _log(line):
    path = os.environ.get("STUB_EXEC_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\\n")

def stub(event, ctx):
    """Does what the event's data asks: sleep, fail the first attempts, hang, wait for a file,
    exit, allocate."""
    d = event.data or {}
    _log(f"start {event.id} {ctx.attempt} {time.time():.6f}")
    try:
        if d.get("sleep"):
            time.sleep(d["sleep"])
        if d.get("fail_attempts", 0) >= ctx.attempt:
            raise ValueError(f"asked to fail attempt {ctx.attempt} of {event.id}")
        if d.get("poison"):
            raise ValueError(f"poison {event.id}")
        if d.get("hang"):
            time.sleep(3600)
        if d.get("wait_for"):  # until the test creates the file (a minute at most)
            deadline = time.monotonic() + 60
            while not os.path.exists(d["wait_for"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        if d.get("exit"):
            os._exit(d["exit"])
        if d.get("alloc_mb"):
            blob = bytearray(d["alloc_mb"] * 1024 * 1024)
            del blob
    finally:
        _log(f"fin {event.id} {ctx.attempt} {time.time():.6f}")
    _log(f"ok {event.id} {ctx.attempt} {time.time():.6f}")
    return {"key": d.get("key"), "seq": d.get("seq"), "attempt": ctx.attempt}

async def stub_async(event, ctx):
    return stub(event, ctx)
'''


def write_function(directory: Path, prefix: str, function: str, options: str) -> Path:
    """A manifest with one function `function` running the stub (`options`: YAML flow mapping body)."""
    (directory / "stub.py").write_text(STUB)
    path = directory / "bus.yaml"
    path.write_text(f"prefix: {prefix}\nfunctions:\n  {function}: {{handler: 'stub:stub', {options}}}\n")
    return path


class WorkerProcess(ChildProcess):
    """A real worker replica (`python -m workers`) that a test can kill, stop or SIGSTOP."""

    def __init__(
        self,
        kafka: KafkaEnv,
        manifest: Path,
        function: str,
        home: Path,
        *,
        name: str = "worker",
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = home / f"{name}.log"
        self.exec_log = home / "exec.log"
        self._args = ["-f", str(manifest), "--function", function]
        self._env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "BUS_HOME": str(home),
            "STUB_EXEC_LOG": str(self.exec_log),
            "BUS_INSTANCE": name,  # a restart replaces its own transactional id, as a supervisor's slot would
            **(env or {}),
        }
        self.metrics_port = 0
        self.starts = 0

    def start(self, *, wait: bool = True) -> None:
        """Start the replica; with `wait`, return once its log says it is ready."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.metrics_port = free_port()
        env = {**self._env, "BUS_METRICS_PORT": str(self.metrics_port)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers", *self._args], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until this start's `worker_ready` line (the handler host is warm)."""
        wait_until(
            lambda: self.log.read_text().count('"worker_ready"') >= self.starts,
            timeout=60,
            what=f"worker start {self.starts} (log {self.log})",
        )

    def assigned(self) -> bool:
        """Whether the log shows partitions assigned since the last start."""
        text = self.log.read_text()
        return text.rfind('"partitions_assigned"') > text.rfind('"worker_ready"')


def publish(
    kafka: KafkaEnv,
    topic: str,
    datas: Iterable[dict[str, Any]],
    *,
    run: str,
    prefix: str = "bus",
    rate: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Produce one event per data to `topic` (key = data["key"]); return acknowledged id -> data.

    `rate` paces the events (per second), so faults can strike while events keep arriving.
    """
    began = time.monotonic()
    producer = Producer(producer_config(kafka.settings(prefix)))
    acked: dict[str, dict[str, Any]] = {}

    def reporter(event_id: str, data: dict[str, Any]) -> Any:
        def report(error: Any, message: Any) -> None:
            if error is None:
                acked[event_id] = data

        return report

    for n, data in enumerate(datas):
        if rate is not None and (ahead := began + n / rate - time.monotonic()) > 0:
            time.sleep(ahead)  # pacing the load, not waiting for a condition
        extensions = {"partitionkey": data["key"]} if data.get("key") is not None else {}
        event = CloudEvent.create(
            id=f"{run}-{n}", source="tests/worker", type="work.item", extensions=extensions, data=data
        )
        record = to_record(event)
        while True:
            try:
                producer.produce(
                    topic,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers),
                    on_delivery=reporter(event.id, data),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(30) == 0, "events not acknowledged within 30 s"
    return acked


@dataclass
class Figures:
    """RELIABILITY's figures for one scenario."""

    acked: int = 0
    results: int = 0
    lost: int = 0
    dup_results: int = 0
    dup_exec: int = 0
    dlq: int = 0
    dlq_wrong: int = 0
    order_violations: int = 0
    max_concurrency: int = 0
    max_stall_s: float = 0.0
    """Longest gap between two consecutive results (their Kafka timestamps)."""
    dead_letters: dict[str, tuple[str, str]] = field(default_factory=dict)
    """event id -> (error type, message) of each dead letter."""
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    """event id -> data of its bus.function.error event."""

    def line(self) -> str:
        """The figures as one line, for `-s` output and assertion messages."""
        skip = {"dead_letters", "errors"}
        return " ".join(f"{k}={v}" for k, v in vars(self).items() if k not in skip)


def check(
    kafka: KafkaEnv,
    prefix: str,
    function: str,
    acked: dict[str, dict[str, Any]],
    *,
    poison: set[str] = frozenset(),  # type: ignore[assignment]
    exec_log: Path | None = None,
    ordered: bool = False,
    timeout: float = 120.0,
) -> Figures:
    """Wait until every acked event has a result or a dead letter, then compute the figures."""
    results_topic = naming.result_topic(prefix, function)
    dlq_topic = naming.dlq_topic(prefix, function)
    expected_results = len(set(acked) - poison)
    deadline = time.monotonic() + timeout
    results: list[Any] = []
    letters: list[Any] = []
    while time.monotonic() < deadline:
        results = kafka.read_all(results_topic, idle=0.5)
        letters = kafka.read_all(dlq_topic, idle=0.3) if poison else []
        if len({_cause(m) for m in results}) >= expected_results and len(letters) >= len(poison):
            break
    settle = kafka.read_all(results_topic, idle=1.5)  # anything late (a duplicate) shows up now
    results = settle if len(settle) >= len(results) else results
    figures = Figures(acked=len(acked), results=len(results))
    causes = [_cause(m) for m in results]
    figures.dup_results = len(causes) - len(set(causes))
    figures.lost = len(set(acked) - poison - set(causes))
    stamps = sorted(message.timestamp()[1] for message in results)
    figures.max_stall_s = max((b - a for a, b in itertools.pairwise(stamps)), default=0) / 1000
    if poison:
        letters = kafka.read_all(dlq_topic, idle=1.0)
        for message in letters:
            event = from_record(message.key(), message.value(), message.headers())
            error_type = (header(message.headers(), "bus_error_type") or b"").decode()
            reason = (header(message.headers(), "bus_error_message") or b"").decode()
            figures.dead_letters[event.id] = (error_type, reason)
        figures.dlq = len(letters)
        figures.dlq_wrong = len(set(figures.dead_letters) ^ poison) + (
            len(letters) - len(figures.dead_letters)
        )
        errors_topic = naming.error_topic(prefix, function)
        for message in kafka.read_all(errors_topic, idle=0.5):
            data = from_record(message.key(), message.value(), message.headers()).data
            figures.errors[data["event"]["id"]] = data
    if ordered:
        figures.order_violations = _order_violations(results)
    if exec_log is not None and exec_log.exists():
        figures.dup_exec, figures.max_concurrency = _executions(exec_log)
    return figures


def _cause(message: Any) -> str:
    return str(from_record(message.key(), message.value(), message.headers()).extensions["causationid"])


def _order_violations(results: list[Any]) -> int:
    """Results of one key out of sequence order (each key's seq numbers must rise)."""
    last: dict[str, int] = {}
    violations = 0
    for message in results:
        data = from_record(message.key(), message.value(), message.headers()).data
        key, seq = data["key"], data["seq"]
        if key in last and seq < last[key]:
            violations += 1
        last[key] = max(seq, last.get(key, seq))
    return violations


def _executions(exec_log: Path) -> tuple[int, int]:
    """(successful executions beyond one per event and attempt, most handlers running at once)."""
    ends: dict[tuple[str, str], int] = defaultdict(int)
    spans: list[tuple[float, int]] = []
    for line in exec_log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        kind, event_id, attempt, stamp = parts
        if kind == "ok":
            ends[(event_id, attempt)] += 1
        elif kind in ("start", "fin"):
            spans.append((float(stamp), 1 if kind == "start" else -1))
    running = peak = 0
    for _, step in sorted(spans):
        running += step
        peak = max(peak, running)
    return sum(n - 1 for n in ends.values()), peak

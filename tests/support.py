"""Test harness shared by the integration tests: names, waiting, reading topics, the platform."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from confluent_kafka import Producer

from bus.kafka.admin import ensure_topics
from bus.kafka.config import build, producer_config
from bus.kafka.reader import read_topic
from bus.kafka_binding import Record
from bus.localkafka import free_port
from bus.manifest import Manifest, read
from bus.settings import KafkaSettings
from bus.stack import Stack
from bus.topology import TopicSpec
from gateway.app import create_app
from gateway.publisher import Publisher
from gateway.settings import GatewaySettings

T = TypeVar("T")
_counter = itertools.count()


def unique(kind: str) -> str:
    """A name no other test uses: `<kind>-<n>-<random>` (valid as topic, group and prefix)."""
    return f"{kind}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


def wait_until(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `probe` until it returns a truthy value; fail after `timeout` naming what was awaited."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


def run_bus(*args: str, env: dict[str, str | None], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the `bus` command with these variables set (None removes one); capture its output."""
    environ = {**os.environ, **env}
    merged = {name: value for name, value in environ.items() if value is not None}
    return subprocess.run(
        [sys.executable, "-m", "bus", *args],
        capture_output=True,
        text=True,
        env=merged,
        timeout=timeout,
        check=False,
    )


@dataclass
class KafkaEnv:
    """The session's broker plus helpers that give each test its own topics, groups and prefixes."""

    bootstrap: str

    def settings(self, prefix: str = "bus") -> KafkaSettings:
        """Client settings for this broker."""
        return KafkaSettings(bootstrap_servers=self.bootstrap, prefix=prefix)

    def topic(self, partitions: int = 3) -> str:
        """Create a fresh topic and return its name."""
        name = unique("t")
        ensure_topics(self.settings(), [TopicSpec(name, partitions)])
        return name

    def group(self) -> str:
        """A consumer group name no other test uses."""
        return unique("g")

    def prefix(self) -> str:
        """A topic prefix (tenant) no other test uses."""
        return unique("p").replace("-", "_")

    def read(self, topic: str, *, until: Callable[[list[Any]], bool], timeout: float) -> list[Any]:
        """Read `topic` from the beginning until `until(records)` holds; fail after `timeout`."""
        records: list[Any] = []
        for message in read_topic(self.settings(), topic, timeout=timeout):
            records.append(message)
            if until(records):
                return records
        if until(records):
            return records
        raise AssertionError(f"{topic}: condition not met within {timeout}s; read {len(records)} records")

    def read_exactly(self, topic: str, count: int, *, timeout: float = 60.0, idle: float = 1.5) -> list[Any]:
        """Wait for `count` records on `topic`, then make sure no more arrive (`idle` seconds)."""
        self.read(topic, until=lambda records: len(records) >= count, timeout=timeout)
        records = self.read_all(topic, idle=idle)
        assert len(records) == count, f"{topic}: expected exactly {count} records, found {len(records)}"
        return records

    def read_all(self, topic: str, *, idle: float = 1.5, timeout: float = 30.0) -> list[Any]:
        """Every record of `topic` present now (stops after `idle` seconds without one)."""
        return list(read_topic(self.settings(), topic, timeout=timeout, idle_timeout=idle))

    def write(self, topic: str, records: Sequence[Record]) -> None:
        """Produce `records` (key, value, headers as they are) to `topic`; fail unless all are acked."""
        producer = build(Producer, producer_config(self.settings()))
        failures: list[str] = []
        for record in records:
            producer.produce(
                topic,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                on_delivery=lambda err, _msg: failures.append(err.str()) if err else None,
            )
        assert producer.flush(30) == 0, f"{topic}: records left unacknowledged"
        assert failures == [], f"{topic}: {failures}"


HANDLERS = '''
import asyncio, os

def echo(event, ctx):
    """Return the input's data with the function name: the result proves the call."""
    return {"echo": event.data, "function": ctx.function, "key": ctx.idempotency_key}

async def echo_async(event, ctx):
    await asyncio.sleep(0)
    return {"echo": event.data, "async": True}

def fail_when_asked(event, ctx):
    if (event.data or {}).get("fail"):
        raise ValueError("asked to fail: " + str(event.data.get("seq")))
    return {"ok": (event.data or {}).get("seq")}
'''


def write_manifest(directory: Path, prefix: str, body: str) -> Path:
    """Write a manifest with `prefix` and the test handler module beside it; return its path."""
    (directory / "handlers.py").write_text(HANDLERS)
    path = directory / "bus.yaml"
    path.write_text(f"prefix: {prefix}\n{body}")
    return path


@dataclass
class Platform:
    """A running gateway + router + workers for one manifest (real processes, real broker)."""

    url: str
    manifest: Manifest
    home: Path


@contextmanager
def running_platform(kafka: KafkaEnv, manifest_path: Path, home: Path) -> Iterator[Platform]:
    """Start the platform's processes for a manifest; stop them gracefully afterwards."""
    manifest = read(manifest_path)
    port = free_port()
    environ = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_HOME": str(home)}
    stack = Stack(manifest_path, manifest, http_port=port, environ=environ)
    try:
        stack.start()
        yield Platform(url=f"http://127.0.0.1:{port}", manifest=manifest, home=home)
    finally:
        stack.shutdown()


class ChildProcess:
    """A platform process started by a test, which it can `kill -9` or stop with SIGTERM."""

    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """`kill -9` the process and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM the process if it runs, and wait for it to finish."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class GatewayProcess(ChildProcess):
    """A real gateway process (`python -m gateway`) on a free port that can be killed and started again."""

    def __init__(
        self,
        kafka: KafkaEnv,
        prefix: str,
        home: Path,
        *,
        manifest: Path | None = None,
        env: dict[str, str] | None = None,
        name: str = "gateway",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "BUS_PREFIX": prefix,
            "BUS_HOME": str(home),
            **(env or {}),
        }
        self._args = ["--port", str(self.port)] + (["-f", str(manifest)] if manifest else [])
        self.log = home / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait until it answers `/readyz`."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", *self._args],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=60, what=f"the gateway on port {self.port} to be ready")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


class RouterProcess(ChildProcess):
    """A real router process (`python -m bus.router`) serving /metrics on a free port; killable."""

    def __init__(
        self, kafka: KafkaEnv, prefix: str, home: Path, *, env: dict[str, str] | None = None
    ) -> None:
        self.metrics_port = 0
        self._env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "BUS_PREFIX": prefix,
            "BUS_HOME": str(home),
            **(env or {}),
        }
        self.log = home / "router.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the process and wait until its log says it routes."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.metrics_port = free_port()  # picked anew: the last one may have been taken meanwhile
        env = {**self._env, "BUS_METRICS_PORT": str(self.metrics_port)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bus.router"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(
            lambda: self.log.read_text().count('"router_ready"') >= self.starts,
            timeout=60,
            what=f"router start {self.starts} (log {self.log})",
        )

    def metric(self, name: str) -> float | None:
        """The value of one sample (`name` with its labels, as rendered), or None when absent."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None


JOIN_FLOW = """
functions:
  a: {handler: 'm:f'}
  b: {handler: 'm:f'}
  model: {handler: 'm:f'}
flows:
  ml:
    start: {type: [go]}
    steps:
      a: {function: a}
      b: {function: b}
      model: {function: model, after: [a, b], timeout: 60s}
"""
"""A flow whose `model` step joins `a` and `b` (for tests of the joiner; no prefix: give one)."""


@asynccontextmanager
async def serving_gateway(publisher: Any, settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a started gateway app (no server, no Kafka) publishing through `publisher`."""

    @asynccontextmanager
    async def factory() -> AsyncIterator[Publisher]:
        yield publisher

    app = create_app(settings, factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client

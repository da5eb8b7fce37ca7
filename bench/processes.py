"""The thin path as child processes: gateway, router and one worker on a manifest of the bench's own.

The manifest has a unique prefix and one function whose handler returns a constant, so the
figures are the platform's cost, not a handler's. Children are stopped with SIGTERM (then
SIGKILL) however the run ends, and their logs are quoted when one of them fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.broker import BenchKafka
from bench.cpu import process_cpu_seconds
from bus import naming
from bus.localkafka import free_port

__all__ = ["EVENT_TYPE", "FUNCTION", "PARTITIONS", "Child", "Platform", "running_gateway", "running_platform"]

EVENT_TYPE = "bench.requested"
FUNCTION = "echo"
PARTITIONS = 3
"""Partitions of the function topic and of its results topic (the manifest default)."""

_REPO = Path(__file__).resolve().parent.parent
_STOP_GRACE = 15.0
"""Seconds a child gets to finish its batch after SIGTERM before it is killed."""

_HANDLER = '''\
"""The bench's function: does nothing, so the figures are the platform's."""


def handle(event, ctx):
    return {"ok": True}
'''

_MANIFEST = """\
prefix: {prefix}
functions:
  {function}:
    handler: benchfn:handle
    partitions: {partitions}
rules:
  - name: bench
    pattern: {{type: [{event_type}]}}
    targets: [{function}]
"""


@dataclass(frozen=True, slots=True)
class Child:
    """One platform process and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the process used so far; None where /proc cannot tell."""
        return process_cpu_seconds(self.process.pid)


@dataclass(frozen=True, slots=True)
class Platform:
    """Where the running thin path takes events and where its results land."""

    url: str
    """Base URL of the gateway."""
    results_topic: str
    results_partitions: int
    children: tuple[Child, ...]

    def check_alive(self) -> None:
        """Raise naming the first process that exited, with the end of its log."""
        _check_alive(self.children)


@contextmanager
def running_platform(kafka: BenchKafka, *, timeout: float = 60.0) -> Iterator[Platform]:
    """Start router, worker and gateway; yield once the gateway is ready; stop them all on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="bus-bench-platform-"))
    prefix = kafka.platform_prefix
    (workdir / "benchfn.py").write_text(_HANDLER)
    manifest = workdir / "bus.yaml"
    manifest.write_text(
        _MANIFEST.format(prefix=prefix, function=FUNCTION, partitions=PARTITIONS, event_type=EVENT_TYPE)
    )
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "BUS_HOME": str(workdir / "home"),
        "BUS_PREFIX": prefix,
        "BUS_LOG_LEVEL": "INFO",
    }
    python = sys.executable
    commands = {
        "router": [python, "-m", "bus.router", "-f", str(manifest)],
        "worker": [python, "-m", "workers", "-f", str(manifest), "--function", FUNCTION],
        "gateway": [python, "-m", "gateway", "--port", str(port), "-f", str(manifest)],
    }
    children: list[Child] = []
    try:
        for name, command in commands.items():
            log = workdir / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=_REPO,
                )
            children.append(Child(name, process, log))
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, children, time.monotonic() + timeout)
        yield Platform(url, naming.result_topic(prefix, FUNCTION), PARTITIONS, tuple(children))
    finally:
        _stop(children)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def running_gateway(kafka: BenchKafka, *, null: bool, timeout: float = 60.0) -> Iterator[tuple[str, Child]]:
    """A gateway alone on a fresh prefix, or with `null` the same server publishing nowhere."""
    workdir = Path(tempfile.mkdtemp(prefix="bus-bench-gateway-"))
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "BUS_HOME": str(workdir / "home"),
        "BUS_PREFIX": f"benchgw-{kafka.run}",
        "BUS_LOG_LEVEL": "INFO",
    }
    module = "bench.null_gateway" if null else "gateway"
    log = workdir / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=_REPO,
        )
    child = Child(module, process, log)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, [child], time.monotonic() + timeout)
        yield url, child
    finally:
        _stop([child])
        shutil.rmtree(workdir, ignore_errors=True)


def _check_alive(children: Sequence[Child]) -> None:
    for child in children:
        code = child.process.poll()
        if code is not None:
            tail = child.log.read_text(errors="replace").strip().splitlines()[-8:]
            raise RuntimeError(f"{child.name} exited with {code}: " + " | ".join(tail))


def _wait_ready(url: str, children: Sequence[Child], deadline: float) -> None:
    with httpx.Client(base_url=url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            _check_alive(children)
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/readyz").status_code == 200:
                    return
            time.sleep(0.2)  # polling a child process's port: there is nothing to wait on
    raise RuntimeError(f"the gateway at {url} was not ready in time")


def _stop(children: Sequence[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    for child in children:
        try:
            child.process.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()

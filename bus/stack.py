"""`bus up`: the whole platform on this machine as child processes, stopped together.

Kafka (unless the user brings one), one gateway, one router, and the supervisor
(bus.supervisor), which runs each function's worker replicas as its lag asks; with `ui_port`,
also the web dashboard (bus.dashboard_server), in this process. Each function starts with one
replica (at least its `scaling.min`), which proves its handler loads; the supervisor scales from
there, to zero after the cooldown. A child that dies is restarted with backoff; Ctrl-C or SIGTERM
stops everything gracefully.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bus import localkafka
from bus.control import Applied
from bus.dashboard_server import Dashboard
from bus.errors import BusError
from bus.kafka.control_store import ControlWatcher, apply_file, read_applied
from bus.logs import log_event
from bus.manifest import Manifest
from bus.metrics import Registry
from bus.settings import KafkaSettings, bus_home, load_kafka
from bus.supervisor import FAST_INTERVAL, INTERVAL, Supervisor

__all__ = ["Child", "Stack", "bundled_example"]

logger = logging.getLogger("bus.stack")


def bundled_example() -> Path:
    """The manifest `bus up` runs when none is given."""
    return Path(__file__).resolve().parent.parent / "examples" / "hello" / "bus.yaml"


@dataclass
class Child:
    """A supervised child process."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log: Path | None = field(default=None)


class Stack:
    """Starts and supervises the local platform; `run()` blocks until `stop` is set."""

    def __init__(
        self,
        manifest_path: Path,
        manifest: Manifest,
        *,
        http_port: int,
        environ: Mapping[str, str],
        ui_port: int | None = None,
    ) -> None:
        """`ui_port`: serve the dashboard there (0: any free port); None: no dashboard."""
        self._manifest_path = manifest_path
        self._manifest = manifest
        self._http_port = http_port
        self._environ = dict(environ)
        self._home = bus_home(environ)
        self._started_kafka = False
        self._kafka_port: int | None = None
        self._children: list[Child] = []
        self._supervisor: Supervisor | None = None
        self._ui_port = ui_port
        self._metrics = Registry()  # the supervisor's, served by the dashboard at /metrics
        self._dashboard: Dashboard | None = None
        self._watcher: ControlWatcher | None = None

    def start(self) -> dict[str, str]:
        """Start Kafka (if needed), create topics, start the components; return where things are."""
        env = self._environ
        if not localkafka.port_free(self._http_port):
            raise BusError(f"port {self._http_port} is in use: choose another with --http-port")
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            data_dir = self._home / "kafka"
            self._started_kafka = localkafka.status(data_dir) is None
            state = localkafka.start(data_dir, environ=env)
            self._kafka_port = state.port
            env["KAFKA_BOOTSTRAP_SERVERS"] = state.bootstrap
        env["BUS_PREFIX"] = self._manifest.prefix  # the gateway reads its topic namespace from here
        settings = load_kafka(env, prefix=self._manifest.prefix)
        # Applying creates the topics and stores the rules the router follows (and later changes).
        log_event(
            logger,
            "manifest_applied",
            summary=apply_file(settings, self._manifest_path, prefix=self._manifest.prefix, environ=env),
        )
        if self._ui_port is not None:  # before the children: a port in use fails at once
            self._dashboard = Dashboard(settings, self._manifest, port=self._ui_port, metrics=self._metrics)
            self._dashboard.start()
        logs = self._home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        manifest = str(self._manifest_path)
        self._children = [
            Child("gateway", [python, "-P", "-m", "gateway", "--port", str(self._http_port), "-f", manifest]),
            Child("router", [python, "-P", "-m", "bus.router", "-f", manifest]),
        ]
        for child in self._children:
            child.log = logs / f"{child.name.replace(':', '-')}.log"
            self._spawn(child)
        self._supervisor = Supervisor(
            settings,
            self._manifest,
            manifest_path=self._manifest_path,
            environ=env,
            logs=logs,
            python=python,
            registry=self._metrics,
        )
        for name, pool in self._supervisor.pools.items():
            pool.scale_to(max(1, self._manifest.functions[name].scaling.min))
        self._follow_applied(settings)
        self._wait_gateway(timeout=30.0)
        self._check_started(settle=2.0)
        return {
            "kafka": settings.bootstrap_servers,
            "gateway": f"http://127.0.0.1:{self._http_port}",
            **({"dashboard": self._dashboard.url} if self._dashboard else {}),
            "logs": str(logs),
            "manifest": manifest,
        }

    def run(self, stop: threading.Event) -> None:
        """Supervise children and scale workers until `stop` is set (restart backoff up to 30 s)."""
        while not stop.wait(self._interval()):
            self._watch_kafka()
            if self._supervisor is not None:
                try:
                    self._supervisor.step()
                except BusError as exc:  # Kafka unavailable for a moment: keep the replicas, try again
                    log_event(logger, "scaling_skipped", reason=str(exc), level=logging.WARNING)
            for child in self._children:
                if child.process is not None and child.process.poll() is not None:
                    code = child.process.returncode
                    child.restarts += 1
                    delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                    child.next_start = time.monotonic() + delay
                    child.process = None
                    log_event(
                        logger,
                        "child_exited",
                        child=child.name,
                        code=code,
                        restart_in_s=delay,
                        level=logging.WARNING,
                    )
                if child.process is None and time.monotonic() >= child.next_start:
                    self._spawn(child)

    def _watch_kafka(self) -> None:
        """Start again the broker this stack started, should it have exited (clients reconnect)."""
        if not self._started_kafka:
            return
        data_dir = self._home / "kafka"
        if localkafka.status(data_dir) is not None:
            return
        log_event(
            logger,
            "kafka_exited",
            log=str(data_dir / "kafka.log"),
            action="starting it again",
            level=logging.ERROR,
        )
        try:
            localkafka.start(data_dir, environ=self._environ, port=self._kafka_port)
        except BusError as exc:
            log_event(logger, "kafka_not_restarted", reason=str(exc), level=logging.ERROR)

    @property
    def supervisor(self) -> Supervisor | None:
        """The worker autoscaler, once started."""
        return self._supervisor

    def _follow_applied(self, settings: KafkaSettings) -> None:
        """Hand every manifest applied from now on (`bus apply`) to the supervisor."""
        prefix = self._manifest.prefix
        supervisor = self._supervisor
        assert supervisor is not None
        _, after = read_applied(settings, prefix)

        def on_change(new: Applied) -> None:
            changed = new.manifest(prefix=prefix)
            log_event(logger, "manifest_changed", version=new.version, functions=sorted(changed.functions))
            supervisor.update(changed)

        self._watcher = ControlWatcher(settings, prefix, start=after, on_change=on_change)
        self._watcher.__enter__()

    def _interval(self) -> float:
        if self._supervisor is not None and any(p.desired == 0 for p in self._supervisor.pools.values()):
            return FAST_INTERVAL
        return INTERVAL

    def shutdown(self, *, grace: float = 20.0) -> None:
        """Stop the workers, then SIGTERM every child, wait up to `grace`, SIGKILL stragglers;
        stop Kafka if we started it."""
        if self._watcher is not None:
            self._watcher.__exit__()
        if self._dashboard is not None:
            self._dashboard.close()
        if self._supervisor is not None:
            self._supervisor.close(grace)
        running = [c for c in self._children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.terminate()
        deadline = time.monotonic() + grace
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log_event(logger, "child_killed", child=child.name, level=logging.WARNING)
                child.process.kill()
                child.process.wait()
        if self._started_kafka:
            localkafka.stop(self._home / "kafka")

    def _spawn(self, child: Child) -> None:
        assert child.log is not None
        with child.log.open("ab") as log:
            child.process = subprocess.Popen(
                child.argv,
                env=self._environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches bus up only; it stops children in order
            )
        log_event(logger, "child_started", child=child.name, pid=child.process.pid)

    def _check_started(self, *, settle: float) -> None:
        """Fail start-up when a component exits within `settle` seconds (bad handler, bad manifest)."""
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            for child in self._children:
                if child.process is not None and child.process.poll() is not None:
                    raise BusError(
                        f"{child.name} exited with {child.process.returncode} while starting; see {child.log}"
                    )
            for name, pool in (self._supervisor.pools if self._supervisor else {}).items():
                for slot in pool.slots.values():
                    if slot.process is not None and slot.process.poll() is not None:
                        code = slot.process.returncode
                        raise BusError(f"worker:{name} exited with {code} while starting; see {pool.log}")
            time.sleep(0.1)

    def _wait_gateway(self, *, timeout: float) -> None:
        url = f"http://127.0.0.1:{self._http_port}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
            gateway = self._children[0].process
            if gateway is not None and gateway.poll() is not None:
                raise BusError(f"the gateway exited with {gateway.returncode}; see {self._children[0].log}")
            time.sleep(0.2)
        raise BusError(f"the gateway was not ready within {timeout}s; see {self._children[0].log}")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, a polite kill, and a closed terminal all stop the stack gracefully."""


def install_stop_handlers(stop: threading.Event) -> None:
    """Set `stop` on any of STOP_SIGNALS."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: stop.set())


def interrupt_on_signals() -> None:
    """Raise KeyboardInterrupt on any of STOP_SIGNALS (for blocking phases such as start-up)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for signum in STOP_SIGNALS:
        signal.signal(signum, interrupt)


def current_environ() -> dict[str, str]:
    """The process environment, read once by the composition root."""
    return dict(os.environ)

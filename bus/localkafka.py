"""A local single-node Apache Kafka (KRaft broker + controller) run as a child process.

The broker jars come from Maven Central through `deploy/kafka/pom.xml` into a cache outside
the repository; data, logs, the pid and a state file live in a data dir that survives restarts.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from bus.errors import LocalKafkaError
from bus.logs import log_event

__all__ = [
    "KAFKA_VERSION",
    "BrokerState",
    "fetch_jars",
    "free_port",
    "new_cluster_id",
    "port_free",
    "running_bootstrap",
    "start",
    "status",
    "stop",
]

KAFKA_VERSION = "4.1.1"
logger = logging.getLogger("bus.localkafka")
_POM = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"
_STATE = "broker.json"

_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.clients
        level: WARN
"""


@dataclass(frozen=True, slots=True)
class BrokerState:
    """Where a local broker runs."""

    pid: int
    port: int
    controller_port: int
    data_dir: str
    log_file: str

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use."""
        return f"127.0.0.1:{self.port}"


def cache_dir(environ: Mapping[str, str]) -> Path:
    """Where fetched jars live: `$BUS_CACHE_DIR`, else `$XDG_CACHE_HOME/bus`, else ~/.cache/bus."""
    if environ.get("BUS_CACHE_DIR"):
        return Path(environ["BUS_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".cache")
    return Path(base) / "bus"


def fetch_jars(environ: Mapping[str, str]) -> Path:
    """Resolve the broker's classpath with Maven (once); return the folder of jars."""
    libs = cache_dir(environ) / "kafka" / KAFKA_VERSION / "libs"
    if (libs / ".complete").exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with (libs.parent / ".fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch at a time; the others find it complete
        if (libs / ".complete").exists():
            return libs
        return _fetch(libs)


def _fetch(libs: Path) -> Path:
    if shutil.which("mvn") is None:
        raise LocalKafkaError("Maven (mvn) is not on PATH: install it, e.g. apt-get install maven")
    if not _POM.exists():
        raise LocalKafkaError(f"{_POM} is missing: run bus from a checkout of the repository")
    staging = libs.with_name(f"libs.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    log_event(logger, "kafka_fetch", version=KAFKA_VERSION, into=str(libs))
    result = subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            f"-Dkafka.version={KAFKA_VERSION}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise LocalKafkaError("Maven could not fetch the Kafka jars: " + " | ".join(tail))
    (staging / ".complete").touch()
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


def new_cluster_id() -> str:
    """A random Kafka cluster id: 22 URL-safe base64 characters, never starting with '-'.

    A leading '-' would be read as an option by the storage tool; Kafka's own Uuid.randomUuid()
    draws again in that case, and so does this.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port` (a port in TIME_WAIT counts as free, as for Kafka)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def status(data_dir: Path) -> BrokerState | None:
    """The broker running from `data_dir`, or None."""
    try:
        state = BrokerState(**orjson.loads((data_dir / _STATE).read_bytes()))
    except (OSError, ValueError, TypeError):
        return None
    return state if _is_broker(state.pid, data_dir) else None


def running_bootstrap(home: Path) -> str | None:
    """Bootstrap address of the default local broker (under `home`/kafka), if it runs."""
    state = status(home / "kafka")
    return state.bootstrap if state else None


def _is_broker(pid: int, data_dir: Path) -> bool:
    """True when `pid` is the broker of `data_dir` (not a reused pid, not another broker)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    config = str(data_dir / "server.properties").encode()
    return b"kafka.Kafka" in cmdline and config in cmdline and _alive(pid)


def start(
    data_dir: Path, *, environ: Mapping[str, str], port: int | None = None, timeout: float = 60.0
) -> BrokerState:
    """Start the broker (formatting storage on first use) and return once it serves clients."""
    running = status(data_dir)
    if running is not None:
        if port is not None and port != running.port:
            raise LocalKafkaError(
                f"a broker already runs from {data_dir} on port {running.port}: stop it first"
            )
        return running
    libs = fetch_jars(environ)
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError("java is not on PATH: install a JDK 17+, e.g. apt-get install openjdk-17-jdk")
    data_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous_ports(data_dir)
    port = port or _first_free(previous[0], 9092)
    controller_port = _first_free(previous[1], 0)
    if not port_free(port):
        raise LocalKafkaError(f"port {port} is in use: choose another with --port")
    config = _write_config(data_dir, port, controller_port)
    classpath = f"{libs}/*"
    if not (data_dir / "logs" / "meta.properties").exists():
        cluster_id = new_cluster_id()
        formatted = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            raise LocalKafkaError(f"formatting Kafka storage failed: {formatted.stderr.strip()[-400:]}")
    log_file = data_dir / "kafka.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [
                java,
                "-Xms256m",
                "-Xmx768m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={data_dir / 'log4j2.yaml'}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the caller's terminal must not kill the broker directly
        )
    state = BrokerState(process.pid, port, controller_port, str(data_dir), str(log_file))
    # Written at once, so `stop` finds a broker whose start was interrupted.
    (data_dir / _STATE).write_bytes(orjson.dumps(asdict(state)))
    (data_dir / "kafka.pid").write_text(str(process.pid))
    try:
        _wait_serving(process, state, timeout)
    except BaseException:
        _terminate(process.pid, 10.0)
        raise
    log_event(logger, "kafka_started", bootstrap=state.bootstrap, pid=state.pid, data_dir=str(data_dir))
    return state


def stop(data_dir: Path, *, timeout: float = 30.0) -> BrokerState | None:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after `timeout`); return what was stopped."""
    state = status(data_dir)
    if state is None:
        return None
    _terminate(state.pid, timeout)
    (data_dir / "kafka.pid").unlink(missing_ok=True)
    log_event(logger, "kafka_stopped", pid=state.pid, data_dir=str(data_dir))
    return state


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        # Reap it if it is our child; otherwise it is someone else's zombie or still running.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_serving(process: subprocess.Popen[bytes], state: BrokerState, timeout: float) -> None:
    from bus.kafka.admin import wait_for_broker  # noqa: PLC0415 - keeps `bus kafka status` light
    from bus.settings import KafkaSettings  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalKafkaError(f"Kafka exited with {process.returncode}; see {state.log_file}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", state.port)) == 0:
                break
        time.sleep(0.1)
    else:
        raise LocalKafkaError(f"Kafka did not listen on {state.port} within {timeout}s; see {state.log_file}")
    wait_for_broker(
        KafkaSettings(bootstrap_servers=state.bootstrap),
        timeout=max(1.0, deadline - time.monotonic()),
    )
    # Something answers on the port: make sure it is this broker, not one that took the port
    # between our check and its bind (ours then exits, and clients would use the other's data).
    ours = _cluster_id(Path(state.data_dir))
    answering = _answering_cluster(state.bootstrap)
    if process.poll() is not None or (ours and answering and answering != ours):
        raise LocalKafkaError(
            f"another Kafka answers on port {state.port} (cluster {answering or 'unknown'}, not this one's "
            f"{ours}); ours could not bind it (see {state.log_file}): choose another port with --port"
        )


def _cluster_id(data_dir: Path) -> str | None:
    """The cluster id this data dir was formatted with (`meta.properties`)."""
    with contextlib.suppress(OSError):
        for line in (data_dir / "logs" / "meta.properties").read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "cluster.id":
                return value.strip()
    return None


def _answering_cluster(bootstrap: str) -> str | None:
    """The cluster id of the broker answering at `bootstrap`; None if it cannot be learnt."""
    from confluent_kafka import KafkaException  # noqa: PLC0415 - keeps `bus kafka status` light
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    except KafkaException:  # only a check: the broker answered wait_for_broker already
        return None
    cluster: str | None = metadata.cluster_id
    return cluster


def _previous_ports(data_dir: Path) -> tuple[int | None, int | None]:
    try:
        doc = orjson.loads((data_dir / _STATE).read_bytes())
        return int(doc["port"]), int(doc["controller_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _first_free(*candidates: int | None) -> int:
    for candidate in candidates:
        if candidate and port_free(candidate):
            return candidate
    return free_port()


def _write_config(data_dir: Path, port: int, controller_port: int) -> Path:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        # Topics are created by bus with their intended partitions, never by a typo'd consumer.
        "auto.create.topics.enable": "false",
        # One node: internal topics (offsets, transactions, share state) must fit on it.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "12",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "3",
    }
    config = data_dir / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    (data_dir / "log4j2.yaml").write_text(_LOG4J2)
    return config

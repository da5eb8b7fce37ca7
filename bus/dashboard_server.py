"""The web dashboard's adapters: a thread that samples Kafka into a `bus.dashboard.Board`, and HTTP.

`Dashboard` owns both threads for the length of a `with` block (`bus ui`, or `bus up` in-process).
Every `interval` the sampler takes one lag sample of every worker group (`LagMonitor`), reads the
scaling decisions the supervisor published since the last sample (`DecisionFeed`) and counts dead
letters (`DeadLetterCounter`), then swaps in the JSON the page polls. The HTTP thread only hands
out the last JSON and the page (`bus.dashboard_page`): it never touches Kafka.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as ClientError

from bus import naming
from bus.dashboard import RETENTION, Board
from bus.dashboard_page import PAGE
from bus.errors import BusError, InvalidEvent, KafkaError, KafkaUnavailable
from bus.events import CloudEvent
from bus.kafka.config import build, consumer_config
from bus.kafka.lag import DeadLetterCounter, LagMonitor
from bus.kafka_binding import from_record
from bus.localkafka import port_free
from bus.logs import log_event
from bus.manifest import Manifest
from bus.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bus.metrics import Registry
from bus.settings import KafkaSettings
from bus.status import SCALING_DECISION, ScalingDecision

__all__ = ["DEFAULT_PORT", "Dashboard", "DecisionFeed", "local_host", "pick_port"]

logger = logging.getLogger("bus.dashboard")

DEFAULT_PORT = 8089
"""Port of `bus ui`, and of `bus up`'s dashboard when free."""

_SECURITY = {
    # Everything is inline and the data comes from this server: the browser may load nothing else.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def pick_port(wanted: int | None) -> int:
    """`wanted` if given; else DEFAULT_PORT when free, else 0 (any free port)."""
    if wanted is not None:
        return wanted
    return DEFAULT_PORT if port_free(DEFAULT_PORT) else 0


class DecisionFeed:
    """Every scaling decision published to `naming.scaling_topic`, in log order, read as it comes.

    `bus.kafka.lag.DecisionLog` keeps only the latest decision per function; the dashboard lists
    the recent ones. The first read starts `tail` records before each partition's end. A missing
    topic (no supervisor ran yet) yields nothing and is looked for again next read. The consumer
    joins no group and commits nothing.
    """

    def __init__(self, settings: KafkaSettings, *, prefix: str, tail: int = 5000) -> None:
        self._topic = naming.scaling_topic(prefix)
        self._tail = tail
        self._bootstrap = settings.bootstrap_servers
        config = {
            **consumer_config(settings, naming.reader_group(uuid.uuid4().hex)),
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,  # an empty fetch at the end answers after this long
        }
        self._consumer = build(Consumer, config)
        self._positions: dict[int, int] = {}

    def __enter__(self) -> DecisionFeed:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()

    def read(self, *, timeout: float = 5.0) -> list[ScalingDecision]:
        """The decisions published since the last read (the last `tail` records at the first)."""
        consumer = self._consumer
        try:
            found = consumer.list_topics(self._topic, timeout=timeout).topics.get(self._topic)
            if found is None or found.error is not None:
                return []
            starts: dict[int, int] = {}
            for p in sorted(found.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=timeout, cached=False
                )
                known = self._positions.get(p)
                start = max(low, high - self._tail) if known is None else max(low, known)
                if start < high:
                    starts[p] = start
                else:
                    self._positions[p] = high
        except KafkaException as exc:
            reason = f"cannot read {self._topic!r} at {self._bootstrap}: {exc.args[0].str()}"
            raise KafkaUnavailable(reason) from exc
        return self._scan(starts, timeout) if starts else []

    def _scan(self, starts: dict[int, int], timeout: float) -> list[ScalingDecision]:
        """Read each partition from its start to its end (or until `timeout`)."""
        consumer = self._consumer
        found: list[ScalingDecision] = []
        pending = set(starts)
        deadline = time.monotonic() + timeout
        consumer.assign([TopicPartition(self._topic, p, offset) for p, offset in starts.items()])
        try:
            while pending and time.monotonic() < deadline:
                for message in consumer.consume(500, 0.1):
                    error, p, offset = message.error(), message.partition() or 0, message.offset() or 0
                    if error is None:
                        self._positions[p] = offset + 1
                        decision = _decision(message)
                        if decision is not None:
                            found.append(decision)
                    elif error.code() == ClientError._PARTITION_EOF:
                        self._positions[p] = offset  # an end-of-partition event has the end offset
                        pending.discard(p)
                    elif error.fatal():
                        raise KafkaError(f"reading {self._topic!r} failed: {error.str()}")
        finally:
            consumer.unassign()
        return found


def _decision(message: Any) -> ScalingDecision | None:
    try:
        event: CloudEvent = from_record(message.key(), message.value(), message.headers())
    except InvalidEvent:  # not a CloudEvent: not a decision
        return None
    return ScalingDecision.from_data(event.data) if event.type == SCALING_DECISION else None


def local_host(header: str) -> bool:
    """Whether a Host header names this machine's loopback (`localhost`, 127.x, ::1), any port."""
    name = header.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Dashboard:
    """The dashboard of `manifest`'s functions at `url` while the `with` block runs.

    Port 0 takes any free port. Raises BusError if it cannot listen there.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        manifest: Manifest,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        interval: float = 2.0,
        retention: float = RETENTION,
        metrics: Registry | None = None,
    ) -> None:
        """`metrics`: also served at `/metrics` (`bus up` passes the supervisor's)."""
        self._settings = settings
        self._metrics = metrics
        self._manifest = manifest
        self._interval = interval
        self._board = Board.keeping(
            manifest.functions, prefix=manifest.prefix, interval=interval, retention=retention
        )
        self._snapshot = orjson.dumps(self._board.to_json())
        self._stop = threading.Event()
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler())
        except OSError as exc:
            where = f"{host}:{port}"
            raise BusError(
                f"the dashboard cannot listen on {where} ({exc.strerror}): choose another port "
                "(`bus ui --port`, `bus up --ui-port`; 0: any free)"
            ) from exc
        self._server.daemon_threads = True
        bound = self._server.server_address[0]
        self._loopback = ipaddress.ip_address(
            bound if isinstance(bound, str) else bytes(bound).decode()
        ).is_loopback
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        """Where the page is, e.g. http://127.0.0.1:8089/."""
        host, port = self._server.server_address[:2]
        shown = host if isinstance(host, str) else host.decode()
        return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"

    def __enter__(self) -> Dashboard:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the sampler and the HTTP server threads."""
        settings, prefix = self._settings, self._manifest.prefix
        with contextlib.ExitStack() as undo:  # a client that cannot be built closes the others
            undo.callback(self._server.server_close)
            monitor = LagMonitor(
                settings,
                functions=self._manifest.functions,
                prefix=prefix,
                rate_window=max(5.0, self._interval),
            )
            undo.callback(monitor.close)
            feed = DecisionFeed(settings, prefix=prefix)
            undo.callback(feed.close)
            dead_letters = DeadLetterCounter(settings, prefix=prefix)
            undo.pop_all()
        self._threads = [
            threading.Thread(
                target=self._sample, args=(monitor, feed, dead_letters), name="dashboard-sampler", daemon=True
            ),
            threading.Thread(target=self._server.serve_forever, name="dashboard-http", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log_event(
            logger,
            "dashboard_serving",
            url=self.url,
            prefix=prefix,
            functions=sorted(self._manifest.functions),
            interval_s=self._interval,
        )

    def close(self) -> None:
        """Stop sampling and serving; wait for both threads."""
        self._stop.set()
        if self._threads:  # shutdown() waits for serve_forever(), which must have started
            self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []

    def _sample(self, monitor: LagMonitor, feed: DecisionFeed, dead_letters: DeadLetterCounter) -> None:
        """Sample every `interval` seconds until stopped (a late sample is not made up for)."""
        names = sorted(self._manifest.functions)
        with monitor, feed, dead_letters:
            due = time.monotonic()
            while not self._stop.is_set():
                try:
                    self._board.decided(feed.read())
                    counts: dict[str, int | None] = {name: dead_letters.count(name) for name in names}
                    samples = monitor.sample()  # last, so that the time is the lag's
                    self._board.record(samples, counts, wall=time.time())
                except BusError as exc:  # Kafka away for a moment: say so on the page, try again
                    self._board.failed(str(exc))
                    log_event(logger, "dashboard_sample_failed", reason=str(exc), level=logging.WARNING)
                except Exception as exc:  # a bug must not stop the sampling silently
                    self._board.failed(f"internal error: {exc!r}")
                    logger.exception("dashboard_sample_crashed")
                self._snapshot = orjson.dumps(self._board.to_json())
                due += self._interval
                if due < time.monotonic():  # late: the next sample a whole interval from now
                    due = time.monotonic() + self._interval
                self._stop.wait(due - time.monotonic())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        dashboard = self
        page = PAGE.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if dashboard._loopback and not local_host(self.headers.get("Host", "")):
                    # A page on another origin whose name resolves here (DNS rebinding) must not read it.
                    self.send_error(403, "the dashboard answers to localhost names only")
                    return
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(page, "text/html; charset=utf-8")
                elif path == "/api/state":
                    self._send(dashboard._snapshot, "application/json")
                elif path == "/metrics" and dashboard._metrics is not None:
                    self._send(dashboard._metrics.render().encode(), METRICS_CONTENT_TYPE)
                else:
                    self.send_error(404, "the dashboard serves /, /api/state and (under bus up) /metrics")

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in _SECURITY.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Polls are not logged."""

        return Handler

"""RELIABILITY S4: oversized, slow and flooding requests get 413 / 408 / 431 without being read whole.

Raw sockets against a real gateway process (`python -m gateway`) on the real broker, with 1 s
header and body deadlines so the slow cases finish quickly.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bus import naming
from gateway.server import protocol
from tests.support import GatewayProcess, KafkaEnv

DECLARED = 100 * 1024 * 1024
"""The body size the flooding requests announce or send at most: 100 MiB."""
READ_AT_MOST = 32 * 1024 * 1024
"""What the server may take of a flood before it stops reading (its linger plus kernel buffers)."""
ANSWER_WITHIN = 5.0
"""Seconds any refusal may take, the 1 s deadlines included."""
EVENT = {"specversion": "1.0", "source": "/tests/limits", "type": "test.limits"}


@dataclass
class Gateway:
    """The gateway process under test, its ingress topic, and the ids the tests meant to publish."""

    process: GatewayProcess
    ingress: str
    published: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        """Its HTTP port."""
        return self.process.port

    @property
    def url(self) -> str:
        """Its base URL."""
        return self.process.url


@pytest.fixture(scope="module")
def gateway(kafka: KafkaEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway with 1 s header and body deadlines and the default 16 KiB / 1 MiB limits."""
    prefix = kafka.prefix()
    env = {"BUS_HEADER_TIMEOUT": "1", "BUS_BODY_TIMEOUT": "1"}
    process = GatewayProcess(kafka, prefix, tmp_path_factory.mktemp("limits"), env=env)
    process.start()
    try:
        yield Gateway(process, naming.ingress_topic(prefix))
    finally:
        process.stop()


@dataclass
class Answer:
    """What the gateway answered on a raw connection, and when."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    """From the start of the request to the end of the answer."""
    sent: int
    """Request bytes the gateway took before the connection ended."""

    def problem(self) -> str:
        """The `error` code of a JSON problem answer."""
        assert self.headers["content-type"] == "application/json", self.headers
        error = orjson.loads(self.body)["error"]
        assert isinstance(error, str)
        return error


class Raw:
    """One TCP connection to the gateway that writes whatever a test asks, however slowly."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.started = time.monotonic()
        self.received = b""
        self.closed = False
        self.sent = 0

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Write `data` and take in what was answered meanwhile; False once the gateway stopped reading."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        self.sent += len(data)
        self._take(wait=0)
        return True

    def dribble(self, data: bytes, *, every: float) -> None:
        """Write `data` one byte per `every` seconds until it is all sent or an answer ended."""
        for index in range(len(data)):
            if self.closed or not self.send(data[index : index + 1]):
                return
            self._take(wait=every)

    def flood(self, chunk: bytes, *, limit: int) -> None:
        """Write `chunk` over and over until `limit` bytes are sent or the gateway stops reading."""
        while self.sent < limit and self.send(chunk):
            pass

    def wait_closed(self, *, within: float) -> None:
        """Read until the gateway closes the connection; fail `within` seconds after it opened."""
        deadline = self.started + within
        while not self.closed and time.monotonic() < deadline:
            self._take(wait=deadline - time.monotonic())
        assert self.closed, f"no close within {within}s; got {self.received[:200]!r}"

    def answer(self, *, within: float = ANSWER_WITHIN) -> Answer:
        """The answer, read until the gateway closes the connection (every refusal closes it)."""
        self.wait_closed(within=within)
        seconds = time.monotonic() - self.started
        self.close()
        head, _, body = self.received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), self.received[:200]
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        return Answer(int(lines[0].split()[1]), headers, body, seconds, self.sent)

    def _take(self, *, wait: float) -> None:
        while not self.closed:
            readable, _, _ = select.select([self.sock], [], [], max(wait, 0))
            if not readable:
                return
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:  # the gateway stopped lingering; what it answered was read
                data = b""
            self.received += data
            self.closed = not data
            wait = 0


def _head(*lines: str) -> bytes:
    return "\r\n".join(["POST /events HTTP/1.1", "Host: gateway", *lines, "", ""]).encode()


STRUCTURED = "Content-Type: application/cloudevents+json"


def _event(gateway: Gateway, name: str) -> bytes:
    return orjson.dumps({**EVENT, "id": f"{name}-{gateway.port}"})


def _still_serves(gateway: Gateway, name: str) -> None:
    """A normal POST on a new connection is accepted after the hostile request."""
    event = {**EVENT, "id": f"after-{name}"}
    response = httpx.post(
        f"{gateway.url}/events",
        content=orjson.dumps(event),
        headers={"content-type": "application/cloudevents+json"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    gateway.published.append(event["id"])


def test_a_declared_100_mb_body_is_refused_413_before_it_is_sent(gateway: Gateway) -> None:
    """A Content-Length of 100 MiB gets 413 after a 64 KiB start, and the connection closes."""
    raw = Raw(gateway.port)
    raw.send(_head(STRUCTURED, f"Content-Length: {DECLARED}") + b"x" * 65536)
    answer = raw.answer()
    assert (answer.status, answer.problem()) == (413, "body_too_large")
    assert answer.headers["connection"] == "close"
    assert answer.seconds < 1.0
    _still_serves(gateway, "declared")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_100_mb_flood_is_answered_413_and_not_read_to_the_end(gateway: Gateway, framing: str) -> None:
    """A client pushing 100 MiB without pause gets 413; the gateway stops taking bytes long before."""
    raw = Raw(gateway.port)
    if framing == "chunked":
        raw.send(_head(STRUCTURED, "Transfer-Encoding: chunked"))
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    else:
        raw.send(_head(STRUCTURED, f"Content-Length: {DECLARED}"))
        chunk = b"x" * 0x10000
    raw.flood(chunk, limit=DECLARED)
    answer = raw.answer()
    assert (answer.status, answer.problem()) == (413, "body_too_large")
    assert answer.sent < READ_AT_MOST, f"the gateway took {answer.sent} bytes of the flood"
    assert answer.seconds < ANSWER_WITHIN
    _still_serves(gateway, f"flood-{framing}")


def test_a_body_over_the_limit_a_client_sends_whole_still_gets_its_413(gateway: Gateway) -> None:
    """A 3 MiB body sent by an ordinary client is answered 413, not cut off by a reset."""
    response = httpx.post(
        f"{gateway.url}/events",
        content=b"x" * (3 * 1024 * 1024),
        headers={"content-type": "application/cloudevents+json"},
        timeout=10,
    )
    assert response.status_code == 413
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_slow_body_is_answered_408_at_the_body_deadline(gateway: Gateway, framing: str) -> None:
    """A valid event sent a byte per 100 ms gets 408 about 1 s in, and is not published."""
    body = _event(gateway, f"slow-body-{framing}")
    raw = Raw(gateway.port)
    if framing == "chunked":
        raw.send(_head(STRUCTURED, "Transfer-Encoding: chunked"))
        raw.dribble(b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body))), every=0.1)
    else:
        raw.send(_head(STRUCTURED, f"Content-Length: {len(body)}"))
        raw.dribble(body, every=0.1)
    answer = raw.answer()
    assert (answer.status, answer.problem()) == (408, "request_timeout")
    assert 0.9 < answer.seconds < 3.0, answer.seconds
    assert answer.headers["connection"] == "close"
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert 'bus_gateway_rejects_total{reason="request_timeout"}' in metrics
    _still_serves(gateway, f"slow-body-{framing}")


def test_slow_headers_are_answered_408_at_the_header_deadline(gateway: Gateway) -> None:
    """A request whose headers trickle in a byte per 100 ms gets 408 about 1 s in (slowloris)."""
    raw = Raw(gateway.port)
    raw.dribble(_head(STRUCTURED, "X-Slow: " + "s" * 100), every=0.1)
    answer = raw.answer()
    assert (answer.status, answer.problem()) == (408, "request_timeout")
    assert 0.9 < answer.seconds < 3.0, answer.seconds
    _still_serves(gateway, "slow-headers")


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(gateway: Gateway) -> None:
    """An idle connection is closed about 1 s in, without an answer to a request never made."""
    raw = Raw(gateway.port)
    raw.wait_closed(within=ANSWER_WITHIN)
    assert raw.received == b""
    assert 0.9 < time.monotonic() - raw.started < 3.0


FLOODS = {
    "one 100 KB header": [STRUCTURED, "X-Big: " + "b" * 100_000],
    "10,000 small headers": [STRUCTURED, *(f"X-{i}: a" for i in range(10_000))],
    "one 20 KB header in one write": [STRUCTURED, "X-Big: " + "b" * 20_000],
}


@pytest.mark.parametrize("headers", FLOODS.values(), ids=FLOODS.keys())
@pytest.mark.parametrize("ending", ["complete", "unfinished"])
def test_a_header_flood_is_answered_431(gateway: Gateway, headers: list[str], ending: str) -> None:
    """Headers over 16 KiB get 431 whether the block ends or never does, and no 5xx."""
    body = _event(gateway, "header-flood")
    head = _head(*headers, f"Content-Length: {len(body)}")
    raw = Raw(gateway.port)
    raw.send(head + body if ending == "complete" else head[:-4])
    answer = raw.answer()
    assert (answer.status, answer.problem()) == (431, "headers_too_large")
    assert answer.seconds < 1.0
    _still_serves(gateway, "header-flood")


def test_headers_just_under_the_limit_are_served(gateway: Gateway) -> None:
    """A request line and headers of nearly 16 KiB are not refused: the limit is not cut short."""
    body = _event(gateway, "under-limit")
    head = _head(STRUCTURED, "Connection: close", "X-Pad: ", f"Content-Length: {len(body)}")
    padded = head.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (16_384 - len(head)))
    assert len(padded) == 16_384
    raw = Raw(gateway.port)
    raw.send(padded + body)
    answer = raw.answer()
    assert answer.status == 202, answer.body
    gateway.published.append(f"under-limit-{gateway.port}")


def _answers(received: bytes) -> list[tuple[int, bytes]]:
    """Status and body of each answer on a connection, in order."""
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        answers.append((int(lines[0].split()[1]), rest[:length]))
        received = rest[length:]
    return answers


def test_a_kept_alive_connection_holds_its_next_request_to_the_same_header_limit(gateway: Gateway) -> None:
    """After an accepted request, a 20 KB header on the same connection still gets 431."""
    raw = Raw(gateway.port)
    body = _event(gateway, "kept-alive")
    raw.send(_head(STRUCTURED, f"Content-Length: {len(body)}") + body)
    deadline = time.monotonic() + ANSWER_WITHIN
    while b"\r\n\r\n" not in raw.received and time.monotonic() < deadline:
        raw._take(wait=0.05)
    gateway.published.append(f"kept-alive-{gateway.port}")
    raw.send(_head(*FLOODS["one 20 KB header in one write"], "Content-Length: 2") + b"{}")
    raw.wait_closed(within=ANSWER_WITHIN)
    answers = _answers(raw.received)
    assert [status for status, _ in answers] == [202, 431], answers
    assert orjson.loads(answers[1][1])["error"] == "headers_too_large"


def test_a_header_flood_pipelined_behind_a_request_is_refused_after_its_answer(gateway: Gateway) -> None:
    """A flood written right behind a valid request gets 431, after that request's own 202."""
    body = _event(gateway, "pipelined")
    flood = _head(*FLOODS["10,000 small headers"], "Content-Length: 2") + b"{}"
    raw = Raw(gateway.port)
    raw.send(_head(STRUCTURED, f"Content-Length: {len(body)}") + body + flood)
    gateway.published.append(f"pipelined-{gateway.port}")
    raw.wait_closed(within=ANSWER_WITHIN)
    answers = _answers(raw.received)
    assert [status for status, _ in answers] == [202, 431], answers
    assert orjson.loads(answers[1][1])["error"] == "headers_too_large"


def test_the_gateway_parses_with_httptools() -> None:
    """The gateway's protocol is uvicorn's httptools one: h11 costs about 40% of a core's request rate."""
    assert issubclass(protocol(header_timeout=1, max_header_bytes=16_384), HttpToolsProtocol)


def test_a_malformed_chunk_is_answered_400_while_the_app_waits_for_the_body(gateway: Gateway) -> None:
    """A chunk size that is not hexadecimal gets 400 at once, as a JSON problem, and the connection closes."""
    raw = Raw(gateway.port)
    raw.send(_head(STRUCTURED, "Transfer-Encoding: chunked") + b'5\r\n{"a":\r\nzz\r\n')
    answer = raw.answer()
    assert (answer.status, answer.problem()) == (400, "invalid_http")
    assert answer.seconds < 1.0
    _still_serves(gateway, "malformed-chunk")


def test_nothing_refused_reached_kafka_and_nothing_failed(kafka: KafkaEnv, gateway: Gateway) -> None:
    """The ingress topic holds only the normal POSTs; no 5xx, no error logged, every refusal documented."""
    _still_serves(gateway, "last")
    records = kafka.read_exactly(gateway.ingress, len(gateway.published))
    ids = sorted(dict(record.headers())["ce_id"].decode() for record in records)
    assert ids == sorted(gateway.published)
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    assert 'status="5' not in metrics
    doc = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    assert {"408", "413", "431"} <= set(doc["paths"]["/events"]["post"]["responses"])
    codes = doc["components"]["schemas"]["Problem"]["properties"]["error"]["enum"]
    assert {"request_timeout", "body_too_large", "headers_too_large"} <= set(codes)
    log = gateway.process.log.read_text()
    assert "Exception in ASGI application" not in log
    assert '"level":"error"' not in log

"""The gateway's HTTP/1.1 connections: uvicorn's h11 protocol with the refusals RELIABILITY S4 asks for.

uvicorn's own protocols answer a header flood with 400 (h11) or buffer it without bound (httptools:
llhttp leaves the limit to its embedder), wait forever for headers that never end, and keep reading a
request body the app has already answered. `GatewayProtocol`:

- answers `431` to a request line and headers over `max_header_bytes` (h11 only bounds incomplete
  ones; a whole block arriving in one read is checked here);
- answers `408` when a request's headers are not complete `header_timeout` seconds after the
  connection opened or the previous answer (a connection that sent nothing is closed silently);
- stops parsing once the app answered before the body ended (413, 408, 401, 404...) and closes
  after a short linger, so a 100 MB body is never read and the client still gets to read the answer.

Its own refusals are JSON problems like the app's; the app's metrics do not see them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import orjson
from starlette.types import ASGIApp
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.server import Server, ServerState

from gateway.settings import GatewaySettings

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "GatewayProtocol", "protocol", "serve"]

LINGER_SECONDS = 2.0
"""How long a connection closing under an unfinished body still discards what arrives."""
LINGER_BYTES = 4 * 1024 * 1024
"""How much it discards at most: a client a few times over the limit finishes sending and reads the
answer; a flood is cut here. Closing with unread data would reset the connection and could destroy
the answer before the client read it (what Apache's and nginx's lingering close avoid)."""

_PROBLEMS = {
    400: ("invalid_http", "not a valid HTTP/1.1 request"),
    408: ("request_timeout", "the request line and headers did not arrive in time"),
    431: ("headers_too_large", "the request line and headers are over the limit"),
}


class _Connection(h11.Connection):
    """h11's server side that also refuses a complete header block over the limit, and keeps the
    status its last protocol error suggests."""

    def __init__(self, max_header_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.refusal = 400
        self.answered_early = False
        """This answer started before the request body ended: the connection closes after it."""

    def next_event(self) -> Any:  # h11's own annotation names its private sentinel types
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            # h11 hints 431 for a buffer over the limit; 501 for an unknown coding is the client's fault: 400.
            self.refusal = 431 if exc.error_status_hint == 431 else 400
            raise
        if isinstance(event, h11.Request) and _header_bytes(event) > self.max_header_bytes:
            self.refusal = 431
            raise h11.RemoteProtocolError("header block too long", error_status_hint=431)
        return event

    def send(self, event: h11.Event) -> bytes | None:  # type: ignore[override]  # one signature for h11's overloads
        data = super().send(event)
        if isinstance(event, h11.Response) and self.their_state is h11.SEND_BODY and data:
            self.answered_early = True
            if not any(name.lower() == b"connection" for name, _ in event.headers):
                # Said in the header block h11 wrote, not to h11: told, h11 would have uvicorn close at
                # once, and the lingering close is GatewayProtocol's. Otherwise a client would reuse
                # a connection about to close.
                data = data[:-2] + b"connection: close\r\n\r\n"
        return data


def _header_bytes(request: h11.Request) -> int:
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())


class GatewayProtocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline, 431 for header floods and a lingering close."""

    header_timeout = 10.0
    """Seconds a request's line and headers may take; `protocol()` sets it from the settings."""
    max_header_bytes = 16_384
    """Largest request line and headers; `protocol()` sets it from the settings."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._parser = self.conn = _Connection(self.max_header_bytes)
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._discard = -1
        """Bytes still discarded while lingering; -1 while parsing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]  # asyncio passes a Transport
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discard >= 0:
            self._discard -= len(data)
            if self._discard < 0:
                self.transport.close()
            return
        super().data_received(data)
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._header_timer.cancel()
            self._header_timer = None

    def on_response_complete(self) -> None:
        if self._parser.answered_early and not self.transport.is_closing():
            # Answered before the body ended: reading on would read all of it.
            self.server_state.total_requests += 1
            self._linger()
            return
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn on an h11 protocol error: answer what h11 hinted, as a JSON problem."""
        self._refuse(self._parser.refusal)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        pending, _ = self.conn.trailing_data
        if pending:
            self._refuse(408)
        else:
            self.transport.close()  # nothing asked, nothing to answer

    def _refuse(self, status: int) -> None:
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            error, reason = _PROBLEMS.get(status, _PROBLEMS[400])
            body = orjson.dumps({"error": error, "reason": reason})
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            for event in (
                h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
        self._linger()

    def _linger(self) -> None:
        """Stop parsing, send FIN, discard what still arrives for a while, then close."""
        if self.transport.is_closing():
            return
        self._discard = LINGER_BYTES
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)


def protocol(*, header_timeout: float, max_header_bytes: int) -> type[GatewayProtocol]:
    """`GatewayProtocol` with these limits, for uvicorn's `Config(http=...)`."""

    class Configured(GatewayProtocol):
        pass

    Configured.header_timeout = header_timeout
    Configured.max_header_bytes = max_header_bytes
    return Configured


def serve(app: ASGIApp, settings: GatewaySettings) -> None:
    """Serve `app` until SIGTERM or SIGINT: stop accepting, finish in-flight requests, run shutdown."""
    # uvicorn's h11 protocol, not httptools: only h11 bounds the headers (docs/decisions/http-server.md).
    config = Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol(header_timeout=settings.header_timeout, max_header_bytes=settings.max_header_bytes),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
        lifespan="on",
    )
    Server(config).run()

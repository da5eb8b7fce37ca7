"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol with the refusals RELIABILITY S4 asks for.

uvicorn's httptools protocol buffers a header flood without bound (llhttp leaves the limit to its
embedder), waits forever for headers that never end, and keeps reading a request body the app has
already answered. `GatewayProtocol`:

- answers `431` to a request line and headers over `max_header_bytes`: llhttp is fed at most the
  room left while a head is incomplete, and the parser's callbacks count what it reported;
- answers `408` when a request's headers are not complete `header_timeout` seconds after the
  connection opened or the previous answer (a connection that sent nothing is closed silently);
- stops parsing once the app answered before the body ended (413, 408, 401, 404...) and closes
  after a short linger, so a 100 MB body is never read and the client still gets to read the answer.

Its own refusals are JSON problems like the app's; the app's metrics do not see them.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
from starlette.types import ASGIApp
from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
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


class _HeadersTooLarge(Exception):
    """Raised in a parser callback to stop llhttp; httptools turns it into an `HttpParserError`."""


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle that remembers an answer begun before the request body ended."""

    answered_early = False

    async def send(self, message: ASGISendEvent) -> None:
        """Send as uvicorn does; an early answer says `connection: close`, the protocol closes."""
        if self.response_started or not self.more_body or self.disconnected:
            await super().send(message)
            return
        self.answered_early = True
        # Without keep-alive uvicorn writes `connection: close`, and would also close at the end of
        # the answer: a reset while the client still sends. The lingering close is GatewayProtocol's.
        self.keep_alive = False
        await super().send(message)
        self.keep_alive = True


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, 431 for header floods and a lingering close."""

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
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._discard = -1
        """Bytes still discarded while lingering; -1 while parsing."""
        self._in_head = False
        """A request began and its headers are not complete."""
        self._in_body = False
        """A request's headers are complete and its body is not."""
        self._head_fed = 0
        """Bytes fed to llhttp since the last request ended: bounds a head it has not reported yet."""
        self._head_bytes = 0
        """Request line and header bytes the parser reported for the current request."""
        self._refusal = 400
        """The status of the next parser error: 431 once a callback found the head too long."""
        self._running: _Cycle | None = None
        """The request the app is answering; pipelined ones wait in `self.pipeline`."""
        self._refusal_after: int | None = None
        """A refusal of a pipelined request, due once the answers queued before it are written."""

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
        while True:
            if self._in_body:
                super().data_received(data)
                return
            # httptools reports a header only once it ended, and llhttp keeps an unfinished one in
            # memory: between bodies it gets no more than the room left under the limit.
            room = self.max_header_bytes - self._head_fed
            piece, data = data[:room], data[room:]
            self._head_fed += len(piece)
            super().data_received(piece)
            if self._discard >= 0 or self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # refused, or handed to the WebSocket protocol
            if self._head_fed >= self.max_header_bytes and not self._in_body:
                self._refuse(431)
                return
            if not data:
                return

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_fed = 0
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        cycle.__class__ = _Cycle  # built by uvicorn's on_headers_complete; its task has not run yet
        self._running = cast(_Cycle, cycle)
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        running = self._running
        if running is not None and running.answered_early:
            # Answered before the body ended: reading on would read all of it.
            self.server_state.total_requests += 1
            self._linger()
            return
        if self._refusal_after is not None and not self.pipeline:
            self.server_state.total_requests += 1
            self._refuse(self._refusal_after)
            return
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._arm_header_timer()

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn on a parser error: 431 if a callback found the head too long, else 400."""
        self._refuse(self._refusal)

    def _count(self, size: int) -> None:
        # Exact for a head that starts inside a read (pipelined after a body), which the feed bound
        # sees only from the next read on.
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            self._refusal = 431
            raise _HeadersTooLarge

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._discard >= 0 or self._in_body:
            return
        if self._in_head:
            self._refuse(408)
        else:
            self.transport.close()  # nothing asked, nothing to answer

    def _refuse(self, status: int) -> None:
        running = self._running
        if running is not None and not running.response_complete:
            if running is not self.cycle or not running.more_body:
                # A request pipelined behind the one being answered is broken: answers stay in order.
                if self.pipeline and self.pipeline[0][0] is self.cycle and self.cycle.more_body:
                    self.pipeline.popleft()  # the broken one itself: the refusal is its answer
                self._refusal_after = status
                self._discard = LINGER_BYTES
                return
            # Its own body is broken: the app, still reading it, hears a disconnect, and its answer
            # cannot follow ours.
            running.disconnected = True
            running.message_event.set()
            if running.response_started:
                self._linger()
                return
        error, reason = _PROBLEMS.get(status, _PROBLEMS[400])
        body = orjson.dumps({"error": error, "reason": reason})
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(STATUS_LINE[status] + head % len(body) + body)
        self._linger()

    def _linger(self) -> None:
        """Stop parsing, send FIN, discard what still arrives for a while, then close."""
        if self.transport.is_closing() or self._linger_timer is not None:
            return
        self._discard = LINGER_BYTES
        self._unset_keepalive_if_required()
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
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


KEEP_ALIVE = 65
"""Seconds an idle keep-alive connection stays open (more than any client's pool keeps it)."""


def serve(app: ASGIApp, settings: GatewaySettings) -> None:
    """Serve `app` until SIGTERM or SIGINT: stop accepting, finish in-flight requests, run shutdown."""
    config = Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol(header_timeout=settings.header_timeout, max_header_bytes=settings.max_header_bytes),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
        # Idle keep-alive connections stay open longer than clients keep them in their pools
        # (httpx 5 s, like uvicorn's default; load balancers 60 s): a server closing one just as
        # a client reuses it fails that request (httpx.ReadError, seen in R1 under load).
        timeout_keep_alive=KEEP_ALIVE,
        lifespan="on",
    )
    Server(config).run()

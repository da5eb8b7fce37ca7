"""HTTP routes of the gateway: decode requests with the HTTP binding, publish, answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bus import naming
from bus.errors import InvalidEvent, KafkaError, KafkaUnavailable
from bus.events import CloudEvent, parse_json
from bus.http_binding import from_http
from bus.kafka.producer import AsyncProducer
from bus.kafka_binding import Record, record_size, to_record
from bus.logs import log_event
from bus.notifications import PROVIDERS, normalise
from gateway.settings import GatewaySettings

__all__ = ["create_app"]

logger = logging.getLogger("bus.gateway")


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status, headers, media_type="application/json")


def _problem(status: int, error: str, reason: str, **fields: Any) -> Response:
    headers = {"retry-after": "1"} if status == 503 else None
    return _json(status, {"error": error, "reason": reason, **fields}, headers)


class _TooLargeError(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _rejected(exc: InvalidEvent) -> Response:
    log_event(logger, "event_rejected", field=exc.field, reason=exc.reason)
    return _problem(400, "invalid_event", exc.reason, field=exc.field)


def _refuse_batch(records: list[Record], limit: int) -> Response | None:
    """A 4xx for a batch Kafka could never take whole: empty, or a record over the limit."""
    if not records:
        return _problem(400, "invalid_event", "a batch must hold at least one event", field="body")
    for index, record in enumerate(records):
        size = record_size(record)
        if size > limit:
            field = f"[{index}]" if len(records) > 1 else "data"
            reason = f"the event is {size} bytes on Kafka; the limit is {limit}"
            return _problem(413, "event_too_large", reason, field=field)
    return None


def create_app(
    settings: GatewaySettings, producer_factory: Callable[[], AsyncProducer] | None = None
) -> Starlette:
    """The gateway's ASGI app; it opens its producer on startup and flushes it on shutdown."""
    ingress = naming.ingress_topic(settings.kafka.prefix)
    state: dict[str, AsyncProducer] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        factory = producer_factory or (lambda: AsyncProducer(settings.kafka))
        async with factory() as producer:
            state["producer"] = producer
            log_event(logger, "gateway_ready", ingress=ingress)
            yield
        log_event(logger, "gateway_stopped")

    async def read_body(request: Request) -> bytes | Response:
        try:
            return await _read_body(request, settings.max_body_bytes)
        except _TooLargeError:
            return _problem(413, "body_too_large", f"bodies are limited to {settings.max_body_bytes} bytes")

    async def accept(events: list[CloudEvent], *, allow_none: bool = False) -> Response:
        """Publish every event, answering 202 with their ids only once Kafka acknowledged all."""
        if not events and allow_none:
            return _json(202, {"ids": []})
        records = [(ingress, to_record(event)) for event in events]
        refusal = _refuse_batch([record for _, record in records], settings.kafka.max_record_bytes)
        if refusal is not None:
            return refusal
        try:
            await asyncio.wait_for(
                state["producer"].send_all(records), timeout=settings.kafka.delivery_timeout + 1
            )
        except (KafkaUnavailable, TimeoutError):
            log_event(logger, "publish_unavailable", events=len(records), level=logging.WARNING)
            return _problem(503, "kafka_unavailable", "Kafka did not acknowledge in time; retry")
        except KafkaError as exc:
            log_event(logger, "publish_failed", reason=str(exc), level=logging.ERROR)
            return _problem(503, "kafka_error", str(exc))
        return _json(202, {"ids": [event.id for event in events]})

    async def post_events(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            events = from_http(headers, body)
        except InvalidEvent as exc:
            return _rejected(exc)
        return await accept(events)

    async def post_notifications(request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in PROVIDERS:
            known = ", ".join(PROVIDERS)
            return _problem(404, "unknown_provider", f"no provider {provider!r}; use one of {known}")
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        try:
            events = normalise(provider, parse_json(body))
        except InvalidEvent as exc:
            return _rejected(exc)
        # S3's s3:TestEvent carries no object change: accepted, nothing published.
        return await accept(events, allow_none=True)

    async def healthz(request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        producer = state.get("producer")
        if producer is None or not await producer.connected(wait=2.0):
            return _problem(503, "not_ready", "Kafka is not reachable")
        return _json(200, {"status": "ready"})

    return Starlette(
        routes=[
            Route("/events", post_events, methods=["POST"]),
            Route("/notifications/{provider}", post_notifications, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )

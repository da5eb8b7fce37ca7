"""HTTP routes of the gateway: decode requests with the HTTP binding, publish, answer."""

from __future__ import annotations

import asyncio
import logging
import time
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
from bus.signatures import ReplayCache, SignatureError, verify
from gateway.settings import GatewaySettings

__all__ = ["Gateway", "create_app"]

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


class Gateway:
    """The gateway's request handlers over one producer (opened and flushed by `lifespan`)."""

    def __init__(
        self, settings: GatewaySettings, producer_factory: Callable[[], AsyncProducer] | None = None
    ) -> None:
        self._settings = settings
        self._factory = producer_factory or (lambda: AsyncProducer(settings.kafka))
        self._ingress = naming.ingress_topic(settings.kafka.prefix)
        self._producer: AsyncProducer | None = None
        self._replays = ReplayCache(ttl=2 * settings.signature_tolerance)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the producer for the app's lifetime; leaving flushes what is in flight."""
        async with self._factory() as producer:
            self._producer = producer
            signed = sorted(self._settings.webhook_secrets)
            log_event(logger, "gateway_ready", ingress=self._ingress, signed=signed)
            unsigned = [p for p in PROVIDERS if p not in self._settings.webhook_secrets]
            if unsigned:
                log_event(
                    logger,
                    "notifications_unsigned",
                    providers=unsigned,
                    fix="declare sources.object_stores with secret_env in bus.yaml",
                    level=logging.WARNING,
                )
            yield
            self._producer = None
        log_event(logger, "gateway_stopped")

    async def post_events(self, request: Request) -> Response:
        """`POST /events`: binary, structured or batch CloudEvents."""
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            events = from_http(headers, body)
        except InvalidEvent as exc:
            return _rejected(exc)
        return await self._accept(events)

    async def post_notifications(self, request: Request) -> Response:
        """`POST /notifications/{provider}`: signature (if configured), replay check, then publish."""
        provider = request.path_params["provider"]
        if provider not in PROVIDERS:
            known = ", ".join(PROVIDERS)
            return _problem(404, "unknown_provider", f"no provider {provider!r}; use one of {known}")
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        secrets = self._settings.webhook_secrets.get(provider)
        if not secrets:
            return await self._publish_notification(provider, body)
        # Signed providers: the signature is checked on the raw bytes, before anything is parsed.
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            delivery = verify(
                headers, body, secrets=secrets, now=time.time(), tolerance=self._settings.signature_tolerance
            )
        except SignatureError as exc:
            log_event(logger, "signature_rejected", provider=provider, reason=str(exc))
            return _problem(401, "invalid_signature", str(exc))
        if not self._replays.reserve(delivery.id, time.time()):
            log_event(logger, "replay_rejected", provider=provider, delivery=delivery.id)
            reason = f"delivery {delivery.id!r} was accepted already or is being published"
            return _problem(409, "duplicate_delivery", reason)
        response = await self._publish_notification(provider, body)
        if response.status_code == 202:
            self._replays.accept(delivery.id, time.time())
        else:
            self._replays.release(delivery.id)  # nothing was published: the sender's retry must get through
        return response

    async def healthz(self, request: Request) -> Response:
        """Liveness."""
        return _json(200, {"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the broker answers."""
        producer = self._producer
        if producer is None or not await producer.connected(wait=2.0):
            return _problem(503, "not_ready", "Kafka is not reachable")
        return _json(200, {"status": "ready"})

    async def _body(self, request: Request) -> bytes | Response:
        limit = self._settings.max_body_bytes
        try:
            return await _read_body(request, limit)
        except _TooLargeError:
            return _problem(413, "body_too_large", f"bodies are limited to {limit} bytes")

    async def _publish_notification(self, provider: str, body: bytes) -> Response:
        try:
            events = normalise(provider, parse_json(body))
        except InvalidEvent as exc:
            return _rejected(exc)
        # S3's s3:TestEvent carries no object change: accepted, nothing published.
        return await self._accept(events, allow_none=True)

    async def _accept(self, events: list[CloudEvent], *, allow_none: bool = False) -> Response:
        """Publish every event, answering 202 with their ids only once Kafka acknowledged all."""
        if not events and allow_none:
            return _json(202, {"ids": []})
        records = [(self._ingress, to_record(event)) for event in events]
        refusal = _refuse_batch([record for _, record in records], self._settings.kafka.max_record_bytes)
        if refusal is not None:
            return refusal
        if self._producer is None:
            return _problem(503, "not_ready", "the gateway is starting or stopping; retry")
        try:
            await asyncio.wait_for(
                self._producer.send_all(records), timeout=self._settings.kafka.delivery_timeout + 1
            )
        except (KafkaUnavailable, TimeoutError):
            log_event(logger, "publish_unavailable", events=len(records), level=logging.WARNING)
            return _problem(503, "kafka_unavailable", "Kafka did not acknowledge in time; retry")
        except KafkaError as exc:
            log_event(logger, "publish_failed", reason=str(exc), level=logging.ERROR)
            return _problem(503, "kafka_error", str(exc))
        return _json(202, {"ids": [event.id for event in events]})


def create_app(
    settings: GatewaySettings, producer_factory: Callable[[], AsyncProducer] | None = None
) -> Starlette:
    """The gateway's ASGI app; it opens its producer on startup and flushes it on shutdown."""
    gateway = Gateway(settings, producer_factory)
    return Starlette(
        routes=[
            Route("/events", gateway.post_events, methods=["POST"]),
            Route("/notifications/{provider}", gateway.post_notifications, methods=["POST"]),
            Route("/healthz", gateway.healthz, methods=["GET"]),
            Route("/readyz", gateway.readyz, methods=["GET"]),
        ],
        lifespan=gateway.lifespan,
    )

"""HTTP routes of the gateway: decode requests with the HTTP binding, publish, answer, count."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson
from confluent_kafka import KafkaException
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from bus import naming
from bus.auth import AuthError, ForbiddenError, JwtVerifier, Principal, authorize
from bus.errors import InvalidEvent, KafkaError, KafkaUnavailable
from bus.events import CloudEvent, parse_json
from bus.flows import FLOW, FLOW_RUN, FLOW_STEP
from bus.http_binding import from_http
from bus.invoke import INVOKED_TYPE, REPLY_EXTENSION, answer, invocation_event, no_reply
from bus.kafka_binding import Record, record_size, to_record
from bus.logs import log_event
from bus.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bus.metrics import Registry
from bus.notifications import PROVIDERS, normalise
from bus.ratelimit import RateLimiter
from bus.signatures import ReplayCache, SignatureError, verify
from bus.typed_events import typed
from gateway.openapi import document
from gateway.publisher import KafkaPublisher, Publisher
from gateway.replies import ReplyInbox
from gateway.settings import GatewaySettings, InvokeTarget
from gateway.timers import Scheduler, TimerMetrics

__all__ = ["Gateway", "GatewayMetrics", "create_app"]

logger = logging.getLogger("bus.gateway")

INVOKE_MARGIN = 5.0
"""Seconds a synchronous invocation waits beyond the function's timeout by default."""
MAX_INVOKE_WAIT = 900.0
"""The longest `?timeout=` a synchronous invocation may ask for (Lambda's limit)."""


Handler = Callable[[Request], Awaitable[Response]]
PublisherFactory = Callable[[], AbstractAsyncContextManager[Publisher]]
Follow = Callable[[Callable[[GatewaySettings], None]], AbstractContextManager[Any]]
"""Given where to hand new settings, a context that follows the applied manifest (bus.kafka.control_store)."""


class _Answer(Response):
    """A JSON response that also says what the metrics count: its problem code, the events published."""

    def __init__(
        self,
        status: int,
        doc: Any,
        headers: dict[str, str] | None = None,
        *,
        error: str | None = None,
        published: int = 0,
    ) -> None:
        super().__init__(orjson.dumps(doc), status, headers, media_type="application/json")
        self.error = error
        self.published = published


def _seconds(text: str | None, *, default: float) -> float | None:
    """`?timeout=` in seconds, 0.1 to MAX_INVOKE_WAIT; `default` when absent; None when invalid."""
    if text is None:
        return min(default, MAX_INVOKE_WAIT)
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.1 <= value <= MAX_INVOKE_WAIT else None


RESERVED_EXTENSIONS = (REPLY_EXTENSION, FLOW, FLOW_RUN, FLOW_STEP)
"""Extensions only bus sets: a reply topic (bus.invoke) and a flow's run and step (bus.flows)."""


def _unreserved(events: list[CloudEvent]) -> list[CloudEvent]:
    """`events`, unless one sets an extension only bus may set (RESERVED_EXTENSIONS)."""
    for index, event in enumerate(events):
        for name in RESERVED_EXTENSIONS:
            if name in event.extensions:
                where = f"[{index}].{name}" if len(events) > 1 else name
                raise InvalidEvent(where, "is set by bus itself (invocations, flows); leave it out")
    return events


def _json(status: int, doc: Any) -> Response:
    return _Answer(status, doc)


def _problem(
    status: int, error: str, reason: str, *, headers: dict[str, str] | None = None, **fields: Any
) -> Response:
    if status == 503:
        headers = {"retry-after": "1", **(headers or {})}
    return _Answer(status, {"error": error, "reason": reason, **fields}, headers, error=error)


class GatewayMetrics:
    """The gateway's Prometheus metrics, recorded in one place: around each handler, from its response."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.requests = self.registry.counter(
            "bus_gateway_requests_total",
            "HTTP requests answered, by route template and status.",
            ["route", "status"],
        )
        self.seconds = self.registry.histogram(
            "bus_gateway_request_seconds", "Seconds from request to response, by route template.", ["route"]
        )
        self.published = self.registry.counter(
            "bus_gateway_events_published_total",
            "Events Kafka acknowledged, by where they came from (http, notification).",
            ["source_kind"],
        )
        self.rejects = self.registry.counter(
            "bus_gateway_rejects_total", "Problem responses, by their error code.", ["reason"]
        )
        self.timers = TimerMetrics(self.registry)

    def timed(self, route: str, handler: Handler, source_kind: str | None = None) -> Handler:
        """`handler`, counted under the route template `route`; its 202s publish `source_kind` events."""

        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except Exception:
                self._record(route, 500, time.perf_counter() - started)  # what the server will answer
                raise
            self._record(route, response.status_code, time.perf_counter() - started)
            if isinstance(response, _Answer):
                if response.error is not None:
                    self.rejects.inc(reason=response.error)
                if response.published and source_kind is not None:
                    self.published.inc(response.published, source_kind=source_kind)
            return response

        return endpoint

    def _record(self, route: str, status: int, seconds: float) -> None:
        self.requests.inc(route=route, status=str(status))
        self.seconds.observe(seconds, route=route)


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


def _log_unusable(settings: GatewaySettings) -> None:
    """One error line per secret variable the manifest names that the environment cannot supply."""
    for item in settings.unusable:
        event = "secret_missing" if item.missing else "secret_unusable"
        log_event(logger, event, variable=item.variable, reason=item.reason, level=logging.ERROR)


class Gateway:
    """The gateway's request handlers over one producer (opened and flushed by `lifespan`)."""

    def __init__(
        self,
        settings: GatewaySettings,
        publisher: PublisherFactory | None = None,
        *,
        follow: Follow | None = None,
    ) -> None:
        self._settings = settings
        self._follow = follow
        self._scheduler: Scheduler | None = None
        self._ingress = naming.ingress_topic(settings.kafka.prefix)
        self._open_publisher = publisher or (
            lambda: KafkaPublisher(settings.kafka, instance=settings.instance)
        )
        self._publisher: Publisher | None = None
        self._kafka_replies = publisher is None  # a stand-in publisher (the bench's) has no Kafka
        self._replies: ReplyInbox | None = None
        self._replies_started = asyncio.Lock()
        self._replays = ReplayCache(ttl=2 * settings.signature_tolerance)
        self._limiter = RateLimiter()
        self.metrics = GatewayMetrics()
        self._openapi = orjson.dumps(document(max_body_bytes=settings.max_body_bytes))

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the publisher (and the timers) for the app's lifetime; leaving flushes what is in flight."""
        scheduler = self._scheduler = Scheduler(
            self._settings.kafka,
            self._settings.schedules,
            schemas=self._settings.schemas,
            metrics=self.metrics.timers,
        )
        async with (
            self._open_publisher() as publisher,
            scheduler.running(),
            contextlib.AsyncExitStack() as following,
        ):
            if self._follow is not None:
                following.enter_context(self._follow(self.reconfigure))
            self._publisher = publisher
            signed = sorted(self._settings.webhook_secrets)
            log_event(logger, "gateway_ready", ingress=self._ingress, signed=signed)
            _log_unusable(self._settings)
            unsigned = [
                p
                for p in PROVIDERS
                if p not in self._settings.webhook_secrets and p not in self._settings.webhook_missing
            ]
            if unsigned:
                log_event(
                    logger,
                    "notifications_unsigned",
                    providers=unsigned,
                    fix="declare sources.object_stores with secret_env in bus.yaml",
                    level=logging.WARNING,
                )
            try:
                yield
            finally:
                if self._replies is not None:
                    self._replies.close()
                    self._replies = None
            self._publisher = None
        log_event(logger, "gateway_stopped")

    def reconfigure(self, settings: GatewaySettings) -> None:
        """Serve a newly applied manifest (any thread): invocable functions, typed events' schemas,
        credentials, webhook secrets and schedules. The listener, limits and Kafka stay."""
        self._settings = replace(
            self._settings,
            functions=settings.functions,
            schemas=settings.schemas,
            auth=settings.auth,
            webhook_secrets=settings.webhook_secrets,
            webhook_missing=settings.webhook_missing,
            unusable=settings.unusable,
            schedules=settings.schedules,
        )
        _log_unusable(settings)
        if self._scheduler is not None:
            self._scheduler.update(settings.schedules, settings.schemas)
        log_event(logger, "gateway_reconfigured", functions=sorted(settings.functions))

    async def _caller(self, request: Request) -> tuple[dict[str, str], Principal | None, bytes] | Response:
        """(lower-case headers, the caller, the body), or the 401/4xx answer refusing them."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        principal = self._authenticate(headers)  # before the body is read: refusing costs nothing
        if isinstance(principal, Response):
            return principal
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        return headers, principal, body

    async def post_events(self, request: Request) -> Response:
        """`POST /events`: binary, structured or batch CloudEvents, from a permitted caller."""
        caller = await self._caller(request)
        if isinstance(caller, Response):
            return caller
        headers, principal, body = caller
        try:
            events = _unreserved(from_http(headers, body))
        except InvalidEvent as exc:
            return _rejected(exc)
        refusal = self._permit(principal, events)
        if refusal is not None:
            return refusal
        return await self._accept(events)

    def _authenticate(self, headers: Mapping[str, str]) -> Principal | Response | None:
        """The caller, None when auth is off, or a 401 answer."""
        auth = self._settings.auth
        if auth is None:
            return None
        try:
            if isinstance(auth, JwtVerifier):
                return auth.authenticate(headers, now=time.time())
            return auth.authenticate(headers)
        except AuthError as exc:
            log_event(logger, "auth_rejected", reason=exc.reason)
            return _problem(401, "unauthorized", exc.reason, headers={"www-authenticate": "Bearer"})

    def _permit(
        self, principal: Principal | None, events: list[CloudEvent], own_types: tuple[str, ...] = ()
    ) -> Response | None:
        """403 when the caller may not send these events here, 429/413 past its rate, else None
        (`principal` None: authentication is off, and only platform events are refused)."""
        if principal is not None and principal.tenant != self._settings.kafka.prefix:
            reason = (
                f"credential of tenant {principal.tenant!r} cannot publish to {self._settings.kafka.prefix!r}"
            )
            return _problem(403, "forbidden", reason, field="tenant")
        for index, event in enumerate(events):
            try:
                authorize(principal, source=event.source, type=event.type, own_types=own_types)
            except ForbiddenError as exc:
                field = f"[{index}].{exc.field}" if len(events) > 1 else exc.field
                key = None if principal is None else principal.key_id
                log_event(logger, "forbidden", key=key, field=field)
                return _problem(403, "forbidden", exc.reason, field=field)
        if principal is None or principal.rate is None or principal.burst is None:
            return None
        decision = self._limiter.take(
            f"{principal.tenant}/{principal.key_id}",
            rate=principal.rate,
            burst=principal.burst,
            cost=len(events),
            now=time.monotonic(),
        )
        if decision.allowed:
            return None
        if math.isinf(decision.retry_after):
            reason = f"{len(events)} events exceed this key's burst of {principal.burst}; split the batch"
            return _problem(413, "batch_over_burst", reason, field="body")
        wait = max(1, math.ceil(decision.retry_after))
        reason = f"over {principal.rate:g} events/s for key {principal.key_id!r}; retry in {wait} s"
        return _problem(429, "rate_limited", reason, headers={"retry-after": str(wait)})

    async def post_invoke(self, request: Request) -> Response:
        """`POST /functions/{name}/invoke[?mode=async][&timeout=S]`: run one function on this event
        and answer with its result (bus.invoke), or 202 once the event is on Kafka with `mode=async`."""
        caller = await self._caller(request)  # first: an unknown caller learns nothing of the functions
        if isinstance(caller, Response):
            return caller
        headers, principal, body = caller
        asked = self._invocation(request, listing=self._settings.auth is None)
        if isinstance(asked, Response):
            return asked
        target, sync, wait = asked
        try:
            (event,) = _unreserved([invocation_event(headers, body, request.path_params["name"])])
        except InvalidEvent as exc:
            return _rejected(exc)
        refusal = self._permit(principal, [event], own_types=(INVOKED_TYPE,))
        if refusal is not None or not sync:
            return refusal or await self._accept([event], topic=target.topic)
        return await self._call(event, target, request.path_params["name"], wait)

    def _invocation(self, request: Request, *, listing: bool) -> tuple[InvokeTarget, bool, float] | Response:
        """(the function's target, synchronous?, seconds to wait), or the 404/400 refusing them;
        `listing`: a 404 names the functions there are (not when callers authenticate)."""
        name = request.path_params["name"]
        target = self._settings.functions.get(name)
        if target is None:
            known = (
                f" (functions: {', '.join(sorted(self._settings.functions)) or 'none'})" if listing else ""
            )
            return _problem(404, "unknown_function", f"no function {name!r}{known}", field="name")
        mode = request.query_params.get("mode", "sync")
        if mode not in ("sync", "async"):
            return _problem(400, "invalid_query", f"mode must be sync or async, got {mode!r}", field="mode")
        wait = _seconds(request.query_params.get("timeout"), default=target.timeout + INVOKE_MARGIN)
        if wait is None:
            reason = f"timeout must be a number of seconds from 0.1 to {MAX_INVOKE_WAIT:g}"
            return _problem(400, "invalid_query", reason, field="timeout")
        return target, mode == "sync", wait

    async def _inbox(self) -> ReplyInbox | None:
        """This replica's reply inbox, started at the first synchronous invocation (None: no Kafka)."""
        if self._replies is not None or not self._kafka_replies or self._publisher is None:
            return self._replies
        async with self._replies_started:
            if self._replies is None:
                inbox = ReplyInbox(self._settings.kafka, instance=self._settings.instance)
                try:
                    await asyncio.to_thread(inbox.start, asyncio.get_running_loop())
                except (KafkaError, KafkaException) as exc:
                    log_event(logger, "reply_inbox_failed", reason=str(exc), level=logging.WARNING)
                    return None
                self._replies = inbox
        return self._replies

    async def _call(self, event: CloudEvent, target: InvokeTarget, function: str, wait: float) -> Response:
        """Publish `event` asking for a reply; answer with the reply, or 504 after `wait` seconds."""
        replies = await self._inbox()
        if replies is None:
            return _problem(503, "not_ready", "the gateway is starting or stopping; retry")
        if replies.waiting_for(event.id):
            reason = f"an invocation of event {event.id!r} is already waiting here; give each call its own id"
            return _problem(409, "duplicate_invocation", reason, field="id")
        event = event.with_extensions(**{REPLY_EXTENSION: replies.topic})
        future = replies.expect(event.id)
        published = await self._accept([event], topic=target.topic)
        if published.status_code != 202:
            replies.forget(event.id)
            return published
        reply = await replies.wait(event.id, future, wait)
        if reply is None:
            done = no_reply(event.id, function, wait)
        else:
            done = answer(reply, event.id, retry_after=target.retry_after)
        doc = orjson.loads(done.body)
        error = doc.get("error") if done.status != 200 and isinstance(doc, dict) else None
        return _Answer(done.status, doc, dict(done.headers), error=error, published=1)

    async def post_notifications(self, request: Request) -> Response:
        """`POST /notifications/{provider}`: signature (if configured), replay check, then publish."""
        provider = request.path_params["provider"]
        if provider not in PROVIDERS:
            known = ", ".join(PROVIDERS)
            return _problem(404, "unknown_provider", f"no provider {provider!r}; use one of {known}")
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        secrets = self._settings.webhook_secrets.get(provider, ())
        missing = self._settings.webhook_missing.get(provider, ())
        if not secrets and not missing:
            return await self._publish_notification(provider, body)
        # Signed providers: the signature is checked on the raw bytes, before anything is parsed.
        # A store whose secret variable is missing fails closed: never taken unsigned.
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            if not secrets:
                raise SignatureError("; ".join(item.reason for item in missing))
            delivery = verify(
                headers, body, secrets=secrets, now=time.time(), tolerance=self._settings.signature_tolerance
            )
        except SignatureError as exc:
            reason = "; ".join([str(exc), *(item.reason for item in missing if secrets)])
            log_event(logger, "signature_rejected", provider=provider, reason=reason)
            return _problem(401, "invalid_signature", reason)
        # Delivery ids are unique per sender: another provider's "42" is another delivery.
        key = (provider, delivery.id)
        if not self._replays.reserve(key, time.time()):
            return self._refuse_replay(provider, delivery.id)
        response = await self._publish_notification(provider, body)
        if response.status_code == 202:
            self._replays.accept(key, time.time())
        else:
            self._replays.release(key)  # nothing was published: the sender's retry must get through
        return response

    def _refuse_replay(self, provider: str, delivery: str) -> Response:
        """409 for a (provider, delivery id) already published; 503 while its publish is in flight."""
        if self._replays.in_flight((provider, delivery), time.time()):
            # Not a replay yet: the first attempt may still fail, and then only this retry would
            # deliver it; a 409 would make the sender drop it.
            log_event(logger, "delivery_in_flight", provider=provider, delivery=delivery)
            reason = f"delivery {delivery!r} is being published; retry to learn whether it was stored"
            return _problem(503, "delivery_in_flight", reason)
        log_event(logger, "replay_rejected", provider=provider, delivery=delivery)
        return _problem(409, "duplicate_delivery", f"delivery {delivery!r} was accepted already")

    async def healthz(self, request: Request) -> Response:
        """Liveness."""
        return _json(200, {"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the broker answers."""
        publisher = self._publisher
        if publisher is None or not await publisher.connected(wait=2.0):
            return _problem(503, "not_ready", "Kafka is not reachable")
        return _json(200, {"status": "ready"})

    async def metrics_text(self, request: Request) -> Response:
        """`GET /metrics`: Prometheus text format."""
        return Response(self.metrics.registry.render(), 200, media_type=METRICS_CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        """`GET /openapi.json`: the OpenAPI description of these routes."""
        return Response(self._openapi, 200, media_type="application/json")

    async def _body(self, request: Request) -> bytes | Response:
        """The whole body, or the problem answer: over the limit, too slow, or cut off."""
        limit, timeout = self._settings.max_body_bytes, self._settings.body_timeout
        try:
            async with asyncio.timeout(timeout):
                return await _read_body(request, limit)
        except _TooLargeError:
            return _problem(413, "body_too_large", f"bodies are limited to {limit} bytes")
        except TimeoutError:
            return _problem(408, "request_timeout", f"the body did not arrive within {timeout:g} s")
        except ClientDisconnect:  # nobody reads this answer; the metrics count it instead of a 500
            return _problem(400, "incomplete_body", "the connection closed before the body ended")

    async def _publish_notification(self, provider: str, body: bytes) -> Response:
        try:
            events = normalise(provider, parse_json(body, strict=True))
        except InvalidEvent as exc:
            return _rejected(exc)
        # S3's s3:TestEvent carries no object change: accepted, nothing published.
        return await self._accept(events, allow_none=True)

    async def _accept(
        self, events: list[CloudEvent], *, allow_none: bool = False, topic: str | None = None
    ) -> Response:
        """Publish every event (typed ones as Avro); answer 202 with the ids once Kafka acknowledged all.

        One event goes through the idempotent producer; several commit in one transaction, so a
        batch is published whole or not at all.
        """
        if not events and allow_none:
            return _json(202, {"ids": []})
        records = self._records(events, topic or self._ingress)
        if isinstance(records, Response):
            return records
        if self._publisher is None:
            return _problem(503, "not_ready", "the gateway is starting or stopping; retry")
        try:
            # Both publishers answer within the delivery timeout (message.timeout.ms; the batch
            # deadline); this guard only bounds a stuck client library.
            await asyncio.wait_for(
                self._publisher.publish(records), timeout=self._settings.kafka.delivery_timeout + 5
            )
        except (KafkaUnavailable, TimeoutError):
            log_event(logger, "publish_unavailable", events=len(records), level=logging.WARNING)
            return _problem(503, "kafka_unavailable", "Kafka did not acknowledge in time; retry")
        except KafkaError as exc:
            log_event(logger, "publish_failed", reason=str(exc), level=logging.ERROR)
            return _problem(503, "kafka_error", str(exc))
        return _Answer(202, {"ids": [event.id for event in events]}, published=len(events))

    def _records(self, events: list[CloudEvent], topic: str) -> list[tuple[str, Record]] | Response:
        """The records of the events for `topic` (typed ones as Avro), or the 4xx refusing them."""
        try:
            events = typed(events, self._settings.schemas)
        except InvalidEvent as exc:
            return _rejected(exc)
        records = [(topic, to_record(event)) for event in events]
        refusal = _refuse_batch([record for _, record in records], self._settings.kafka.max_record_bytes)
        return refusal if refusal is not None else records


async def _unrouted(request: Request, exc: Exception) -> Response:
    """A problem body, like every other error, for a path no route serves (404) or a method it does
    not take (405, with `Allow`)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        reason = f"{request.method} is not allowed on {request.url.path}; use {allow}"
        return _problem(405, "method_not_allowed", reason, headers={"allow": allow})
    return _problem(404, "not_found", f"no route {request.url.path}; see /openapi.json")


def create_app(
    settings: GatewaySettings, publisher: PublisherFactory | None = None, *, follow: Follow | None = None
) -> Starlette:
    """The gateway's ASGI app; it opens its publisher on startup and flushes it on shutdown.

    `publisher` replaces Kafka (the benchmark's baseline answers without it); default: Kafka.
    `follow` (given `Gateway.reconfigure`) is entered for the app's lifetime: it hands over the
    settings of each newly applied manifest.
    """
    gateway = Gateway(settings, publisher, follow=follow)

    def route(path: str, method: str, handler: Handler, source_kind: str | None = None) -> Route:
        return Route(path, gateway.metrics.timed(path, handler, source_kind), methods=[method])

    return Starlette(
        routes=[
            route("/events", "POST", gateway.post_events, "http"),
            route("/notifications/{provider}", "POST", gateway.post_notifications, "notification"),
            route("/functions/{name}/invoke", "POST", gateway.post_invoke, "invoke"),
            route("/healthz", "GET", gateway.healthz),
            route("/readyz", "GET", gateway.readyz),
            route("/metrics", "GET", gateway.metrics_text),
            route("/openapi.json", "GET", gateway.openapi),
        ],
        lifespan=gateway.lifespan,
        exception_handlers={404: _unrouted, 405: _unrouted},
    )

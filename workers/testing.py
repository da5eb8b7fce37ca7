"""Test a handler without a broker or a worker: the same signals and outcomes as the platform.

    from workers.testing import invoke, run

    def test_greets() -> None:
        call = invoke(handler, {"type": "order.placed", "data": {"id": 7}})
        assert call.outcome == "ok"
        assert call.value == {"greeting": "order 7"}

`invoke` runs the handler once, in this process, through the code the handler host runs, so
`Retry`, `DeadLetter`, `ctx.emit`, return values that are not JSON and async handlers behave as
they do on the platform, and so do a result or an emitted event too large for a Kafka record
(failed, cause "result"). `run` also applies a retry policy, counting attempts without waiting
out the backoff. Call both from sync tests (from inside a running loop, an async handler runs on
a loop of its own in another thread). The platform's isolation is not imitated: a sync handler
that runs past its timeout is reported as timed out once it returns, not stopped.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from bus.clock import now_rfc3339
from bus.errors import InvalidEvent
from bus.events import SPECVERSION, CloudEvent, from_json_dict, to_json_dict
from bus.kafka_binding import from_record, to_record
from bus.manifest import RetryPolicy
from bus.settings import KafkaSettings
from workers.handlers import Context, Handler
from workers.invocation import Kind, Outcome, is_async, run_async, run_coroutine, run_sync, timed_out
from workers.outcome import result_event
from workers.verdict import FINAL_CAUSES, check_fits, retry_delay

__all__ = ["HandlerError", "TestInvocation", "TestRun", "invoke", "run"]

_MAX_RECORD_BYTES = KafkaSettings().max_record_bytes  # the platform's default record limit


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerError:
    """Why an attempt did not succeed."""

    type: str
    """The exception's type name, or "TimeoutError", "ResultNotSerializable", "DeadLetter", "Retry".

    An event too large for a record is a "ValueError" with cause "result", as on the platform.
    """
    message: str
    traceback: str = ""
    cause: str = ""
    """exception | timeout | memory | result."""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TestInvocation:
    """What one invocation of a handler came to."""

    __test__ = False  # not a pytest test class, whatever its name

    outcome: Kind
    """ok | failed | retry | dead_letter."""
    value: Any = None
    """The return value, as JSON gives it back (kind "ok")."""
    result: CloudEvent | None = None
    """The `bus.function.result` event the platform would publish (kind "ok")."""
    error: HandlerError | None = None
    """Why it did not succeed (every kind but "ok")."""
    retry_after: float | None = None
    """`Retry(after=...)` (kind "retry"); None: the retry policy's backoff."""
    emitted: list[CloudEvent] = field(default_factory=list)
    """Events emitted with ctx.emit (the platform publishes them only when the outcome is "ok")."""
    attempt: int = 1
    duration: float = 0.0
    """Seconds the handler ran."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TestRun:
    """The attempts a retry policy gives an event, and where it ends."""

    __test__ = False  # not a pytest test class, whatever its name

    outcome: Literal["ok", "dead_letter"]
    attempts: list[TestInvocation]
    delays: list[float]
    """Seconds the platform would wait before each retry (not waited here)."""

    @property
    def last(self) -> TestInvocation:
        """The final attempt."""
        return self.attempts[-1]


def invoke(
    handler: Handler,
    event: CloudEvent | Mapping[str, Any],
    *,
    function: str = "test",
    attempt: int = 1,
    timeout: float = 30.0,
    prefix: str = "bus",
    max_record_bytes: int = _MAX_RECORD_BYTES,
) -> TestInvocation:
    """Invoke `handler` once on `event`: a CloudEvent, or a dict in the CloudEvents JSON format.

    A dict needs only `type`: `specversion`, `id` (a new UUID) and `source` are filled in.
    A result event or emitted event over `max_record_bytes` fails the invocation (cause
    "result"), as on the platform; the result is checked even though the platform publishes
    it only to a function with a success destination.
    """
    cause = _as_event(event, prefix)
    ctx = Context(
        function=function,
        attempt=attempt,
        deadline=time.monotonic() + timeout,
        idempotency_key=cause.id,
        logger=logging.getLogger(f"bus.fn.{function}"),
        prefix=prefix,
        cause_source=cause.source,
    )
    if is_async(handler):
        outcome: Outcome = run_coroutine(run_async(handler, cause, ctx))
    else:
        outcome = run_sync(handler, cause, ctx)
        if outcome.duration > timeout and outcome.cause != "timeout":  # the platform stops it there
            outcome = timed_out(0, timeout=timeout, duration=outcome.duration, emitted=outcome.emitted)
    return _described(
        outcome, cause, function=function, attempt=attempt, prefix=prefix, max_record_bytes=max_record_bytes
    )


def run(
    handler: Handler,
    event: CloudEvent | Mapping[str, Any],
    *,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so one shared default is safe
    function: str = "test",
    timeout: float = 30.0,
    prefix: str = "bus",
    max_record_bytes: int = _MAX_RECORD_BYTES,
) -> TestRun:
    """Invoke `handler` on `event` as the platform would under `retry`, without waiting.

    A failure or `Retry` is tried again until the policy's attempts are spent; `DeadLetter`,
    and a return value that is not JSON or too large, end it at once. The run ends "ok" or
    "dead_letter". A `Retry(after=...)` delay counts a week at most, as on the platform.
    """
    cause = _as_event(event, prefix)
    attempts: list[TestInvocation] = []
    delays: list[float] = []
    for number in range(1, retry.attempts + 1):
        call = invoke(
            handler,
            cause,
            function=function,
            attempt=number,
            timeout=timeout,
            prefix=prefix,
            max_record_bytes=max_record_bytes,
        )
        attempts.append(call)
        if call.outcome == "ok":
            return TestRun(outcome="ok", attempts=attempts, delays=delays)
        final = call.outcome == "dead_letter" or (call.error is not None and call.error.cause in FINAL_CAUSES)
        if final or number == retry.attempts:
            break
        delays.append(retry_delay(call.retry_after, backoff=retry.step(number)[1]))
    return TestRun(outcome="dead_letter", attempts=attempts, delays=delays)


def _as_event(event: CloudEvent | Mapping[str, Any], prefix: str) -> CloudEvent:
    """The event as the handler host would see it: read from the JSON format, then through the
    Kafka record the router writes (binary mode) and back, as the host reads it; JSON data
    without a content type gets `application/json` that way, as on the platform."""
    if isinstance(event, CloudEvent):
        doc = to_json_dict(event)
    else:
        doc = dict(event)
        doc.setdefault("specversion", SPECVERSION)
        doc.setdefault("id", str(uuid.uuid4()))
        doc.setdefault("source", f"bus://{prefix}/test")
    record = to_record(from_json_dict(orjson.loads(orjson.dumps(doc))))
    return from_record(record.key, record.value, record.headers)


def _described(
    outcome: Outcome, cause: CloudEvent, *, function: str, attempt: int, prefix: str, max_record_bytes: int
) -> TestInvocation:
    emitted = [from_json_dict(orjson.loads(raw)) for raw in outcome.emitted]
    if outcome.kind == "ok":
        value = orjson.loads(outcome.value) if outcome.value is not None else None
        try:
            result = result_event(
                prefix=prefix, function=function, cause=cause, value=value, time=now_rfc3339()
            )
            check_fits(to_record(result), [to_record(e) for e in emitted], max_record_bytes)
        except (InvalidEvent, TypeError, ValueError) as exc:  # the platform dead-letters it at once
            error = HandlerError(type=type(exc).__name__, message=str(exc), cause="result")
            return TestInvocation(
                outcome="failed", error=error, emitted=emitted, attempt=attempt, duration=outcome.duration
            )
        return TestInvocation(
            outcome="ok",
            value=value,
            result=result,
            emitted=emitted,
            attempt=attempt,
            duration=outcome.duration,
        )
    error = HandlerError(
        type=outcome.error_type, message=outcome.message, traceback=outcome.traceback, cause=outcome.cause
    )
    return TestInvocation(
        outcome=outcome.kind,
        error=error,
        retry_after=outcome.retry_after,
        emitted=emitted,
        attempt=attempt,
        duration=outcome.duration,
    )

"""Invoking one function over HTTP, synchronously or not (pure: events in, HTTP answers out).

`POST /functions/{name}/invoke` publishes an event straight to the function's topic (no routing).
Synchronously (the default) the event carries the `busreplyto` extension naming the gateway
replica's reply topic; the worker then runs it once (no retries: the caller decides, as with
Lambda's RequestResponse invocations) and also writes its result or error record there, in the
same transaction as everything else. The gateway answers with what arrives:

| reply | HTTP |
|---|---|
| `bus.function.result` | 200, the handler's return value as the JSON body |
| error `DeadLetter` (the handler refused the event) | 422 |
| error `Retry` (the handler asked to be called again later) | 503 with `Retry-After` |
| error `TimeoutError` (past the function's timeout) | 504 |
| error `HandlerCrashed`, `MemoryError`, `HostProtocolError` (the handler's process died) | 502 |
| any other error (the handler raised) | 500 |
| nothing before the deadline | 504 `no_reply`; the event stays published and runs |

Every answer names the event in `bus-event-id`. `?mode=async` answers 202 once the event is on
Kafka; its outcome goes to the function's destinations as for any event.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from bus.clock import now_rfc3339
from bus.errors import InvalidEvent
from bus.events import CloudEvent, parse_json
from bus.http_binding import BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE, from_http

__all__ = ["INVOKED_TYPE", "REPLY_EXTENSION", "Answer", "answer", "invocation_event", "no_reply"]

REPLY_EXTENSION = "busreplyto"
"""CloudEvents extension naming the topic a synchronous invocation's outcome is also written to."""
INVOKED_TYPE = "bus.function.invoked"
"""`type` of an invocation whose request body is only the data."""
RESULT_TYPE = "bus.function.result"
ERROR_TYPE = "bus.function.error"
_SIGNAL_STATUS = {"dead_letter": 422, "retry": 503}
"""Status of an error the handler signalled (the error record's `signal`)."""
_STATUS = {
    "DeadLetter": 422,
    "Retry": 503,
    "TimeoutError": 504,
    "HandlerCrashed": 502,
    "MemoryError": 502,
    "HostProtocolError": 502,
}


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def invocation_event(headers: Mapping[str, str], body: bytes, function: str) -> CloudEvent:
    """The event a request invokes `function` with (`headers` lower-case).

    A CloudEvent in binary (`ce-*` headers) or structured mode is taken as it is (one event); any
    other body is the data of a new `bus.function.invoked` event (JSON, or no data when empty).
    """
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if "ce-specversion" in headers or media in (STRUCTURED_CONTENT_TYPE, BATCH_CONTENT_TYPE):
        events = from_http(headers, body)
        if len(events) != 1:
            raise InvalidEvent("body", f"an invocation takes one event, got {len(events)}")
        return events[0]
    data = parse_json(body, strict=True) if body.strip() else None
    return CloudEvent.create(
        id=str(uuid.uuid4()),
        source=f"/functions/{function}/invoke",
        type=INVOKED_TYPE,
        time=now_rfc3339(),
        **({"datacontenttype": "application/json", "data": data} if data is not None else {}),
    )


def answer(reply: CloudEvent, event_id: str, *, retry_after: float | None = None) -> Answer:
    """The HTTP answer to a synchronous invocation whose outcome is `reply`.

    `retry_after`: seconds a 503 asks the caller to wait when the handler's `Retry` named none
    (the function's first backoff); None: 1.
    """
    headers = {"bus-event-id": event_id, "bus-reply-id": reply.id}
    if reply.type == RESULT_TYPE:
        return Answer(200, orjson.dumps(reply.data), headers)
    data: dict[str, Any] = reply.data if isinstance(reply.data, dict) else {}
    error_type = str(data.get("error_type", "Error"))
    # A signal's subclass (`class Busy(Retry)`) is named by its own class: the signal decides.
    status = _SIGNAL_STATUS.get(str(data.get("signal")), 0) or _STATUS.get(error_type, 500)
    if status == 503:
        asked = data.get("retry_after")
        if isinstance(asked, bool) or not isinstance(asked, int | float) or not math.isfinite(asked):
            asked = retry_after if retry_after is not None and math.isfinite(retry_after) else 1
        headers["retry-after"] = str(max(0, math.ceil(asked)))
    message = str(data.get("message", ""))
    problem = {
        "error": "function_error",
        "reason": f"{error_type}: {message}" if message else error_type,
        "error_type": error_type,
        "message": message,
        "function": data.get("function"),
        "id": event_id,
    }
    return Answer(status, orjson.dumps(problem), headers)


def no_reply(event_id: str, function: str, waited: float) -> Answer:
    """504: no outcome within the deadline; the event is on Kafka and will still run."""
    problem = {
        "error": "no_reply",
        "reason": (
            f"{function!r} did not answer within {waited:g} s; the event is published and still runs, "
            "its outcome goes to the function's destinations"
        ),
        "id": event_id,
    }
    return Answer(504, orjson.dumps(problem), {"bus-event-id": event_id})

"""The events a function invocation produces: results and error records (pure)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from bus.events import SPECVERSION, CloudEvent, to_json_dict
from bus.kafka_binding import Record
from bus.naming import function_source

__all__ = ["Failure", "error_event", "result_event", "result_headers", "result_record"]

RESULT_TYPE = "bus.function.result"
ERROR_TYPE = "bus.function.error"
_IDS = uuid.UUID("6f1c3d2a-6a5e-4f0b-9d7e-3b8f1c2a9e10")


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """Why an invocation failed, for the error record (RELIABILITY R8)."""

    error_type: str
    message: str
    traceback: str
    attempts: int
    first_attempt_time: str
    last_attempt_time: str
    topic: str
    partition: int
    offset: int
    retry_after: float | None = None
    """Seconds the handler asked to wait (`Retry`), for a synchronous caller's Retry-After."""
    signal: str | None = None
    """"retry" or "dead_letter" when the handler raised `Retry` or `DeadLetter` (or a subclass:
    `error_type` names the class raised), for a synchronous caller's status."""


CARRIED = ("busflow", "busflowrun", "busflowstep")
"""Extensions a result or error carries on from its input: a flow's run goes on (bus.flows)."""


RERUNS = ("redriveid", "replayid")
"""Extensions marking a later run of an event (`bus dlq redrive`, `bus replay`; bus.dlq.REDRIVE_ID,
bus.replay.REPLAY_ID): its result or error is another occurrence, with an id of its own."""


def _occurrence(function: str, cause: CloudEvent) -> str:
    """What a result's or error's id is derived from: the function, the input (source and id),
    the flow it runs in (two flows running one function on one event are two runs) and the
    redrive or replay that ran it again, if one did."""
    text = f"{function}\x00{cause.source}\x00{cause.id}"
    extensions = cause.extensions
    if extensions:
        if (flow := extensions.get("busflow")) is not None:
            text += f"\x00busflow={flow}"
        for name in RERUNS:
            if (run := extensions.get(name)) is not None:
                text += f"\x00{name}={run}"
    return text


def _derived_id(kind: str, function: str, cause: CloudEvent) -> str:
    # Deterministic, so a result re-published after a crash carries the same id as the first.
    return str(uuid.uuid5(_IDS, f"{kind}\x00{_occurrence(function, cause)}"))


_RESULT_IDS = hashlib.sha1(_IDS.bytes + b"result\x00", usedforsecurity=False)


def _result_id(function: str, cause: CloudEvent) -> str:
    """`_derived_id("result", ...)` without building UUID objects (a third of the time)."""
    hashed = _RESULT_IDS.copy()
    hashed.update(_occurrence(function, cause).encode())
    h = hashed.hexdigest()
    # Version 5 in the 13th hex digit, the RFC 4122 variant in the 17th.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _lineage(cause: CloudEvent) -> dict[str, str | int | bool]:
    extensions: dict[str, str | int | bool] = {"causationid": cause.id}
    key = cause.partition_key
    if key is not None:
        extensions["partitionkey"] = key
    for name in CARRIED:
        if (value := cause.extensions.get(name)) is not None:
            extensions[name] = value
    return extensions


def result_event(*, prefix: str, function: str, cause: CloudEvent, value: Any, time: str) -> CloudEvent:
    """The `bus.function.result` for a handler's return value (`causationid` = the input's id)."""
    return CloudEvent.create(
        id=_derived_id("result", function, cause),
        source=function_source(prefix, function),
        type=RESULT_TYPE,
        time=time,
        subject=cause.subject,
        datacontenttype="application/json",
        extensions=_lineage(cause),
        data=value,
    )


def result_headers(*, prefix: str, function: str, cause: CloudEvent, time: str) -> dict[str, str]:
    """The headers of `result_record`, as text in order (what the handler host sends back)."""
    headers = {
        "ce_specversion": SPECVERSION,
        "ce_id": _result_id(function, cause),
        "ce_source": function_source(prefix, function),
        "ce_type": RESULT_TYPE,
        "ce_time": time,
    }
    if cause.subject is not None:
        headers["ce_subject"] = cause.subject
    headers["ce_causationid"] = cause.id
    key = cause.partition_key
    if key is not None:
        headers["ce_partitionkey"] = key
    if cause.extensions:
        for name in CARRIED:
            if isinstance(value := cause.extensions.get(name), str):
                headers["ce_" + name] = value
    headers["content-type"] = "application/json"
    return headers


def result_record(*, prefix: str, function: str, cause: CloudEvent, value: bytes, time: str) -> Record:
    """`to_record(result_event(...))` for a return value already encoded as JSON, built directly.

    The host builds one per invocation; every attribute is valid by construction (the cause's
    were validated when it was read), so no CloudEvent is made and checked on the way.
    """
    headers = result_headers(prefix=prefix, function=function, cause=cause, time=time)
    key = cause.partition_key
    return Record(
        key.encode() if key is not None else None,
        None if value == b"null" else value,
        tuple((name, text.encode()) for name, text in headers.items()),
    )


def error_event(
    *, prefix: str, function: str, cause: CloudEvent, failure: Failure, time: str, embed_data: bool = True
) -> CloudEvent:
    """The `bus.function.error` record of an invocation that failed its last attempt.

    With `embed_data=False` the original event is embedded without its data (`event_truncated`),
    for inputs too large to fit twice in one record; the DLQ keeps the full original.
    """
    original = to_json_dict(cause)
    if not embed_data:
        original.pop("data", None)
        original.pop("data_base64", None)
    return CloudEvent.create(
        id=_derived_id("error", function, cause),
        source=function_source(prefix, function),
        type=ERROR_TYPE,
        time=time,
        subject=cause.subject,
        datacontenttype="application/json",
        extensions=_lineage(cause),
        data={
            "function": function,
            "error_type": failure.error_type,
            "message": failure.message,
            "traceback": failure.traceback,
            "attempts": failure.attempts,
            "first_attempt_time": failure.first_attempt_time,
            "last_attempt_time": failure.last_attempt_time,
            "topic": failure.topic,
            "partition": failure.partition,
            "offset": failure.offset,
            "event": original,
            "event_truncated": not embed_data,
            **({} if failure.retry_after is None else {"retry_after": failure.retry_after}),
            **({} if failure.signal is None else {"signal": failure.signal}),
        },
    )

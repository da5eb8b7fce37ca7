"""The events a function invocation produces: results and error records (pure)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from bus.events import SPECVERSION, CloudEvent, to_json_dict
from bus.kafka_binding import Record

__all__ = ["Failure", "error_event", "function_source", "result_event", "result_record"]

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


def function_source(prefix: str, function: str) -> str:
    """`source` of the events a function's worker group emits."""
    return f"bus://{prefix}/functions/{function}"


def _derived_id(kind: str, function: str, cause: CloudEvent) -> str:
    # Deterministic, so a result re-published after a crash carries the same id as the first.
    return str(uuid.uuid5(_IDS, f"{kind}\x00{function}\x00{cause.source}\x00{cause.id}"))


def _result_id(function: str, cause: CloudEvent) -> str:
    """`_derived_id("result", ...)` without building UUID objects (a third of the time)."""
    name = f"result\x00{function}\x00{cause.source}\x00{cause.id}".encode()
    digest = bytearray(hashlib.sha1(_IDS.bytes + name, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _lineage(cause: CloudEvent) -> dict[str, str | int | bool]:
    extensions: dict[str, str | int | bool] = {"causationid": cause.id}
    key = cause.partition_key
    if key is not None:
        extensions["partitionkey"] = key
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


def result_record(*, prefix: str, function: str, cause: CloudEvent, value: bytes, time: str) -> Record:
    """`to_record(result_event(...))` for a return value already encoded as JSON, built directly.

    The host builds one per invocation; every attribute is valid by construction (the cause's
    were validated when it was read), so no CloudEvent is made and checked on the way.
    """
    headers = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", _result_id(function, cause).encode()),
        ("ce_source", function_source(prefix, function).encode()),
        ("ce_type", RESULT_TYPE.encode()),
        ("ce_time", time.encode()),
    ]
    if cause.subject is not None:
        headers.append(("ce_subject", cause.subject.encode()))
    headers.append(("ce_causationid", cause.id.encode()))
    key = cause.partition_key
    if key is not None:
        headers.append(("ce_partitionkey", key.encode()))
    headers.append(("content-type", b"application/json"))
    return Record(
        key.encode() if key is not None else None, None if value == b"null" else value, tuple(headers)
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
        },
    )

"""Object-store notifications (S3, MinIO, Aliyun OSS) as `bus.object.*` CloudEvents (pure).

Each provider format is one `_Format` entry saying where its records and fields live; one record
translator serves them all. Anything malformed raises InvalidEvent naming the field path, e.g.
`Records[0].s3.bucket.name`, so the gateway can answer 400 and publish nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import orjson

from bus.errors import InvalidEvent
from bus.events import JSON_CONTENT_TYPE, CloudEvent

__all__ = ["PROVIDERS", "normalise"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Format:
    """Where one provider's notification body keeps its records and their fields."""

    label: str
    """The provider's name in error messages."""
    records: str
    """Body member holding the array of records."""
    block: str
    """Record member holding `bucket` and `object`."""
    region: str
    """Record member holding the region."""
    name_prefix: str
    """Prefix some senders put before the event name (dropped to find the category)."""
    keys_encoded: bool
    """Object keys arrive form-URL-encoded ('+' for a space) and are decoded."""


_FORMATS: dict[str, _Format] = {
    # AWS "Event message structure": Records[].s3.{bucket,object}; "red flower.jpg" comes as "red+flower.jpg".
    "s3": _Format(
        label="S3", records="Records", block="s3", region="awsRegion", name_prefix="s3:", keys_encoded=True
    ),
    # MinIO sends S3's record layout with "s3:"-prefixed names; its webhook and Kafka targets wrap the
    # records as {EventName, Key, Records} (the record is authoritative), and keys are url.QueryEscape'd.
    "minio": _Format(
        label="MinIO", records="Records", block="s3", region="awsRegion", name_prefix="s3:", keys_encoded=True
    ),
    # Aliyun OSS: events[].oss.{bucket,object}, region on the record; keys are sent as stored, unencoded.
    "oss": _Format(
        label="Aliyun OSS",
        records="events",
        block="oss",
        region="region",
        name_prefix="oss:",
        keys_encoded=False,
    ),
}
PROVIDERS: tuple[str, ...] = tuple(_FORMATS)
"""The `{provider}` values of `POST /notifications/{provider}`."""

# Fixed forever: changing it changes the id of every object event, and with it deduplication.
_ID_NAMESPACE = uuid.UUID("4bf83fb5-6fe8-4392-baf3-6864816ece00")
_EVENT_NAME = re.compile(r"^[A-Za-z]+(:[A-Za-z0-9]+)*\Z")
_BUCKET = re.compile(r"^[A-Za-z0-9._-]{1,255}\Z")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
# Categories whose lower-cased name is a noun, not the past participle bus types use.
_IRREGULAR = {"restore": "restored"}
_MISSING: Any = object()


def normalise(provider: str, body: Any) -> list[CloudEvent]:
    """The object events a parsed notification body carries, in record order ([] for S3's test event)."""
    layout = _FORMATS.get(provider) if isinstance(provider, str) else None
    if layout is None:
        raise InvalidEvent("provider", f"expected one of {', '.join(PROVIDERS)}, got {_show(provider)}")
    if not isinstance(body, dict):
        raise InvalidEvent(
            "body", f"expected the {layout.label} notification as a JSON object, got {_show(body)}"
        )
    if provider == "s3" and body.get("Event") == "s3:TestEvent" and layout.records not in body:
        return []  # S3 sends it once when notifications are configured: no object changed
    records = body.get(layout.records, _MISSING)
    if not isinstance(records, list) or not records:
        raise InvalidEvent(
            layout.records, _expected(f"a non-empty array of {layout.label} notification records", records)
        )
    return [_event(provider, layout, f"{layout.records}[{i}]", record) for i, record in enumerate(records)]


def _event(provider: str, layout: _Format, path: str, record: Any) -> CloudEvent:
    """One record as a `bus.object.*` event."""
    if not isinstance(record, dict):
        raise InvalidEvent(path, f"expected a notification record (a JSON object), got {_show(record)}")
    name = _text(record, "eventName", path, "the event name")
    event_type = _event_type(name, layout.name_prefix, f"{path}.eventName")
    block, block_path = _object(record, layout.block, path)
    bucket_block, bucket_path = _object(block, "bucket", block_path)
    object_block, object_path = _object(block, "object", block_path)
    bucket = _text(bucket_block, "name", bucket_path, "the bucket name")
    if not _BUCKET.match(bucket):
        raise InvalidEvent(
            f"{bucket_path}.name",
            f"expected a bucket name of letters, digits, '.', '-' and '_', got {_show(bucket)}",
        )
    key = _text(object_block, "key", object_path, "the object key")
    if layout.keys_encoded:
        key = _decoded(key, f"{object_path}.key")
    event_time = _time(record, path)
    data: dict[str, Any] = {
        "provider": provider,
        "bucket": bucket,
        "key": key,
        "size": _size(object_block, object_path),
        "etag": _optional_text(object_block, "eTag", object_path, "the entity tag"),
        "version_id": _optional_text(object_block, "versionId", object_path, "the version id"),
        "sequencer": _optional_text(object_block, "sequencer", object_path, "the sequencer"),
        "event_name": name,
        "region": _optional_text(record, layout.region, path, "the region"),
        "event_time": event_time,
    }
    return CloudEvent.create(
        id=_event_id(data),
        source=f"{provider}://{bucket}",
        type=event_type,
        time=event_time,
        subject=key,
        datacontenttype=JSON_CONTENT_TYPE,
        data=data,
    )


def _event_type(name: str, prefix: str, path: str) -> str:
    """`bus.object.<category>`: ObjectCreated:Put -> created, ObjectRestore:Post -> restored."""
    bare = name.removeprefix(prefix)
    category = bare.split(":", 1)[0].lower().removeprefix("object")
    if not _EVENT_NAME.match(bare) or not category:
        raise InvalidEvent(path, f"expected an event name like 'ObjectCreated:Put', got {_show(name)}")
    return f"bus.object.{_IRREGULAR.get(category, category)}"


def _event_id(data: dict[str, Any]) -> str:
    """The same notification, redelivered, gets the same id.

    Without a sequencer (OSS sends none; S3 omits it on some event types) the event time stands in,
    so two distinct writes of identical content are still two events.
    """
    parts = [
        data["provider"],
        data["bucket"],
        data["key"],
        data["version_id"] or data["etag"],
        data["sequencer"] or data["event_time"],
        data["event_name"],
    ]
    return str(uuid.uuid5(_ID_NAMESPACE, orjson.dumps(parts).decode()))


def _object(parent: dict[str, Any], name: str, path: str) -> tuple[dict[str, Any], str]:
    """The JSON object `parent[name]` and its path."""
    where = f"{path}.{name}"
    value = parent.get(name, _MISSING)
    if not isinstance(value, dict):
        raise InvalidEvent(where, _expected("a JSON object", value))
    return value, where


def _text(parent: dict[str, Any], name: str, path: str, what: str) -> str:
    """The required non-empty string `parent[name]`."""
    value = _optional_text(parent, name, path, what)
    if value is None:
        raise InvalidEvent(
            f"{path}.{name}", _expected(f"{what} as a non-empty string", parent.get(name, _MISSING))
        )
    return value


def _optional_text(parent: dict[str, Any], name: str, path: str, what: str) -> str | None:
    """The string `parent[name]`, or None when it is absent, null or empty."""
    value = parent.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{path}.{name}", _expected(f"{what} as a string", value))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: possible after a lenient JSON parser, impossible to put on Kafka.
        raise InvalidEvent(
            f"{path}.{name}", f"expected {what} as Unicode text, got a lone surrogate"
        ) from None
    return value


_MAX_SIZE = 2**63 - 1
"""The largest size the `bus.object.event` schema holds (an Avro long)."""


def _size(parent: dict[str, Any], path: str) -> int | None:
    """The object size in bytes; None when the provider leaves it out (removals)."""
    value = parent.get("size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent(f"{path}.size", _expected("the size in bytes as a non-negative integer", value))
    if value > _MAX_SIZE:  # named here, in the sender's terms, not as the event's `data.size`
        raise InvalidEvent(f"{path}.size", f"expected a size in bytes up to {_MAX_SIZE}, got {value}")
    return value


def _decoded(key: str, path: str) -> str:
    """A form-URL-encoded object key as stored ('my+photo%281%29.jpg' -> 'my photo(1).jpg')."""
    try:
        decoded = unquote_plus(key, errors="strict")
    except UnicodeDecodeError:
        raise InvalidEvent(path, f"expected a URL-encoded UTF-8 object key, got {_show(key)}") from None
    if not decoded:
        raise InvalidEvent(path, "expected the object key as a non-empty string, got an empty key")
    return decoded


def _time(record: dict[str, Any], path: str) -> str:
    """The record's ISO 8601 event time as RFC 3339 in UTC (a time without offset is taken as UTC)."""
    where = f"{path}.eventTime"
    text = _text(record, "eventTime", path, "the event time")
    try:
        if not _TIMESTAMP.match(text):
            raise ValueError(text)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # every provider documents its times in UTC
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidEvent(
            where, f"expected an ISO 8601 timestamp like 2026-01-31T09:30:00.000Z, got {_show(text)}"
        ) from None
    micros = moment.microsecond
    timespec = "seconds" if not micros else "milliseconds" if not micros % 1000 else "microseconds"
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def _expected(what: str, value: Any) -> str:
    if value is _MISSING:
        return f"is missing; expected {what}"
    return f"expected {what}, got {_show(value)}"


def _show(value: Any) -> str:
    """A JSON value as an error message shows it: short, and never the whole body."""
    if value is _MISSING:
        return "nothing"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an empty array" if not value else "an array"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON at all, or an integer too long to print
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else f"{text[:57]}..."

"""The CloudEvents 1.0 event model, its validation and its JSON event format (pure).

An event's `data` is held decoded: a JSON value when the content type is JSON (or absent),
otherwise raw bytes. Bindings (Kafka, HTTP) translate to and from this one model.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from bus.errors import InvalidEvent

__all__ = [
    "JSON_CONTENT_TYPE",
    "MAX_JSON_DEPTH",
    "SPECVERSION",
    "STRUCTURED_CONTENT_TYPE",
    "CloudEvent",
    "Extension",
    "data_from_bytes",
    "data_to_bytes",
    "from_json_dict",
    "is_json_content_type",
    "parse_json",
    "to_json_dict",
    "validate_time",
]

SPECVERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
"""Content type of an event in the CloudEvents JSON format (structured mode, HTTP and Kafka)."""
MAX_JSON_DEPTH = 64
"""Deepest JSON nesting bus accepts; orjson alone would accept 100,000 levels."""

Extension = str | int | bool

REQUIRED = ("specversion", "id", "source", "type")
OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")
CONTEXT_ATTRIBUTES = frozenset(REQUIRED + OPTIONAL)
# Names that may not be extensions: the context attributes and the data members of the JSON format.
RESERVED = CONTEXT_ATTRIBUTES | {"data", "data_base64"}

# `\Z`, not `$`: `$` also matches before a trailing newline, which must never reach a header.
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,64}\Z")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
_MEDIA_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+([ \t]*;[\t\x20-\x7e]*)?\Z", re.ASCII)
_URI_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# The CloudEvents Integer type is a signed 32-bit integer.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudEvent:
    """One CloudEvents 1.0 event. Construct through `CloudEvent.create` to get it validated."""

    id: str
    source: str
    type: str
    specversion: str = SPECVERSION
    time: str | None = None
    """RFC 3339 timestamp text, kept as received."""
    subject: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    extensions: Mapping[str, Extension] = field(default_factory=dict)
    data: Any = None
    """A JSON value for JSON content types (or none given), else bytes; None when absent."""

    @classmethod
    def create(cls, **attributes: Any) -> CloudEvent:
        """Build an event and validate it; raises InvalidEvent naming the first bad field."""
        event = cls(**attributes)
        event.validate()
        return event

    @classmethod
    def from_attributes(
        cls, attributes: Mapping[str, Any], extensions: Mapping[str, Extension], data: Any
    ) -> CloudEvent:
        """`create(**attributes, extensions=extensions, data=data)` for `attributes` holding context
        attributes only (a decoder's), in about half the time: no keyword arguments to unpack.

        Raises InvalidEvent naming a missing required attribute, as `create` would fail to.
        """
        event = object.__new__(cls)
        get = attributes.get
        for name in ("id", "source", "type"):
            if name not in attributes:
                raise InvalidEvent(name, "required attribute is missing")
        _set(event, "id", attributes["id"])
        _set(event, "source", attributes["source"])
        _set(event, "type", attributes["type"])
        _set(event, "specversion", get("specversion", SPECVERSION))
        _set(event, "time", get("time"))
        _set(event, "subject", get("subject"))
        _set(event, "datacontenttype", get("datacontenttype"))
        _set(event, "dataschema", get("dataschema"))
        _set(event, "extensions", extensions)
        _set(event, "data", data)
        event.validate()
        return event

    def validate(self) -> None:
        """Raise InvalidEvent naming the first attribute that breaks CloudEvents 1.0."""
        if self._known_valid():
            return
        for name in ("id", "source", "type", "specversion"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidEvent(name, "required attribute must be a non-empty string")
        if self.specversion != SPECVERSION:
            raise InvalidEvent(
                "specversion",
                f"only CloudEvents {SPECVERSION} is supported, got {self.specversion!r}",
            )
        for name in ("subject", "datacontenttype", "dataschema", "time"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidEvent(name, "must be a non-empty string when present")
        if self.time is not None:
            validate_time("time", self.time)
        if self.datacontenttype is not None and not _MEDIA_TYPE.match(self.datacontenttype):
            raise InvalidEvent(
                "datacontenttype",
                f"{self.datacontenttype!r} is not a media type like 'application/json'",
            )
        if self.dataschema is not None and not _URI_SCHEME.match(self.dataschema):
            raise InvalidEvent("dataschema", f"{self.dataschema!r} must be an absolute URI")
        for name, value in self.extensions.items():
            _validate_extension(name, value)
        if isinstance(self.data, bytes | bytearray) and is_json_content_type(self.datacontenttype):
            raise InvalidEvent("data", "JSON content type needs decoded JSON data, not bytes")
        _remember(_VALID_TIMES, self.time)
        _remember(_VALID_MEDIA_TYPES, self.datacontenttype)
        for name in self.extensions:
            _remember(_VALID_EXTENSION_NAMES, name)

    def _known_valid(self) -> bool:
        """Whether every attribute passes by plain type checks and values validated before.

        The common case, in about a fifth of the full checks' time: the same few content types,
        extension names and (within a burst) times recur. Anything else takes the full checks,
        which name the first bad attribute.
        """
        id, source, kind, subject = self.id, self.source, self.type, self.subject
        if not (type(id) is str and id and type(source) is str and source and type(kind) is str and kind):
            return False
        if self.specversion != SPECVERSION or (
            subject is not None and not (type(subject) is str and subject)
        ):
            return False
        time = self.time
        if self.dataschema is not None or (
            time is not None and not (type(time) is str and time in _VALID_TIMES)
        ):
            return False
        content_type = self.datacontenttype
        if content_type is not None and not (
            type(content_type) is str and content_type in _VALID_MEDIA_TYPES
        ):
            return False
        for name, value in self.extensions.items():
            if name not in _VALID_EXTENSION_NAMES or type(value) is not str:
                return False
        return not (isinstance(self.data, bytes | bytearray) and is_json_content_type(content_type))

    def with_extensions(self, **extensions: Extension) -> CloudEvent:
        """Return a copy with these extensions added or replaced."""
        return replace(self, extensions={**self.extensions, **extensions})

    @property
    def partition_key(self) -> str | None:
        """Kafka record key: the `partitionkey` extension, else `subject`, else none (SPEC §2)."""
        key = self.extensions.get("partitionkey")
        if key is not None:
            return str(key)
        return self.subject


_set = object.__setattr__

_MEMO_SIZE = 4096
"""Values each memo of `_known_valid` holds before it starts afresh."""
_MEMO_LENGTH = 256
"""Longest value a memo holds."""
_VALID_TIMES: dict[str, None] = {}
_VALID_MEDIA_TYPES: dict[str, None] = {}
_VALID_EXTENSION_NAMES: dict[str, None] = {}


def _remember(memo: dict[str, None], value: str | None) -> None:
    """Note a value that passed the full checks (only short exact `str`s: a subclass may compare
    oddly, and a long value would let a caller pin memory with a few thousand events)."""
    if type(value) is str and len(value) <= _MEMO_LENGTH and value not in memo:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[value] = None


def validate_time(name: str, value: str) -> None:
    """Raise InvalidEvent unless `value` is an RFC 3339 timestamp."""
    if not _RFC3339.match(value):
        raise InvalidEvent(name, f"{value!r} is not an RFC 3339 timestamp like 2026-01-31T09:30:00Z")
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidEvent(name, f"{value!r} is not a valid date and time") from exc


def _validate_extension(name: str, value: object) -> None:
    if name in RESERVED:
        raise InvalidEvent(name, "is a reserved CloudEvents attribute, not an extension")
    if not _EXTENSION_NAME.match(name):
        raise InvalidEvent(name, "extension names must be lower-case letters and digits only")
    if not isinstance(value, str | int | bool):
        raise InvalidEvent(name, "extension values must be strings, integers or booleans")
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        raise InvalidEvent(name, f"integer extension {value} is outside the CloudEvents 32-bit range")


def is_json_content_type(content_type: str | None) -> bool:
    """True when data of this content type is JSON (absent means JSON, as in the JSON format)."""
    if content_type is None:
        return True
    known = _JSON_TYPES.get(content_type)
    if known is not None:
        return known
    media = content_type.split(";", 1)[0].strip().lower()
    is_json = media == JSON_CONTENT_TYPE or media.endswith("+json") or media == "text/json"
    if type(content_type) is str and len(content_type) <= _MEMO_LENGTH:
        if len(_JSON_TYPES) >= _MEMO_SIZE:
            _JSON_TYPES.clear()
        _JSON_TYPES[content_type] = is_json
    return is_json


_JSON_TYPES: dict[str, bool] = {}
"""`is_json_content_type` of the content types met."""


def parse_json(
    body: bytes | str, *, field_name: str = "body", max_depth: int = MAX_JSON_DEPTH, strict: bool = False
) -> Any:
    """Parse JSON text, refusing invalid JSON and nesting deeper than `max_depth`.

    `strict` (for untrusted input at the edge) also refuses duplicate object keys, which orjson
    would silently resolve to the last value, and integers beyond 64 bits, which orjson would
    silently round to floats; it costs a second parse, so bus's own records skip it.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(field_name, f"is not valid JSON ({exc})") from exc
    raw = body.encode() if isinstance(body, str) else body
    if raw.count(b"[") + raw.count(b"{") >= max_depth:  # fewer brackets cannot nest that deep
        _check_depth(value, field_name, max_depth)
    if strict:
        _check_strictly(raw, field_name)
    return value


_LONG_DIGITS = re.compile(rb"[0-9]{19}")
"""A run of digits as long as the largest 64-bit integers; shorter ones are always in range."""
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class _HugeInteger:
    """Stands in for an integer literal out of 64-bit range while the strict parse looks for it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _check_strictly(body: bytes, field_name: str) -> None:
    """Refuse duplicate object keys and integers outside the signed and unsigned 64-bit ranges."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(items)
        if len(made) == len(items):  # the common case, at C speed
            return made
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise InvalidEvent(field_name, f"JSON object has the key {key!r} twice; send each key once")
            seen.add(key)
        return made

    huge: list[str] = []

    def integer(text: str) -> int | _HugeInteger:
        if len(text) <= 21:  # longer is past any 64-bit integer, and int() refuses very long text
            number = int(text)
            if _INT64_MIN <= number <= _UINT64_MAX:
                return number
        huge.append(text)
        return _HugeInteger(text)

    # Only reached after orjson accepted the text, so the stdlib parser sees valid, bounded JSON.
    if _LONG_DIGITS.search(body) is None:  # no integer can be out of range: skip the int hook
        json.loads(body, object_pairs_hook=pairs)
        return
    value = json.loads(body, object_pairs_hook=pairs, parse_int=integer)
    found = _find_huge(value, "") if huge else None  # walked only to name the field
    if found is not None:
        path, text = found
        shown = text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"
        reason = f"integer {shown} is outside the 64-bit range; send it as a string"
        # A field of the whole body is named as the API names fields: data.n, Records[0].s3.object.size.
        raise InvalidEvent(path.removeprefix(".") if field_name == "body" else f"{field_name}{path}", reason)


def _find_huge(value: Any, path: str) -> tuple[str, str] | None:
    """The path and text of the first out-of-range integer in a strictly parsed value, if any."""
    pending: list[tuple[Any, str]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, _HugeInteger):
            return where, item.text
        if isinstance(item, dict):
            pending.extend((child, f"{where}.{key}") for key, child in reversed(item.items()))
        elif isinstance(item, list):
            pending.extend((child, f"{where}[{index}]") for index, child in reversed(list(enumerate(item))))
    return None


def _check_depth(value: Any, field_name: str, max_depth: int) -> None:
    """Refuse a value nesting containers deeper than `max_depth`, one level of containers at a time."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise InvalidEvent(field_name, f"JSON nests deeper than {max_depth} levels")
        deeper: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            deeper.extend(child for child in children if isinstance(child, dict | list))
        level = deeper


def data_to_bytes(event: CloudEvent) -> bytes | None:
    """Encode an event's data for a binary-mode body or record value."""
    if event.data is None:
        return None
    if isinstance(event.data, bytes | bytearray):
        return bytes(event.data)
    return orjson.dumps(event.data)


def data_from_bytes(content_type: str | None, body: bytes | None, *, strict: bool = False) -> Any:
    """Decode a binary-mode body or record value into event data for its content type."""
    if body is None or (not body and is_json_content_type(content_type)):
        return None
    if is_json_content_type(content_type):
        return parse_json(body, field_name="data", strict=strict)
    return body


def to_json_dict(event: CloudEvent) -> dict[str, Any]:
    """The event in the CloudEvents JSON format, as a dict (also the shape patterns match on)."""
    out: dict[str, Any] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    for name in OPTIONAL:
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    out.update(event.extensions)
    if isinstance(event.data, bytes | bytearray):
        out["data_base64"] = base64.b64encode(event.data).decode("ascii")
    elif event.data is not None:
        out["data"] = event.data
    return out


def from_json_dict(doc: Any, *, strict: bool = False) -> CloudEvent:
    """Build and validate an event from the CloudEvents JSON format.

    `strict` (untrusted input at the edge) parses JSON carried in `data_base64` as `parse_json` does
    with `strict`, so it is refused as the same JSON in `data` is.
    """
    if not isinstance(doc, dict):
        raise InvalidEvent("body", "a structured CloudEvent must be a JSON object")
    if "data" in doc and "data_base64" in doc:
        raise InvalidEvent("data_base64", "an event carries either data or data_base64, not both")
    attributes: dict[str, Any] = {}
    extensions: dict[str, Extension] = {}
    for name, value in doc.items():
        if value is None and name not in ("data", "data_base64"):
            continue  # the JSON format: a null attribute MUST be treated as unset
        if name in CONTEXT_ATTRIBUTES:
            attributes[name] = value
        elif name not in ("data", "data_base64"):
            extensions[name] = value
    for name in REQUIRED:
        if name not in attributes:
            raise InvalidEvent(name, "required attribute is missing")
    data = _json_format_data(doc, attributes.get("datacontenttype"), strict=strict)
    return CloudEvent.create(**attributes, extensions=extensions, data=data)


def _json_format_data(doc: dict[str, Any], content_type: Any, *, strict: bool) -> Any:
    """The data of a JSON-format event: `data_base64` as bytes, JSON as is, other text as bytes."""
    if "data_base64" in doc:
        encoded = doc["data_base64"]
        if not isinstance(encoded, str):
            raise InvalidEvent("data_base64", "must be a base64 string")
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise InvalidEvent("data_base64", "is not valid base64") from exc
        if is_json_content_type(content_type if isinstance(content_type, str) else None):
            # The model holds JSON data decoded; the JSON format allows base64-carried JSON.
            return parse_json(decoded, field_name="data_base64", strict=strict) if decoded else None
        return decoded
    data = doc.get("data")
    if data is None or is_json_content_type(content_type if isinstance(content_type, str) else None):
        return data
    # Non-JSON data carried in a JSON document is a string (e.g. text/plain): keep its bytes.
    if not isinstance(data, str):
        raise InvalidEvent("data", "non-JSON datacontenttype needs string data or data_base64")
    return data.encode("utf-8")

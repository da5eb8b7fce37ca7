"""CloudEvents Kafka protocol binding: the one place a Kafka record becomes an event and back (pure).

Binary mode (what bus writes): attributes and extensions in `ce_*` headers, `content-type`
header = datacontenttype, record value = data. Structured mode (accepted on input):
`content-type: application/cloudevents+json`, value = the JSON event format.
Record key = `partitionkey` extension, else `subject`, else none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from bus.errors import InvalidEvent
from bus.events import (
    CONTEXT_ATTRIBUTES,
    STRUCTURED_CONTENT_TYPE,
    CloudEvent,
    Extension,
    data_from_bytes,
    data_to_bytes,
    from_json_dict,
    parse_json,
    to_json_dict,
)

__all__ = [
    "STRUCTURED_CONTENT_TYPE",
    "Headers",
    "Record",
    "attributes_of",
    "deciding_headers",
    "from_record",
    "header",
    "record_size",
    "routable_headers",
    "to_record",
    "with_extensions",
]

_PREFIX = "ce_"

Headers = Sequence[tuple[str, bytes]]


class Record(NamedTuple):
    """A Kafka record as the bindings see it: key, value and headers, no topic or offset.

    A named tuple, not a dataclass: the router makes one per output record, and a tuple is made
    in about half the time of a frozen dataclass.
    """

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def to_record(event: CloudEvent, *, structured: bool = False) -> Record:
    """Encode an event as a Kafka record (binary mode unless `structured`)."""
    key = event.partition_key
    key_bytes = key.encode("utf-8") if key is not None else None
    if structured:
        value = orjson.dumps(to_json_dict(event))
        return Record(key_bytes, value, (("content-type", STRUCTURED_CONTENT_TYPE.encode()),))
    headers: list[tuple[str, bytes]] = [
        ("ce_specversion", event.specversion.encode()),
        ("ce_id", event.id.encode("utf-8")),
        ("ce_source", event.source.encode("utf-8")),
        ("ce_type", event.type.encode("utf-8")),
    ]
    for name in ("time", "subject", "dataschema"):
        value_text = getattr(event, name)
        if value_text is not None:
            headers.append((_PREFIX + name, value_text.encode("utf-8")))
    for name, ext in event.extensions.items():
        headers.append((_PREFIX + name, _extension_text(ext).encode("utf-8")))
    content_type = event.datacontenttype
    if content_type is None and event.data is not None and not isinstance(event.data, bytes):
        content_type = "application/json"
    if content_type is not None:
        headers.append(("content-type", content_type.encode("utf-8")))
    return Record(key_bytes, data_to_bytes(event), tuple(headers))


def record_size(record: Record) -> int:
    """Bytes a record carries: key, value and headers (what the per-record limit counts)."""
    size = len(record.key or b"") + len(record.value or b"")
    for name, value in record.headers:  # a loop: this runs for every record the router writes
        size += len(name) + len(value or b"")
    return size


def _extension_text(value: Extension) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def header(headers: Headers | None, name: str) -> bytes | None:
    """The last value of header `name`, or None."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = value
    return found


def from_record(
    key: bytes | None, value: bytes | None, headers: Headers | None, *, with_data: bool = True
) -> CloudEvent:
    """Decode a Kafka record in binary or structured mode; raises InvalidEvent naming the field.

    Without `with_data`, a binary-mode record's value is not decoded (the event has no data):
    for readers that look at the attributes only, such as a router whose rules never name `data`.
    """
    fast = _binary_fast(headers)
    if fast is not None:
        return _binary_event(*fast, value, with_data=with_data)
    content_type_raw = header(headers, "content-type")
    content_type = _text("content-type", content_type_raw) if content_type_raw is not None else None
    if content_type is not None and content_type.lower().startswith(STRUCTURED_CONTENT_TYPE):
        return from_json_dict(parse_json(value or b"", field_name="value"))
    attributes: dict[str, Any] = {}
    extensions: dict[str, Extension] = {}
    for name, raw in headers or ():
        if not name.startswith(_PREFIX):
            continue
        attr = name[len(_PREFIX) :]
        text = _text(name, raw)
        if attr in CONTEXT_ATTRIBUTES:
            attributes[attr] = text
        else:
            extensions[attr] = text
    if "specversion" not in attributes:
        raise InvalidEvent("ce_specversion", "header missing: record is not a CloudEvent")
    return _binary_event(attributes, extensions, content_type, value, with_data=with_data)


def _binary_event(
    attributes: dict[str, Any],
    extensions: dict[str, Extension],
    content_type: str | None,
    value: bytes | None,
    *,
    with_data: bool,
) -> CloudEvent:
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    data = data_from_bytes(content_type, value) if with_data else None
    for name in ("id", "source", "type"):
        if name not in attributes:
            raise InvalidEvent(_PREFIX + name, "required header is missing")
    return CloudEvent.from_attributes(attributes, extensions, data)


def _binary_fast(
    headers: Headers | None,
) -> tuple[dict[str, Any], dict[str, Extension], str | None] | None:
    """A binary-mode record's attributes, extensions and content type in one pass over its headers.

    None when the long way must decide: a structured record, a header that is not UTF-8 (the long
    way names it), no `ce_specversion`. Later headers of one name win, as in the long way.
    """
    attributes: dict[str, Any] = {}
    extensions: dict[str, Extension] = {}
    content_type = None
    roles = _ROLES
    try:
        for name, raw in headers or ():
            role = roles.get(name) or _role(name)
            if role is _CONTENT_TYPE:
                content_type = raw.decode()
            elif role is not _OTHER:
                member, is_attribute = role
                (attributes if is_attribute else extensions)[member] = raw.decode()
    except (UnicodeDecodeError, AttributeError):  # AttributeError: a header without a value
        return None
    if "specversion" not in attributes or (
        content_type is not None and content_type.lower().startswith(STRUCTURED_CONTENT_TYPE)
    ):
        return None
    return attributes, extensions, content_type


_CONTENT_TYPE = ("content-type", False)
_OTHER = ("", False)
_ROLES: dict[str, tuple[str, bool]] = {"content-type": _CONTENT_TYPE}
"""Header name -> (attribute or extension name, whether an attribute); `_OTHER` for headers that
are neither (at most 10,000 names of at most 64 characters; then it starts afresh)."""


def _role(name: str) -> tuple[str, bool]:
    """What header `name` carries in binary mode (`_ROLES`' entry, remembered)."""
    if name[:3] == _PREFIX:
        member = name[3:]
        role = (member, member in CONTEXT_ATTRIBUTES)
    else:
        role = _OTHER
    if len(name) <= _MEMO_NAME_LENGTH:  # a flood of long junk names must not pin memory
        if len(_ROLES) >= 10_000:
            _ROLES.clear()
            _ROLES["content-type"] = _CONTENT_TYPE
        _ROLES[name] = role
    return role


_MEMO_NAME_LENGTH = 64
"""Longest header name `_ROLES` remembers."""


_MEMBERS: dict[str, str] = {}
"""`ce_<name>` header -> `<name>`, as met (at most 10,000 names are remembered)."""


def attributes_of(headers: Headers | None) -> dict[str, Any] | None:
    """A binary-mode record's attributes and extensions as JSON-format members, without its data.

    The routing fast path: it checks what routing relies on (UTF-8 headers, specversion 1.0, a
    non-empty id, source and type, no extension named like a data member), not the format of every
    attribute, which the gateway checked on the way in and workers check again. None for a
    structured-mode record (decode it with `from_record`).
    """
    doc: dict[str, Any] = {}
    content_type: str | None = None
    undecodable: str | None = None
    for name, raw in headers or ():
        member = _MEMBERS.get(name)
        if member is None and name.startswith(_PREFIX):
            member = name[len(_PREFIX) :]
            if len(_MEMBERS) < 10_000:
                _MEMBERS[name] = member
        if member is not None:
            try:
                doc[member] = (raw or b"").decode(
                    "utf-8"
                )  # a header without a value reads as "", as in from_record
            except UnicodeDecodeError:
                undecodable = undecodable or name
        elif name == "content-type":
            content_type = _text(name, raw)
            if content_type.lower().startswith(STRUCTURED_CONTENT_TYPE):
                return None
    if undecodable is not None:
        raise InvalidEvent(undecodable, "header is not valid UTF-8")
    if content_type is not None:  # as in from_record: the content-type header wins over ce_datacontenttype
        doc["datacontenttype"] = content_type
    _check_routable(doc)
    return doc


def deciding_headers(members: Iterable[str]) -> tuple[str, ...]:
    """The headers whose values decide what `attributes_of` makes of `members`, and whether it
    accepts the record at all (specversion, data-named extensions, structured mode), sorted.

    Two records of `routable_headers` with the same values at these headers give the same
    members and the same verdict, whatever their other headers hold.
    """
    names = {_PREFIX + member for member in members}
    names.update(_DECIDING)
    return tuple(sorted(names))


_DECIDING = (
    "content-type",
    _PREFIX + "datacontenttype",
    _PREFIX + "specversion",
    _PREFIX + "data",
    _PREFIX + "data_base64",
)
"""Headers every verdict of `attributes_of` depends on (besides the per-record id, source and type)."""


def routable_headers(headers: Headers | None) -> tuple[dict[str, bytes], int] | None:
    """The headers by name and the bytes they carry (names and values), when `attributes_of`
    decides the record by the values of `deciding_headers` alone; else None.

    That is when no name repeats, every value is UTF-8 text, and the record has a non-empty
    `ce_id`, `ce_source` and `ce_type`. The routing hot path: a few C-level calls per record.
    """
    if not headers:
        return None
    try:
        by_name = dict(headers)
        if len(by_name) != len(headers):  # a repeated name
            return None
        # One check of every value: the separator ends any multi-byte sequence cut at an edge.
        text = b"\n".join(by_name.values())
        if not text.isascii():  # ASCII is UTF-8; decoding other text makes a str only to drop it
            text.decode("utf-8")
    except (TypeError, ValueError):  # a value missing (None), or not UTF-8 (a ValueError)
        return None
    get = by_name.get
    if not (get("ce_id") and get("ce_source") and get("ce_type")):
        return None
    return by_name, len(text) - len(by_name) + 1 + len("".join(by_name))


def _check_routable(doc: Mapping[str, Any]) -> None:
    """What routing relies on: a CloudEvent 1.0 with id, source and type, and no data-named extension."""
    if doc.get("specversion") != "1.0":
        raise InvalidEvent("ce_specversion", "header missing or not 1.0: record is not a CloudEvent 1.0")
    for required in ("id", "source", "type"):
        if not doc.get(required):
            raise InvalidEvent(_PREFIX + required, "required header is missing")
    if "data" in doc or "data_base64" in doc:
        raise InvalidEvent("ce_data", "'data' and 'data_base64' are not extension names")


def with_extensions(record: Record, extensions: Mapping[str, str]) -> Record:
    """The record with string extensions set (replacing any of the same name), all else unchanged.

    Binary mode: `ce_<name>` headers. Structured mode: also members of the JSON event, where
    decoders look (they ignore `ce_*` headers then); the value is re-serialised for that.
    Raises InvalidEvent for a structured value that is not a JSON object.
    """
    names = {_PREFIX + name for name in extensions}
    content_type: bytes | None = None
    kept: list[tuple[str, bytes]] = []
    for key, raw in record.headers:
        if key == "content-type":
            content_type = raw
        if key not in names:
            kept.append((key, raw))
    headers = (*kept, *((_PREFIX + name, text.encode("utf-8")) for name, text in extensions.items()))
    value = record.value
    if content_type is not None and _text("content-type", content_type).lower().startswith(
        STRUCTURED_CONTENT_TYPE
    ):
        doc = parse_json(value or b"", field_name="value")
        if not isinstance(doc, dict):
            raise InvalidEvent("value", "a structured CloudEvent must be a JSON object")
        value = orjson.dumps({**doc, **extensions})
    return Record(record.key, value, headers)


def _text(name: str, raw: bytes | None) -> str:
    try:
        return (raw or b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(name, "header is not valid UTF-8") from exc

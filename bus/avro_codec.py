"""Typed event data as Avro: encode, guarded decode, and how a record names its schema (pure).

On Kafka a typed event is a binary-mode CloudEvent whose `content-type` is `application/avro` and
whose `dataschema` (the `ce_dataschema` header) names the writer schema:

- without a registry, `bus:schema:<type>:<fingerprint>` (CRC-64-AVRO of the canonical form, hex),
  and the record value is the plain Avro body;
- with a Confluent-compatible registry, `<registry url>/schemas/ids/<id>`, and the value is in
  Confluent's wire format (byte 0, the id as 4 big-endian bytes, the Avro body), so Confluent
  deserializers read bus's records as they are.

A dataschema is only ever an identifier: bus looks the id up in its own book or its own registry
and never fetches a URL an event names.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fastavro

from bus.avro_guard import DEFAULT_MAX_ITEMS, check_body
from bus.avro_schema import JSON_LOGICAL_TYPE, Schema
from bus.avro_validation import conform
from bus.errors import InvalidEvent
from bus.events import JSON_CONTENT_TYPE, MAX_JSON_DEPTH, CloudEvent, parse_json

__all__ = [
    "AVRO_CONTENT_TYPE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ITEMS",
    "SCHEMA_URI_PREFIX",
    "BookRef",
    "RegistryRef",
    "decode",
    "encode",
    "frame",
    "from_avro_event",
    "is_avro",
    "parse_dataschema",
    "registry_uri",
    "schema_uri",
    "to_avro_event",
    "unframe",
]

AVRO_CONTENT_TYPE = "application/avro"
SCHEMA_URI_PREFIX = "bus:schema:"
DEFAULT_MAX_BYTES = 1_048_576
"""Largest Avro body decoded by default: Kafka's default record size."""
_IDS_PATH = "/schemas/ids/"
_MAGIC = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BookRef:
    """A `bus:schema:<type>:<fingerprint>` dataschema: look the fingerprint up in the schema book."""

    event_type: str
    fingerprint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryRef:
    """A `<registry url>/schemas/ids/<id>` dataschema: the body is in Confluent's wire format."""

    registry_url: str
    schema_id: int


def encode(schema: Schema, datum: Any) -> bytes:
    """Validate `datum` (InvalidEvent naming the path) and return its schemaless Avro binary."""
    wire = conform(schema, datum)
    out = io.BytesIO()
    try:
        fastavro.schemaless_writer(out, schema.wire, wire)
    except Exception as exc:  # validation passed, so this is a bus bug; still an InvalidEvent to callers
        raise InvalidEvent("data", f"cannot be written as Avro: {exc}") from exc
    return out.getvalue()


def decode(
    writer_schema: Schema,
    body: bytes,
    *,
    reader_schema: Schema | None = None,
    max_bytes: int,
    max_items: int,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Decode untrusted Avro written with `writer_schema`, resolved to `reader_schema` if given.

    Bodies over `max_bytes`, over `max_items` array items and map entries in total, nesting deeper
    than `max_depth`, truncated or followed by garbage are refused before fastavro sees them. The
    result is JSON-like (bytes as strings of code points 0-255, JSON-typed strings parsed). Every
    failure is InvalidEvent("data", reason).
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise InvalidEvent("data", f"expected an Avro body as bytes, got a {type(body).__name__}")
    body = bytes(body)
    if len(body) > max_bytes:
        raise InvalidEvent("data", f"Avro body of {len(body)} bytes is over the limit of {max_bytes} bytes")
    check_body(writer_schema, body, max_items=max_items, max_depth=max_depth)
    target = reader_schema or writer_schema
    try:
        value = fastavro.schemaless_reader(
            io.BytesIO(body),
            writer_schema.wire,
            reader_schema.wire if reader_schema is not None else None,
            return_named_type=target.converts,
        )
    except UnicodeDecodeError:
        raise InvalidEvent("data", "is not a valid Avro body: a string is not valid UTF-8") from None
    except Exception as exc:  # fastavro's resolution and read errors have no common base class
        if type(exc).__name__ == "SchemaResolutionError":
            raise InvalidEvent("data", f"cannot be read with the reader schema: {exc}") from None
        raise InvalidEvent("data", f"is not a valid Avro body: {exc or type(exc).__name__}") from None
    if target.converts:
        return _to_json(target, target.parsed, value, "data")
    return value


def frame(schema_id: int, body: bytes) -> bytes:
    """Confluent's wire format: magic byte 0, the registry id as 4 big-endian bytes, the Avro body."""
    if not 0 <= schema_id < 2**31:
        raise ValueError(f"registry schema id {schema_id} is not a positive 32-bit integer")
    return struct.pack(">bI", _MAGIC, schema_id) + body


def unframe(value: bytes) -> tuple[int, bytes]:
    """(registry id, Avro body) of a Confluent wire-format value; InvalidEvent("data", ...) if not one."""
    if len(value) < 5 or value[0] != _MAGIC:
        raise InvalidEvent(
            "data",
            "is not in Confluent's wire format (byte 0, then a 4-byte schema id); "
            "a registry dataschema needs a framed value",
        )
    (schema_id,) = struct.unpack_from(">I", value, 1)
    return schema_id, bytes(value[5:])


def schema_uri(event_type: str, schema: Schema) -> str:
    """The dataschema naming a schema without a registry: `bus:schema:<type>:<fingerprint>`."""
    return f"{SCHEMA_URI_PREFIX}{event_type}:{schema.fingerprint}"


def registry_uri(registry_url: str, schema_id: int) -> str:
    """The dataschema naming a registry schema: `<registry url>/schemas/ids/<id>`, credentials removed."""
    parts = urlsplit(registry_url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return f"{base}{_IDS_PATH}{schema_id}"


def parse_dataschema(uri: str) -> BookRef | RegistryRef:
    """Which schema a typed event's dataschema names; InvalidEvent("dataschema", ...) if neither form."""
    if uri.startswith(SCHEMA_URI_PREFIX):
        event_type, _, fingerprint = uri[len(SCHEMA_URI_PREFIX) :].rpartition(":")
        if event_type and len(fingerprint) == 16 and all(c in "0123456789abcdef" for c in fingerprint):
            return BookRef(event_type=event_type, fingerprint=fingerprint)
    base, found, schema_id = uri.rpartition(_IDS_PATH)
    if found and base and schema_id.isascii() and schema_id.isdigit() and len(schema_id) <= 10:
        number = int(schema_id)
        if number < 2**31:
            return RegistryRef(registry_url=base, schema_id=number)
    raise InvalidEvent(
        "dataschema",
        f"{uri[:120]!r} names no Avro schema bus knows: expected bus:schema:<type>:<16 hex digits> "
        "or <registry url>/schemas/ids/<id>",
    )


def is_avro(event: CloudEvent) -> bool:
    """True when the event's data is Avro (content type application/avro)."""
    content_type = event.datacontenttype or ""
    return content_type.split(";", 1)[0].strip().lower() == AVRO_CONTENT_TYPE


def to_avro_event(
    event: CloudEvent, schema: Schema, *, registry_url: str | None = None, schema_id: int | None = None
) -> CloudEvent:
    """The event with its JSON data validated and carried as Avro, its schema named in dataschema.

    With `registry_url` and `schema_id` (the schema's registry id) the value is Confluent-framed.
    """
    body = encode(schema, event.data)
    if registry_url is not None and schema_id is not None:
        return replace(
            event,
            datacontenttype=AVRO_CONTENT_TYPE,
            dataschema=registry_uri(registry_url, schema_id),
            data=frame(schema_id, body),
        )
    return replace(
        event, datacontenttype=AVRO_CONTENT_TYPE, dataschema=schema_uri(event.type, schema), data=body
    )


def from_avro_event(
    event: CloudEvent,
    writer_schema: Schema,
    *,
    reader_schema: Schema | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> CloudEvent:
    """The event with its Avro data decoded to JSON (content type application/json, dataschema kept).

    `writer_schema` is what the event's dataschema names (see `parse_dataschema`); a registry
    framed value must carry the id its dataschema names.
    """
    if not isinstance(event.data, bytes | bytearray):
        raise InvalidEvent("data", "an application/avro event needs its data as bytes")
    if event.dataschema is None:
        raise InvalidEvent("dataschema", "an application/avro event must name its schema in dataschema")
    body = bytes(event.data)
    ref = parse_dataschema(event.dataschema)
    if isinstance(ref, BookRef) and ref.fingerprint != writer_schema.fingerprint:
        raise InvalidEvent(
            "dataschema",
            f"names schema {ref.fingerprint}, but the writer schema given is {writer_schema.fingerprint}",
        )
    if isinstance(ref, RegistryRef):
        framed_id, body = unframe(body)
        if framed_id != ref.schema_id:
            raise InvalidEvent(
                "data", f"is framed with schema id {framed_id} but dataschema names id {ref.schema_id}"
            )
    value = decode(writer_schema, body, reader_schema=reader_schema, max_bytes=max_bytes, max_items=max_items)
    return replace(event, datacontenttype=JSON_CONTENT_TYPE, data=value)


def _to_json(schema: Schema, node: Any, value: Any, path: str) -> Any:  # noqa: PLR0911 - per Avro type
    """A value fastavro read (named union branches tagged) as bus's JSON-like data."""
    node = schema.resolve(node)
    if isinstance(node, list):
        return _union_to_json(schema, node, value, path)
    if isinstance(value, bytes):  # bytes or fixed, in Avro's JSON encoding
        return value.decode("latin-1")
    if isinstance(node, str):
        return value
    kind = node["type"]
    if kind in ("record", "error"):
        return {
            f["name"]: _to_json(schema, f["type"], value[f["name"]], f"{path}.{f['name']}")
            for f in node["fields"]
        }
    if kind == "array":
        return [_to_json(schema, node["items"], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        return {
            key: _to_json(schema, node["values"], item, f"{path}[{key!r}]") for key, item in value.items()
        }
    if node.get("logicalType") == JSON_LOGICAL_TYPE and isinstance(value, str):
        try:
            return parse_json(value, field_name="data")
        except InvalidEvent:
            raise InvalidEvent("data", f"{path} holds JSON text that is not valid JSON") from None
    if isinstance(kind, dict | list):
        return _to_json(schema, kind, value, path)
    return value


def _union_to_json(schema: Schema, branches: list[Any], value: Any, path: str) -> Any:
    """fastavro tags named branches `(name, value)`; the others are told apart by the value's type."""
    if isinstance(value, tuple):
        name, inner = value
        for branch in branches:
            resolved = schema.resolve(branch)
            if isinstance(resolved, dict) and resolved.get("name") == name:
                return _to_json(schema, resolved, inner, path)
        return inner
    if isinstance(value, bytes):
        return value.decode("latin-1")
    for branch in branches:
        resolved = schema.resolve(branch)
        kind = resolved if isinstance(resolved, str) else resolved["type"]
        if (kind == "map" and isinstance(value, dict)) or (kind == "array" and isinstance(value, list)):
            return _to_json(schema, resolved, value, path)
    return value

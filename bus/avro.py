"""Typed events as Avro: the one import for schemas, validation, encoding and compatibility (pure).

    bus.avro_schema      Schema, SchemaBook: parse `.avsc`, CRC-64-AVRO ids, platform and manifest schemas
    bus.avro_validation  validate: JSON-like data against a schema, errors naming `data.items[2].price`
    bus.avro_guard       the bomb guard: walk untrusted Avro under item, depth and length limits
    bus.avro_codec       encode, decode, Confluent framing and the dataschema of typed events
    bus.avro_compat      check_compatible: BACKWARD, FORWARD, FULL (the default), NONE

The registry adapter (the only part with sockets) is `bus.registry`.
"""

from __future__ import annotations

from bus.avro_codec import (
    AVRO_CONTENT_TYPE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    BookRef,
    RegistryRef,
    decode,
    encode,
    frame,
    from_avro_event,
    is_avro,
    parse_dataschema,
    registry_uri,
    schema_uri,
    to_avro_event,
    unframe,
)
from bus.avro_compat import DEFAULT_COMPATIBILITY, Compatibility, check_compatible
from bus.avro_schema import Schema, SchemaBook, load_book, parse, platform_book
from bus.avro_validation import validate

__all__ = [
    "AVRO_CONTENT_TYPE",
    "DEFAULT_COMPATIBILITY",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ITEMS",
    "BookRef",
    "Compatibility",
    "RegistryRef",
    "Schema",
    "SchemaBook",
    "check_compatible",
    "decode",
    "encode",
    "frame",
    "from_avro_event",
    "is_avro",
    "load_book",
    "parse",
    "parse_dataschema",
    "platform_book",
    "registry_uri",
    "schema_uri",
    "to_avro_event",
    "unframe",
    "validate",
]

"""Typed events on Kafka: Avro bodies, their schema headers, and decoding untrusted bodies safely."""

from __future__ import annotations

import io
import time
from typing import Any, TypedDict

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.avro_codec import (
    AVRO_CONTENT_TYPE,
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
from bus.avro_schema import Schema, parse, platform_book
from bus.errors import InvalidEvent
from bus.events import CloudEvent
from bus.kafka_binding import from_record, header, to_record

OBJECT = platform_book().types["bus.object.*"]
NOTIFICATION: dict[str, Any] = {
    "provider": "s3",
    "bucket": "uploads",
    "key": "photos/red flower.jpg",
    "size": 1024,
    "etag": "d41d8cd98f00b204e9800998ecf8427e",
    "version_id": None,
    "sequencer": "0055AED6DCD90281E5",
    "event_name": "ObjectCreated:Put",
    "region": "eu-west-1",
    "event_time": "2026-01-31T09:30:00.000Z",
}
NULLS = parse({"type": "array", "items": "null"})
LONGS = parse({"type": "array", "items": "long"})
EMPTY_RECORDS = parse({"type": "array", "items": {"type": "record", "name": "Empty", "fields": []}})
NODE = parse(
    {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "next", "type": ["null", "Node"], "default": None}],
    }
)
NESTED = parse(
    {
        "type": "record",
        "name": "Doc",
        "fields": [
            {"name": "tags", "type": {"type": "map", "values": {"type": "array", "items": "string"}}},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
            {"name": "id", "type": {"type": "fixed", "name": "Id", "size": 4}},
            {"name": "flag", "type": "boolean"},
            {"name": "ratio", "type": ["null", "float", "double", "bytes"]},
            {"name": "count", "type": "int"},
            {"name": "extra", "type": {"type": "string", "logicalType": "json"}},
        ],
    }
)


class Limits(TypedDict):
    """decode()'s limits, as keyword arguments."""

    max_bytes: int
    max_items: int


LIMITS: Limits = {"max_bytes": 1 << 20, "max_items": 100_000}


def varint(value: int) -> bytes:
    """Avro's zig-zag varint, written here independently of the code under test."""
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def fastavro_bytes(schema: Schema, datum: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema.wire, datum)
    return out.getvalue()


def test_encoding_is_plain_schemaless_avro() -> None:
    """encode() writes what fastavro's schemaless writer writes, and decode() reads it back."""
    body = encode(OBJECT, NOTIFICATION)
    assert body == fastavro_bytes(OBJECT, NOTIFICATION)
    assert decode(OBJECT, body, **LIMITS) == NOTIFICATION


def test_the_five_byte_bomb_is_refused_in_milliseconds() -> None:
    """RELIABILITY's pitfall: 5 bytes declaring ten million nulls never reach fastavro."""
    bomb = varint(10_000_000) + b"\x00"
    assert len(bomb) == 5
    started = time.perf_counter()
    with pytest.raises(InvalidEvent) as caught:
        decode(NULLS, bomb, **LIMITS)
    assert time.perf_counter() - started < 0.25
    assert caught.value.field == "data"
    assert "over the limit of 100000" in caught.value.reason


def test_zero_byte_items_are_bounded_by_count_not_bytes() -> None:
    """Empty records take no bytes: only the item count stops them, in one block or across many."""
    with pytest.raises(InvalidEvent, match="over the limit of 1000"):
        decode(EMPTY_RECORDS, varint(5_000) + b"\x00", max_bytes=100, max_items=1000)
    many_blocks = (varint(600) + varint(600)) + b"\x00"
    with pytest.raises(InvalidEvent, match="over the limit of 1000"):
        decode(NULLS, many_blocks, max_bytes=100, max_items=1000)
    assert decode(NULLS, varint(3) + b"\x00", max_bytes=100, max_items=1000) == [None, None, None]


def test_counts_the_remaining_bytes_cannot_hold_are_refused() -> None:
    """A block of a million longs in 3 bytes is refused before any item is read, whatever max_items."""
    with pytest.raises(InvalidEvent, match="declares 1000000 array items of at least 1 bytes"):
        decode(LONGS, varint(1_000_000) + b"\x02\x00", max_bytes=100, max_items=10**9)


def test_negative_block_counts_carry_a_size() -> None:
    """A negative count is followed by the block's byte size (Avro spec), which must fit the body."""
    body = varint(-2) + varint(2) + varint(1) + varint(2) + b"\x00"
    assert decode(LONGS, body, **LIMITS) == [1, 2]
    with pytest.raises(InvalidEvent, match="declares 99 bytes"):
        decode(LONGS, varint(-2) + varint(99) + varint(1) + varint(2) + b"\x00", **LIMITS)


def test_oversized_truncated_and_trailing_bodies_are_refused() -> None:
    """Over max_bytes, cut short, or followed by extra bytes: each is an InvalidEvent on data."""
    body = encode(OBJECT, NOTIFICATION)
    with pytest.raises(InvalidEvent, match="over the limit of 10 bytes"):
        decode(OBJECT, body, max_bytes=10, max_items=10)
    for cut in (0, 1, len(body) // 2, len(body) - 1):
        with pytest.raises(InvalidEvent, match="ends early"):
            decode(OBJECT, body[:cut], **LIMITS)
    with pytest.raises(InvalidEvent, match="1 bytes of trailing garbage"):
        decode(OBJECT, body + b"\x00", **LIMITS)


def test_deep_recursion_in_a_body_is_refused() -> None:
    """A recursive schema's body nesting past max_depth is refused before fastavro recurses."""
    deep = b"\x02" * 10_000 + b"\x00"
    with pytest.raises(InvalidEvent, match="nest deeper than 64 levels"):
        decode(NODE, deep, **LIMITS)
    assert decode(NODE, b"\x02\x02\x00", **LIMITS) == {"next": {"next": {"next": None}}}


@pytest.mark.parametrize(
    ("schema", "body", "reason"),
    [
        (parse('"boolean"'), b"\x02", "a boolean byte is 2"),
        (parse('"int"'), varint(2**31), "an int overflows 32 bits"),
        (parse('"long"'), b"\xff" * 11, "a varint runs over 10 bytes"),
        (parse('"string"'), varint(-3), "a negative length"),
        (parse('"string"'), varint(2) + b"\xff\xfe", "not valid UTF-8"),
        (parse(["null", "int"]), varint(2), "union branch 2 does not exist"),
        (parse({"type": "enum", "name": "K", "symbols": ["A"]}), varint(1), "enum index 1"),
        (parse({"type": "string", "logicalType": "json"}), varint(3) + b"{x}", "not valid JSON"),
    ],
)
def test_malformed_values_are_refused(schema: Schema, body: bytes, reason: str) -> None:
    """Out-of-range indexes, over-long varints, bad UTF-8 or JSON: InvalidEvent naming the problem."""
    with pytest.raises(InvalidEvent) as caught:
        decode(schema, body, **LIMITS)
    assert caught.value.field == "data"
    assert reason in caught.value.reason


FUZZ_SCHEMAS = [
    OBJECT,
    NULLS,
    LONGS,
    EMPTY_RECORDS,
    NODE,
    NESTED,
    platform_book().types["bus.function.error"],
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.sampled_from(FUZZ_SCHEMAS), body=st.binary(max_size=64))
def test_random_bytes_only_ever_raise_invalid_event(schema: Schema, body: bytes) -> None:
    """Whatever the bytes, decode() returns a value or raises InvalidEvent on data, nothing else."""
    try:
        decode(schema, body, max_bytes=1024, max_items=1000)
    except InvalidEvent as exc:
        field = exc.field
    else:
        field = "data"
    assert field == "data"


VALID_DOC = {
    "tags": {"a": ["x", "y"], "b": []},
    "kind": "B",
    "id": "\x00\x01\x02\x03",
    "flag": True,
    "ratio": 0.5,
    "count": -7,
    "extra": {"any": [1, None]},
}


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_corrupted_valid_bodies_only_ever_raise_invalid_event(data: st.DataObject) -> None:
    """A valid body with bytes changed, dropped or inserted decodes or raises InvalidEvent, nothing else."""
    body = bytearray(encode(NESTED, VALID_DOC))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(body)))
        action = data.draw(st.sampled_from(["set", "drop", "insert"]))
        byte = data.draw(st.integers(0, 255))
        if action == "set" and position < len(body):
            body[position] = byte
        elif action == "drop" and position < len(body):
            del body[position]
        else:
            body.insert(position, byte)
    try:
        decode(NESTED, bytes(body), max_bytes=1024, max_items=1000)
    except InvalidEvent as exc:
        field = exc.field
    else:
        field = "data"
    assert field == "data"


def test_non_bytes_bodies_are_refused() -> None:
    """A body that is not bytes is an InvalidEvent, not a TypeError."""
    with pytest.raises(InvalidEvent, match="expected an Avro body as bytes"):
        decode(OBJECT, "text", **LIMITS)  # type: ignore[arg-type]


def test_confluent_framing_round_trips() -> None:
    """Magic byte 0, the id as 4 big-endian bytes, then the body; anything else is refused."""
    framed = frame(258, b"body")
    assert framed == b"\x00\x00\x00\x01\x02body"
    assert unframe(framed) == (258, b"body")
    for bad in (b"", b"\x00\x00\x01", b"\x01\x00\x00\x00\x01body"):
        with pytest.raises(InvalidEvent, match="Confluent's wire format"):
            unframe(bad)


def test_dataschema_forms() -> None:
    """bus:schema:<type>:<fingerprint> names a book schema; <registry>/schemas/ids/<id> a registry one."""
    uri = schema_uri("order.placed", OBJECT)
    assert uri == f"bus:schema:order.placed:{OBJECT.fingerprint}"
    assert parse_dataschema(uri) == BookRef(event_type="order.placed", fingerprint=OBJECT.fingerprint)
    assert registry_uri("https://key:secret@registry.example:8081/base/", 7) == (
        "https://registry.example:8081/base/schemas/ids/7"
    )
    assert parse_dataschema("https://registry.example:8081/base/schemas/ids/7") == RegistryRef(
        registry_url="https://registry.example:8081/base", schema_id=7
    )
    for bad in ("https://example.com/schema.avsc", "bus:schema:x:123", "http://r/schemas/ids/99999999999"):
        with pytest.raises(InvalidEvent) as caught:
            parse_dataschema(bad)
        assert caught.value.field == "dataschema"


def event(data: Any) -> CloudEvent:
    return CloudEvent.create(
        id="n-1", source="s3://uploads", type="bus.object.created", subject="photos/red flower.jpg", data=data
    )


def test_a_typed_event_crosses_kafka_as_avro_with_its_schema_named() -> None:
    """content-type application/avro, ce_dataschema naming the fingerprint, value = the Avro body."""
    typed = to_avro_event(event(NOTIFICATION), OBJECT)
    record = to_record(typed)
    assert header(record.headers, "content-type") == AVRO_CONTENT_TYPE.encode()
    assert (
        header(record.headers, "ce_dataschema")
        == f"bus:schema:bus.object.created:{OBJECT.fingerprint}".encode()
    )
    assert record.value == encode(OBJECT, NOTIFICATION)
    received = from_record(record.key, record.value, record.headers)
    assert is_avro(received)
    decoded = from_avro_event(received, OBJECT)
    assert decoded.data == NOTIFICATION
    assert decoded.datacontenttype == "application/json"
    assert decoded.dataschema == typed.dataschema


def test_with_a_registry_the_value_is_confluent_framed() -> None:
    """With a registry id the value is in Confluent's wire format and dataschema names the id."""
    typed = to_avro_event(event(NOTIFICATION), OBJECT, registry_url="http://registry:8081", schema_id=42)
    assert typed.dataschema == "http://registry:8081/schemas/ids/42"
    assert typed.data == frame(42, encode(OBJECT, NOTIFICATION))
    assert from_avro_event(typed, OBJECT).data == NOTIFICATION
    wrong = CloudEvent.create(
        id="n-1",
        source="s3://uploads",
        type="bus.object.created",
        datacontenttype=AVRO_CONTENT_TYPE,
        dataschema="http://registry:8081/schemas/ids/43",
        data=typed.data,
    )
    with pytest.raises(InvalidEvent, match="framed with schema id 42 but dataschema names id 43"):
        from_avro_event(wrong, OBJECT)


def test_invalid_data_is_refused_before_encoding() -> None:
    """to_avro_event validates: a bad member is an InvalidEvent naming its path."""
    with pytest.raises(InvalidEvent) as caught:
        to_avro_event(event({**NOTIFICATION, "size": "big"}), OBJECT)
    assert caught.value.field == "data.size"


def test_the_writer_schema_must_be_the_one_dataschema_names() -> None:
    """Decoding with another schema than the fingerprint names is refused on dataschema."""
    typed = to_avro_event(event(NOTIFICATION), OBJECT)
    with pytest.raises(InvalidEvent) as caught:
        from_avro_event(typed, NESTED)
    assert caught.value.field == "dataschema"


def test_reader_schemas_convert_what_they_declare() -> None:
    """A reader schema with bytes and a union of records gets JSON-like values back."""
    writer = parse(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "blob", "type": "string"},
                {
                    "name": "pick",
                    "type": [
                        "null",
                        {"type": "record", "name": "A", "fields": [{"name": "a", "type": "int"}]},
                    ],
                },
            ],
        }
    )
    reader = parse(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "blob", "type": "bytes"},
                {
                    "name": "pick",
                    "type": [
                        "null",
                        "string",
                        {"type": "record", "name": "A", "fields": [{"name": "a", "type": "long"}]},
                    ],
                },
                {"name": "extra", "type": {"type": "string", "logicalType": "json"}, "default": "[1]"},
            ],
        }
    )
    body = encode(writer, {"blob": "\u00e9", "pick": {"a": 5}})
    assert decode(writer, body, reader_schema=reader, **LIMITS) == {
        "blob": "\u00c3\u00a9",
        "pick": {"a": 5},
        "extra": [1],
    }

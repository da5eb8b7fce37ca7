"""Typed events at the edge (`bus.typed_events`) and back to JSON (`bus.avro_store.TypedReader`)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bus.avro_codec import (
    AVRO_CONTENT_TYPE,
    DEFAULT_MAX_ITEMS,
    BookRef,
    RegistryRef,
    encode,
    schema_uri,
    unframe,
)
from bus.avro_schema import Schema, SchemaBook, parse, platform_book
from bus.avro_store import TypedReader
from bus.errors import InvalidEvent
from bus.events import CloudEvent
from bus.typed_events import EdgeSchemas, register_book, typed

V1 = parse(
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "amount", "type": "double"},
            {"name": "lines", "type": {"type": "array", "items": "long"}, "default": []},
        ],
    }
)
V2 = parse(
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "amount", "type": "double"},
            {"name": "lines", "type": {"type": "array", "items": "long"}, "default": []},
            {"name": "currency", "type": "string", "default": "EUR"},
        ],
    }
)
EDGE = EdgeSchemas(book=SchemaBook().with_types({"order.placed": V2}))


def event(data: Any, *, type: str = "order.placed", **attrs: Any) -> CloudEvent:
    return CloudEvent.create(id="e-1", source="shop", type=type, data=data, **attrs)


class FakeStore:
    """A SchemaStore in memory: hands out ids and finds schemas by fingerprint."""

    def __init__(self, *, ids: bool = False) -> None:
        self.schemas: dict[str, Schema] = {}
        self.registered: list[str] = []
        self._ids = ids

    def register(self, event_type: str, schema: Schema) -> int | None:
        self.registered.append(event_type)
        self.schemas[schema.fingerprint] = schema
        return len(self.registered) if self._ids else None

    def ensure_compatible(self, event_type: str, schema: Schema) -> None:
        pass

    def writer_schema(self, ref: BookRef | RegistryRef) -> Schema:
        if isinstance(ref, BookRef) and ref.fingerprint in self.schemas:
            return self.schemas[ref.fingerprint]
        raise InvalidEvent("dataschema", "not registered")


def test_an_untyped_event_stays_json() -> None:
    """An event whose type has no schema passes the edge unchanged."""
    plain = event({"anything": [1, "two"]}, type="untyped")
    assert typed([plain], EDGE) == [plain]


def test_a_typed_event_leaves_the_edge_as_avro_naming_its_schema() -> None:
    """Valid data becomes the Avro body, defaults filled in, the writer named in dataschema."""
    (out,) = typed([event({"id": "o-1", "amount": 9.5})], EDGE)
    assert out.datacontenttype == AVRO_CONTENT_TYPE
    assert out.dataschema == schema_uri("order.placed", V2)
    assert out.data == encode(V2, {"id": "o-1", "amount": 9.5, "lines": [], "currency": "EUR"})


def test_a_bad_field_is_named_by_its_path() -> None:
    """The 400's field is the path into data, the reason what the schema expected."""
    with pytest.raises(InvalidEvent) as caught:
        typed([event({"id": "o-1", "amount": 1, "lines": [1, "two"]})], EDGE)
    assert caught.value.field == "data.lines[1]"
    assert "expected a long" in caught.value.reason


def test_in_a_batch_the_path_starts_with_the_event_index() -> None:
    """The second event of a batch is `[1].data...`, as the batch's other refusals are."""
    good = event({"id": "o-1", "amount": 1})
    bad = event({"id": "o-2", "amount": "ten"})
    with pytest.raises(InvalidEvent) as caught:
        typed([good, bad], EDGE)
    assert caught.value.field == "[1].data.amount"


def test_more_items_than_workers_read_are_refused_at_the_edge() -> None:
    """An array over the workers' item limit is a 400 naming it, not a 202 every worker dead-letters."""
    with pytest.raises(InvalidEvent) as caught:
        typed([event({"id": "o-1", "amount": 1, "lines": [1] * (DEFAULT_MAX_ITEMS + 1)})], EDGE)
    assert caught.value.field == "data.lines"
    assert f"over the limit of {DEFAULT_MAX_ITEMS}" in caught.value.reason
    assert "split it" in caught.value.reason


def test_clients_cannot_send_avro() -> None:
    """application/avro from outside is refused: the gateway writes the Avro itself."""
    raw = event(b"\x02", datacontenttype=AVRO_CONTENT_TYPE)
    with pytest.raises(InvalidEvent) as caught:
        typed([raw], EDGE)
    assert caught.value.field == "datacontenttype"


def test_typed_data_must_arrive_as_json() -> None:
    """A typed type with a non-JSON content type is refused naming datacontenttype."""
    with pytest.raises(InvalidEvent) as caught:
        typed([event(b"id=1", datacontenttype="text/plain")], EDGE)
    assert caught.value.field == "datacontenttype"


def test_platform_object_events_are_typed_by_the_platform_book() -> None:
    """bus.object.* events take the platform's notification schema."""
    edge = EdgeSchemas(book=platform_book())
    data = {
        "provider": "s3",
        "bucket": "b",
        "key": "k.jpg",
        "size": 1,
        "etag": None,
        "version_id": None,
        "sequencer": None,
        "event_name": "ObjectCreated:Put",
        "region": None,
        "event_time": "2026-01-01T00:00:00Z",
    }
    (out,) = typed([event(data, type="bus.object.created")], edge)
    assert out.datacontenttype == AVRO_CONTENT_TYPE
    assert TypedReader(book=platform_book()).read(out).data == data


def test_registering_a_book_collects_registry_ids_and_frames_values() -> None:
    """With a registry, every type is registered and values carry Confluent's framing."""
    store = FakeStore(ids=True)
    edge = register_book(EDGE.book, store, registry_url="http://registry:8081")
    assert store.registered == ["order.placed"]
    (out,) = typed([event({"id": "o-1", "amount": 1})], edge)
    assert out.dataschema == "http://registry:8081/schemas/ids/1"
    assert unframe(out.data)[0] == 1


def test_a_v1_reader_reads_v2_data_without_the_new_field() -> None:
    """Avro resolution: the reader's own schema decides the fields the handler sees."""
    (written,) = typed([event({"id": "o-1", "amount": 2, "currency": "USD"})], EDGE)
    store = FakeStore()
    store.register("order.placed", V2)
    reader = TypedReader(
        book=SchemaBook().with_types({"order.placed": V1}), store=store, max_bytes=10_000, max_items=1000
    )
    read = reader.read(written)
    assert read.data == {"id": "o-1", "amount": 2.0, "lines": []}
    assert read.datacontenttype == "application/json"
    as_written = TypedReader(
        book=SchemaBook(), store=store, resolve=False, max_bytes=10_000, max_items=1000
    ).read(written)
    assert as_written.data["currency"] == "USD"


def test_an_unknown_writer_without_a_store_is_named_in_dataschema() -> None:
    """A writer neither the book nor a store knows makes the event unreadable: InvalidEvent(dataschema)."""
    (written,) = typed([event({"id": "o-1", "amount": 2})], EDGE)
    with pytest.raises(InvalidEvent) as caught:
        TypedReader(book=SchemaBook().with_types({"order.placed": V1})).read(written)
    assert caught.value.field == "dataschema"


def test_a_bomb_body_is_refused_quickly_as_invalid_data() -> None:
    """Five bytes declaring ten million items never reach fastavro."""
    nulls = parse({"type": "array", "items": "null"})
    bomb = CloudEvent.create(
        id="b",
        source="s",
        type="bomb",
        datacontenttype=AVRO_CONTENT_TYPE,
        dataschema=schema_uri("bomb", nulls),
        data=b"\x80\xda\xc4\x09\x00",
    )
    reader = TypedReader(book=SchemaBook().with_types({"bomb": nulls}), max_bytes=10_000, max_items=1000)
    started = time.perf_counter()
    with pytest.raises(InvalidEvent) as caught:
        reader.read(bomb)
    assert time.perf_counter() - started < 0.25
    assert caught.value.field == "data"


def test_json_events_pass_the_reader_unchanged() -> None:
    """Only application/avro events are decoded."""
    plain = event({"x": 1}, type="untyped")
    assert TypedReader().read(plain) is plain

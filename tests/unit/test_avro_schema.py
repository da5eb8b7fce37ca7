"""The schema book: platform and manifest schemas, CRC-64-AVRO ids, loading errors (SPEC §2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import avro.schema
import pytest

from bus.avro_codec import decode, encode
from bus.avro_schema import PLATFORM_SCHEMAS, SchemaBook, load_book, parse, platform_book
from bus.avro_validation import validate
from bus.errors import ManifestError
from bus.events import CloudEvent
from bus.notifications import normalise
from workers.outcome import Failure, error_event, result_event

NOTIFICATIONS = Path(__file__).parent.parent / "fixtures" / "notifications"
ORDER: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [{"name": "id", "type": "string"}, {"name": "total", "type": "double"}],
}


def roundtrip(event: CloudEvent) -> None:
    """The event's data validates against its platform schema and survives Avro unchanged."""
    schema = platform_book().for_type(event.type)
    assert schema is not None, event.type
    validate(schema, event.data)
    assert decode(schema, encode(schema, event.data), max_bytes=1 << 20, max_items=1000) == event.data


@pytest.mark.parametrize(
    "name", ["s3_put.json", "minio_webhook_put.json", "minio_kafka_put.json", "oss_put.json"]
)
def test_object_events_of_every_provider_fit_the_object_schema(name: str) -> None:
    """bus.notifications' data for each provider's golden notification validates and round-trips."""
    provider = name.split("_", 1)[0]
    events = normalise(provider, json.loads((NOTIFICATIONS / name).read_text(encoding="utf-8")))
    assert events
    for event in events:
        assert event.type.startswith("bus.object.")
        roundtrip(event)


def test_a_removal_without_size_or_etag_fits_the_object_schema() -> None:
    """Removals carry no size, etag or version: the nullable fields take null."""
    body = json.loads((NOTIFICATIONS / "s3_put.json").read_text(encoding="utf-8"))
    record = body["Records"][0]
    record["eventName"] = "ObjectRemoved:Delete"
    for member in ("size", "eTag", "versionId"):
        del record["s3"]["object"][member]
    (event,) = normalise("s3", body)
    assert event.type == "bus.object.removed"
    assert event.data["size"] is None
    roundtrip(event)


def cause() -> CloudEvent:
    return CloudEvent.create(
        id="e-1", source="/orders", type="order.placed", subject="o-1", data={"items": [1, 2.5, None]}
    )


@pytest.mark.parametrize(
    "value", [{"thumbnail": "s3://b/k.png", "sizes": [64, 128]}, "done", 42, None, [1, {}]]
)
def test_function_results_fit_the_result_schema(value: Any) -> None:
    """Any JSON value a handler returns fits bus.function.result (a JSON-typed string)."""
    event = result_event(
        prefix="bus", function="thumbnail", cause=cause(), value=value, time="2026-01-31T09:30:00Z"
    )
    roundtrip(event)


@pytest.mark.parametrize("embed", [True, False])
def test_function_errors_fit_the_error_schema(embed: bool) -> None:
    """workers.outcome's error record, with and without the failed event's data, fits bus.function.error."""
    failure = Failure(
        error_type="ValueError",
        message="bad size",
        traceback="Traceback (most recent call last): ...",
        attempts=3,
        first_attempt_time="2026-01-31T09:30:00Z",
        last_attempt_time="2026-01-31T09:31:00Z",
        topic="bus.fn.thumbnail",
        partition=2,
        offset=41,
    )
    event = error_event(
        prefix="bus",
        function="thumbnail",
        cause=cause(),
        failure=failure,
        time="2026-01-31T09:31:00Z",
        embed_data=embed,
    )
    roundtrip(event)


def test_a_timer_payload_is_any_json_value() -> None:
    """bus.timer.fired carries the schedule's payload as JSON; a missing payload defaults to null."""
    schema = platform_book().for_type("bus.timer.fired")
    assert schema is not None
    data = {
        "schedule": "nightly-report",
        "scheduled_time": "2026-01-31T02:00:00+01:00",
        "fired_time": "2026-01-31T01:00:00.004Z",
        "payload": {"kind": "daily", "limits": [1, 2]},
    }
    assert decode(schema, encode(schema, data), max_bytes=4096, max_items=10) == data
    bare = {key: value for key, value in data.items() if key != "payload"}
    assert decode(schema, encode(schema, bare), max_bytes=4096, max_items=10) == {**bare, "payload": None}


def test_every_platform_schema_file_is_in_the_book() -> None:
    """Each schemas/*.avsc is a platform type's schema, and each platform type has one."""
    folder = Path(__file__).parent.parent.parent / "schemas"
    assert sorted(p.name for p in folder.glob("*.avsc")) == sorted(PLATFORM_SCHEMAS.values())
    book = platform_book()
    for event_type in ("bus.object.created", "bus.object.removed", "bus.object.restored", "bus.timer.fired"):
        assert book.for_type(event_type) is not None
    assert book.for_type("order.placed") is None


def test_the_id_is_the_avro_spec_fingerprint_of_the_canonical_form() -> None:
    """The schema id equals the `avro` package's CRC-64-AVRO fingerprint, whitespace and docs aside."""
    schema = parse(json.dumps(ORDER))
    reference = avro.schema.parse(json.dumps(ORDER)).fingerprint("CRC-64-AVRO")  # little-endian bytes
    assert schema.fingerprint == f"{int.from_bytes(reference, 'little'):016x}"
    assert schema.canonical == (
        '{"name":"shop.Order","type":"record",'
        '"fields":[{"name":"id","type":"string"},{"name":"total","type":"double"}]}'
    )
    spaced = parse(json.dumps({**ORDER, "doc": "an order"}, indent=4))
    assert spaced.fingerprint == schema.fingerprint


def test_the_avro_spec_test_vector_for_int() -> None:
    """Ids are the fingerprints of the Avro spec's test data (schema-tests.txt cases 000 and 004)."""
    assert parse('"int"').fingerprint == f"{8247732601305521295:016x}" == "7275d51a3f395c8f"
    assert parse('"null"').fingerprint == f"{7195948357588979594:016x}"


def test_the_manifest_schemas_join_the_platform_book(tmp_path: Path) -> None:
    """`schemas: {type: path}` paths are read relative to the manifest's folder."""
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "order.avsc").write_text(json.dumps(ORDER))
    book = load_book({"order.placed": "schemas/order.avsc"}, tmp_path)
    order = book.for_type("order.placed")
    assert order is not None
    assert book.by_id(order.fingerprint) is order
    assert book.for_type("bus.object.created") is not None


def test_a_replaced_schema_stays_findable_by_id() -> None:
    """Consumers still decode events written with the schema a new version replaced."""
    v1 = parse(json.dumps(ORDER))
    v2 = parse(
        json.dumps({**ORDER, "fields": [*ORDER["fields"], {"name": "note", "type": "string", "default": ""}]})
    )
    book = SchemaBook().with_types({"order.placed": v1}).with_types({"order.placed": v2})
    assert book.for_type("order.placed") is v2
    assert book.by_id(v1.fingerprint) is v1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ('{"type": "record", "name": "X"}', "is not a valid Avro schema"),
        ('{"type": "strin"}', "is not a valid Avro schema"),
        ('{"type": "int", "logicalType": "json"}', 'needs "type": "string"'),
        ('["null", {"type": "string", "logicalType": "json"}]', "cannot be a union branch"),
    ],
)
def test_loading_errors_name_the_manifest_entry(tmp_path: Path, content: str | None, reason: str) -> None:
    """A missing file, bad JSON or bad Avro is a ManifestError at `schemas.<type>` saying which."""
    if content is not None:
        (tmp_path / "order.avsc").write_text(content)
    with pytest.raises(ManifestError) as caught:
        load_book({"order.placed": "order.avsc"}, tmp_path)
    assert caught.value.path == "schemas.order.placed"
    assert reason in caught.value.reason


def test_user_schemas_cannot_take_platform_types(tmp_path: Path) -> None:
    """bus.* types belong to the platform: a manifest cannot replace their schemas."""
    (tmp_path / "order.avsc").write_text(json.dumps(ORDER))
    with pytest.raises(ManifestError) as caught:
        load_book({"bus.object.created": "order.avsc"}, tmp_path)
    assert caught.value.path == "schemas.bus.object.created"


JSON_TEXT: dict[str, Any] = {"type": "string", "logicalType": "json"}
INNER: dict[str, Any] = {
    "type": "record",
    "name": "Inner",
    "fields": [{"name": "b", "type": "int"}, {"name": "c", "type": JSON_TEXT, "default": "null"}],
}


def with_field(field_type: Any, default: Any) -> dict[str, Any]:
    """A record with one field `a` of `field_type` defaulting to `default`."""
    return {"type": "record", "name": "R", "fields": [{"name": "a", "type": field_type, "default": default}]}


@pytest.mark.parametrize(
    ("field_type", "default", "reason"),
    [
        (["null", "string"], "x", 'the union\'s first type, "null"'),
        (["string", "null"], None, 'the union\'s first type, "string"'),
        (["null", INNER], {"b": 1}, 'the union\'s first type, "null"'),
        (JSON_TEXT, "notjson", "must be JSON text"),
        (JSON_TEXT, {"k": 1}, "must be JSON text"),
        ({"type": "array", "items": JSON_TEXT}, ["{"], "[0]: must be JSON text"),
        (INNER, {"b": 1, "c": "nope"}, ".c: must be JSON text"),
        (INNER, {}, ".b: is missing"),
        ("double", "1.5", "expected a double"),
        ("int", True, "expected an int"),
        ("int", 2**31, "expected an int"),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, "B", "expected one of A"),
        ({"type": "fixed", "name": "F", "size": 2}, "abc", "expected 2 bytes"),
    ],
)
def test_a_default_that_does_not_fit_its_field_is_refused_at_load(
    tmp_path: Path, field_type: Any, default: Any, reason: str
) -> None:
    """fastavro checks defaults loosely: bus refuses, naming `schemas.<type>` and the field, a union
    default that is not of the union's first type (Avro spec), a json default that is not JSON text,
    and any other default that is not a value of its field's type."""
    (tmp_path / "r.avsc").write_text(json.dumps(with_field(field_type, default)))
    with pytest.raises(ManifestError) as caught:
        load_book({"order.placed": "r.avsc"}, tmp_path)
    assert caught.value.path == "schemas.order.placed"
    assert caught.value.reason.startswith("field a"), caught.value.reason
    assert reason in caught.value.reason, caught.value.reason


def test_the_union_default_message_says_how_to_fix_it() -> None:
    """The message shows the default and says to put its type first or change it."""
    with pytest.raises(ManifestError) as caught:
        parse(with_field(["null", "string"], "x"), where="schemas.order.placed")
    assert str(caught.value) == (
        'schemas.order.placed: field a: the default "x" is not a value of the union\'s first type, '
        '"null": Avro reads a union\'s default as its first type; '
        'put the default\'s type first (e.g. ["string", "null"]) or change the default'
    )


@pytest.mark.parametrize(
    ("field_type", "default"),
    [
        (["null", "string"], None),
        (["string", "null"], "x"),
        ([INNER, "null"], {"b": 1}),
        (JSON_TEXT, "null"),
        (JSON_TEXT, '{"k": [1, 2]}'),
        ({"type": "array", "items": JSON_TEXT}, ["1", '"two"']),
        ({"type": "map", "values": ["null", "long"]}, {"x": None}),
        ("double", 1),
        ("bytes", "\u00ff\u0000"),
        ({"type": "fixed", "name": "F", "size": 2}, "ab"),
    ],
)
def test_defaults_that_fit_their_field_load(field_type: Any, default: Any) -> None:
    """Defaults of the field's type (a union's of its first type) load, nested ones included."""
    parse(with_field(field_type, default))


def test_a_registered_schema_with_a_refused_default_still_reads() -> None:
    """Schemas read back from the schemas topic or a registry skip the default check: readers need
    them to decode what they wrote, even if an older bus let a wrong default in."""
    schema = parse(with_field(["null", "string"], "x"), check_defaults=False)
    assert schema.parsed["fields"][0]["default"] == "x"

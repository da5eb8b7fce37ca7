"""The CloudEvents Kafka protocol binding: records to events and back (bus.kafka_binding)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bus import kafka_binding
from bus.errors import InvalidEvent
from bus.events import CloudEvent, to_json_dict
from bus.kafka_binding import (
    STRUCTURED_CONTENT_TYPE,
    Record,
    deciding_headers,
    from_record,
    header,
    record_size,
    routable_headers,
    to_record,
)


def make(**overrides: Any) -> CloudEvent:
    """A valid event with `overrides` applied."""
    base: dict[str, Any] = {"id": "evt-1", "source": "/orders", "type": "order.placed"}
    return CloudEvent.create(**{**base, **overrides})


def decode(record: Record) -> CloudEvent:
    """Decode a record produced by to_record."""
    return from_record(record.key, record.value, record.headers)


BINARY_HEADERS: list[tuple[str, bytes]] = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"evt-1"),
    ("ce_source", b"/orders"),
    ("ce_type", b"order.placed"),
]
"""The minimal headers of a binary-mode CloudEvent record."""


def test_binary_mode_maps_attributes_to_ce_headers_and_data_to_the_value() -> None:
    """Binary mode writes every attribute as a ce_ header, datacontenttype as content-type."""
    event = make(
        time="2026-01-31T09:30:00Z",
        subject="orders/42",
        dataschema="https://example.com/order.json",
        datacontenttype="application/json",
        extensions={"tags": "prod,eu", "partitionkey": "customer-7"},
        data={"total": 12.5},
    )
    record = to_record(event)
    assert dict(record.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"evt-1",
        "ce_source": b"/orders",
        "ce_type": b"order.placed",
        "ce_time": b"2026-01-31T09:30:00Z",
        "ce_subject": b"orders/42",
        "ce_dataschema": b"https://example.com/order.json",
        "ce_tags": b"prod,eu",
        "ce_partitionkey": b"customer-7",
        "content-type": b"application/json",
    }
    assert len(record.headers) == len(dict(record.headers)), "no header is written twice"
    assert orjson.loads(record.value or b"") == {"total": 12.5}


def test_binary_mode_never_writes_a_ce_datacontenttype_header() -> None:
    """datacontenttype travels only in the content-type header, as the Kafka binding says."""
    record = to_record(make(datacontenttype="text/plain", data=b"hi"))
    assert header(record.headers, "ce_datacontenttype") is None
    assert header(record.headers, "content-type") == b"text/plain"
    assert record.value == b"hi"


def test_binary_mode_labels_json_data_without_a_content_type_as_json() -> None:
    """JSON data with no datacontenttype gets content-type application/json, its implied type."""
    record = to_record(make(data=[1, 2]))
    assert header(record.headers, "content-type") == b"application/json"
    assert record.value == b"[1,2]"


def test_binary_mode_without_data_has_no_value_and_no_content_type() -> None:
    """An event without data becomes a record with a null value and no content-type header."""
    record = to_record(make())
    assert record.value is None
    assert header(record.headers, "content-type") is None


@pytest.mark.parametrize(
    ("subject", "extensions", "key"),
    [
        ("orders/42", {"partitionkey": "customer-7"}, b"customer-7"),
        ("orders/42", {}, b"orders/42"),
        (None, {"partitionkey": "customer-7"}, b"customer-7"),
        (None, {}, None),
        ("\u00fcber", {}, "\u00fcber".encode()),
    ],
)
@pytest.mark.parametrize("structured", [False, True])
def test_record_key_is_partitionkey_then_subject_then_none(
    subject: str | None, extensions: dict[str, Any], key: bytes | None, structured: bool
) -> None:
    """The record key is the UTF-8 partitionkey extension, else subject, else none, in both modes."""
    assert to_record(make(subject=subject, extensions=extensions), structured=structured).key == key


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (make(datacontenttype="application/json", data={"a": [1, None]}), None),
        (make(data={"a": 1}), make(datacontenttype="application/json", data={"a": 1})),
        (make(datacontenttype="application/json", data="a JSON string"), None),
        (make(datacontenttype="application/octet-stream", data=b"\x00\xff\x10"), None),
        (make(datacontenttype="text/plain; charset=utf-8", data="caf\u00e9".encode()), None),
        (make(), None),
        (
            make(
                time="2026-01-31T09:30:00.250Z",
                subject="caf\u00e9/\u20ac",
                dataschema="urn:example:order",
                datacontenttype="application/json",
                extensions={"tags": "prod", "partitionkey": "k"},
                data=None,
            ),
            None,
        ),
    ],
    ids=["json", "json-implied-type", "json-string", "bytes", "text", "no-data", "all-attributes"],
)
def test_binary_mode_round_trips(event: CloudEvent, expected: CloudEvent | None) -> None:
    """from_record(to_record(e)) gives e back (implied application/json becomes explicit)."""
    assert decode(to_record(event)) == (expected or event)


def test_binary_mode_brings_integer_and_boolean_extensions_back_as_strings() -> None:
    """Headers carry text, so int and bool extensions come back as their canonical strings."""
    event = make(extensions={"count": 5, "negative": -3, "flag": True, "off": False, "name": "x"})
    back = decode(to_record(event))
    assert back.extensions == {"count": "5", "negative": "-3", "flag": "true", "off": "false", "name": "x"}


@pytest.mark.parametrize(
    "event",
    [
        make(extensions={"count": 5, "flag": True}, data={"a": 1}),
        make(datacontenttype="application/octet-stream", data=b"\x00\xff"),
        make(subject="s"),
    ],
)
def test_structured_mode_round_trips_with_extension_types_intact(event: CloudEvent) -> None:
    """Structured mode carries the JSON format in the value, so even extension types survive."""
    record = to_record(event, structured=True)
    assert record.headers == (("content-type", STRUCTURED_CONTENT_TYPE.encode()),)
    assert orjson.loads(record.value or b"") == to_json_dict(event)
    assert decode(record) == event


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/cloudevents+json",
        b"application/cloudevents+json; charset=UTF-8",
        b"Application/CloudEvents+JSON",
    ],
)
def test_structured_mode_is_recognised_by_content_type(content_type: bytes) -> None:
    """A record whose content-type is application/cloudevents+json is decoded from its value."""
    value = orjson.dumps({"specversion": "1.0", "id": "s-1", "source": "/s", "type": "t", "data": {"a": 1}})
    event = from_record(None, value, [("content-type", content_type)])
    assert (event.id, event.data) == ("s-1", {"a": 1})


def test_structured_mode_ignores_ce_headers() -> None:
    """In structured mode the value is the event; stray ce_ headers do not override it."""
    value = orjson.dumps({"specversion": "1.0", "id": "from-value", "source": "/s", "type": "t"})
    headers = [("ce_id", b"from-header"), ("content-type", STRUCTURED_CONTENT_TYPE.encode())]
    assert from_record(None, value, headers).id == "from-value"


def test_structured_mode_refuses_an_invalid_json_value_naming_the_value() -> None:
    """A structured record whose value is not JSON is refused naming the value."""
    with pytest.raises(InvalidEvent) as caught:
        from_record(None, b"{oops", [("content-type", STRUCTURED_CONTENT_TYPE.encode())])
    assert caught.value.field == "value"


@pytest.mark.parametrize("headers", [None, [], [("content-type", b"application/json")], BINARY_HEADERS[1:]])
def test_record_without_ce_specversion_is_not_a_cloudevent(headers: list[tuple[str, bytes]] | None) -> None:
    """A binary record without ce_specversion is refused naming that header."""
    with pytest.raises(InvalidEvent) as caught:
        from_record(None, b"{}", headers)
    assert caught.value.field == "ce_specversion"


@pytest.mark.parametrize("missing", ["ce_id", "ce_source", "ce_type"])
def test_record_without_a_required_header_is_refused_naming_it(missing: str) -> None:
    """A binary record missing ce_id, ce_source or ce_type is refused naming the header."""
    headers = [(name, value) for name, value in BINARY_HEADERS if name != missing]
    with pytest.raises(InvalidEvent) as caught:
        from_record(None, None, headers)
    assert caught.value.field == missing
    assert "missing" in caught.value.reason


@pytest.mark.parametrize("name", ["ce_subject", "ce_id", "ce_comexampleextension1", "content-type"])
def test_header_that_is_not_utf8_is_refused_naming_it(name: str) -> None:
    """A ce_ or content-type header that is not valid UTF-8 is refused, and the header is named."""
    headers = [*(h for h in BINARY_HEADERS if h[0] != name), (name, b"\xff\xfe")]
    with pytest.raises(InvalidEvent) as caught:
        from_record(None, None, headers)
    assert caught.value.field == name
    assert "UTF-8" in caught.value.reason


def test_binary_record_with_invalid_json_data_is_refused_naming_data() -> None:
    """A JSON content type with a value that is not JSON is refused naming data."""
    with pytest.raises(InvalidEvent) as caught:
        from_record(None, b"{oops", [*BINARY_HEADERS, ("content-type", b"application/json")])
    assert caught.value.field == "data"


def test_binary_record_with_an_invalid_attribute_is_refused_naming_it() -> None:
    """Headers decode into attributes that are validated like any event's."""
    with pytest.raises(InvalidEvent) as caught:
        from_record(None, None, [*BINARY_HEADERS, ("ce_time", b"2026-02-30T00:00:00Z")])
    assert caught.value.field == "time"


def test_headers_without_the_ce_prefix_are_not_attributes() -> None:
    """Headers other than ce_* and content-type (tracing, bus bookkeeping) are ignored."""
    headers = [*BINARY_HEADERS, ("traceparent", b"00-abc-def-01"), ("bus_error_type", b"X")]
    assert decode(Record(None, None, tuple(headers))).extensions == {}


def test_record_key_is_not_read_back_as_an_attribute() -> None:
    """Decoding does not turn the record key into a partitionkey or subject."""
    event = from_record(b"some-key", None, BINARY_HEADERS)
    assert event.subject is None
    assert event.extensions == {}


@pytest.mark.parametrize(
    ("headers", "value"),
    [
        ([("a", b"1"), ("b", b"2"), ("a", b"3")], b"3"),
        ([("b", b"2")], None),
        ([], None),
        (None, None),
    ],
)
def test_header_returns_the_last_value_of_a_name(
    headers: list[tuple[str, bytes]] | None, value: bytes | None
) -> None:
    """header() finds the last occurrence of a header, or None when there is none."""
    assert header(headers, "a") == value


def test_routable_headers_gives_the_headers_by_name_and_their_size() -> None:
    """A record with distinct UTF-8 headers and an id, source and type: its headers and their bytes."""
    record = to_record(make(subject="s", data={"a": 1}))
    view = routable_headers(record.headers)
    assert view is not None
    by_name, size = view
    assert by_name == dict(record.headers)
    assert len(record.key or b"") + len(record.value or b"") + size == record_size(record)


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [*BINARY_HEADERS, ("ce_type", b"again")],
        [*BINARY_HEADERS, ("trace", b"\xc3")],
        [*BINARY_HEADERS, ("ce_note", None)],
        [(name, b"" if name == "ce_id" else value) for name, value in BINARY_HEADERS],
        [(name, value) for name, value in BINARY_HEADERS if name != "ce_source"],
    ],
)
def test_routable_headers_leaves_unusual_records_to_the_full_decoding(headers: Any) -> None:
    """Repeated names, text that is not UTF-8, a missing value or a missing id, source or type: None."""
    assert routable_headers(headers) is None


def test_a_multibyte_character_is_not_taken_as_split_between_two_headers() -> None:
    """Each value must be UTF-8 on its own, as attributes_of decodes them one by one."""
    assert routable_headers([*BINARY_HEADERS, ("a", b"\xc3"), ("b", b"\xa9")]) is None
    assert routable_headers([*BINARY_HEADERS, ("a", "é".encode())]) is not None


def test_records_alike_at_the_deciding_headers_decode_alike_there() -> None:
    """The deciding headers of the named members include every header attributes_of's verdict rests on."""
    names = deciding_headers(["type", "datacontenttype"])
    assert names == tuple(sorted(names))
    assert {"ce_type", "ce_datacontenttype", "content-type", "ce_specversion", "ce_data"} <= set(names)
    assert "ce_id" not in names


_TRICKY_HEADERS: list[list[tuple[str, Any]]] = [
    [("ce_specversion", b"1.0"), ("ce_id", b"a"), ("ce_source", b"s"), ("ce_type", b"t")],
    [("ce_specversion", b"1.0"), ("ce_id", b"a"), ("ce_id", b"b"), ("ce_source", b"s"), ("ce_type", b"t")],
    [("ce_specversion", b"1.0"), ("ce_id", b"\xff"), ("ce_source", b"s"), ("ce_type", b"t")],
    [("ce_specversion", b"1.0"), ("ce_id", b"\xff"), ("ce_id", b"a"), ("ce_source", b"s"), ("ce_type", b"t")],
    [("ce_specversion", b"1.0"), ("ce_id", None), ("ce_source", b"s"), ("ce_type", b"t")],
    [("ce_specversion", b"1.0"), ("ce_source", b"s"), ("ce_type", b"t")],
    [("ce_id", b"a"), ("ce_source", b"s"), ("ce_type", b"t")],
    [
        ("content-type", b"\xfe"),
        ("ce_specversion", b"1.0"),
        ("ce_id", b"a"),
        ("ce_source", b"s"),
        ("ce_type", b"t"),
    ],
    [("content-type", b"application/cloudevents+json"), ("ce_id", b"\xff")],
    [("ce_specversion", b"1.0"), ("ce_id", b"a"), ("ce_source", b"s"), ("ce_type", b"t"), ("ce_Bad", b"x")],
    [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"a"),
        ("ce_source", b"s"),
        ("ce_type", b"t"),
        ("content-type", b"text/plain"),
        ("content-type", b"application/json"),
        ("x-other", b"\xff"),
    ],
]


@pytest.mark.parametrize("headers", _TRICKY_HEADERS)
def test_the_one_pass_header_reading_decides_as_the_long_way(
    headers: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duplicates, bad UTF-8, missing values and structured records decode (or fail) the same both ways."""
    value = orjson.dumps({"specversion": "1.0", "id": "x", "source": "s", "type": "t", "data": {"n": 1}})

    def decoded() -> Any:
        try:
            return from_record(b"k", value, headers)
        except InvalidEvent as exc:
            return ("invalid", exc.field, str(exc))

    fast = decoded()
    monkeypatch.setattr(kafka_binding, "_binary_fast", lambda headers: None)
    assert decoded() == fast

"""The CloudEvents 1.0 model: validation, the JSON event format and partition keys (bus.events)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from bus.errors import InvalidEvent
from bus.events import (
    MAX_JSON_DEPTH,
    CloudEvent,
    data_from_bytes,
    data_to_bytes,
    from_json_dict,
    is_json_content_type,
    parse_json,
    to_json_dict,
    validate_time,
)

REQUIRED: dict[str, str] = {"id": "A234-1234-1234", "source": "/mycontext", "type": "com.example.someevent"}
"""The three required attributes bus cannot default (specversion defaults to 1.0)."""


def make(**overrides: Any) -> CloudEvent:
    """A valid event with `overrides` applied, built through the validating constructor."""
    return CloudEvent.create(**{**REQUIRED, **overrides})


def doc(**members: Any) -> dict[str, Any]:
    """A JSON-format document with the required attributes and `members`."""
    return {"specversion": "1.0", **REQUIRED, **members}


# --- create: required attributes -------------------------------------------------------------


def test_create_defaults_specversion_and_leaves_optionals_unset() -> None:
    """An event built from id, source and type is CloudEvents 1.0 with no optional attributes."""
    event = make()
    assert event.specversion == "1.0"
    assert (event.time, event.subject, event.datacontenttype, event.dataschema) == (None,) * 4
    assert event.extensions == {}
    assert event.data is None


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
@pytest.mark.parametrize("value", ["", 123, None, b"bytes", ["list"]])
def test_create_refuses_required_attribute_that_is_not_a_non_empty_string(name: str, value: object) -> None:
    """Every required attribute must be a non-empty string; the error names the attribute."""
    with pytest.raises(InvalidEvent) as caught:
        make(**{name: value})
    assert caught.value.field == name
    assert "non-empty string" in caught.value.reason


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
def test_json_format_refuses_missing_required_attribute(name: str) -> None:
    """A JSON-format event without a required attribute is refused naming that attribute."""
    document = doc()
    del document[name]
    with pytest.raises(InvalidEvent) as caught:
        from_json_dict(document)
    assert caught.value.field == name
    assert "missing" in caught.value.reason


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
def test_json_format_treats_null_required_attribute_as_missing(name: str) -> None:
    """A required attribute given as JSON null counts as missing, as the JSON format says."""
    with pytest.raises(InvalidEvent) as caught:
        from_json_dict(doc(**{name: None}))
    assert caught.value.field == name
    assert "missing" in caught.value.reason


@pytest.mark.parametrize("version", ["0.3", "1", "1.0.2", "2.0", "1.0 "])
def test_create_accepts_only_specversion_1_0(version: str) -> None:
    """Any specversion but "1.0" is refused, and the message says which version is supported."""
    with pytest.raises(InvalidEvent) as caught:
        make(specversion=version)
    assert caught.value.field == "specversion"
    assert "1.0" in caught.value.reason
    assert repr(version) in caught.value.reason


# --- create: optional attributes -------------------------------------------------------------


@pytest.mark.parametrize("name", ["subject", "datacontenttype", "dataschema", "time"])
@pytest.mark.parametrize("value", ["", 5, True, b"x"])
def test_create_refuses_optional_attribute_that_is_not_a_non_empty_string(name: str, value: object) -> None:
    """An optional attribute, when present, must be a non-empty string; the error names it."""
    with pytest.raises(InvalidEvent) as caught:
        make(**{name: value})
    assert caught.value.field == name


@pytest.mark.parametrize(
    "time",
    [
        "2018-04-05T17:31:00Z",
        "2018-04-05t17:31:00z",
        "1985-04-12T23:20:50.52Z",
        "1996-12-19T16:39:57-08:00",
        "2026-01-31T09:30:00.123456789+02:00",
        "2024-02-29T00:00:00+05:30",
        "2026-12-31T23:59:59Z",
    ],
)
def test_create_accepts_rfc3339_time(time: str) -> None:
    """RFC 3339 timestamps are accepted, including lower-case t and z and fractions of any length."""
    assert make(time=time).time == time


@pytest.mark.parametrize(
    "time",
    [
        "2026-02-30T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-01-31T24:00:00Z",
        "2026-01-31T09:61:00Z",
        "2026-01-31T09:30:00",
        "2026-01-31",
        "2026-01-31 09:30:00Z",
        "2026-01-31T09:30:00+0100",
        "2026-01-31T09:30:00Z\n",
        "2026-01-31T09:30Z",
        "yesterday",
    ],
)
def test_create_refuses_time_that_is_not_rfc3339(time: str) -> None:
    """Impossible dates (Feb 30), missing offsets, other ISO 8601 shapes and stray text are refused."""
    with pytest.raises(InvalidEvent) as caught:
        make(time=time)
    assert caught.value.field == "time"
    assert repr(time) in caught.value.reason


def test_validate_time_names_the_field_it_was_given() -> None:
    """validate_time reports the caller's field name, so other timestamp fields can reuse it."""
    with pytest.raises(InvalidEvent) as caught:
        validate_time("data.event_time", "2026-02-30T00:00:00Z")
    assert caught.value.field == "data.event_time"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain; charset=utf-8",
        "text/xml",
        "application/cloudevents+json",
        "application/vnd.apache.thrift.binary",
        "image/png",
    ],
)
def test_create_accepts_media_type_as_datacontenttype(content_type: str) -> None:
    """A datacontenttype of the form type/subtype, optionally with parameters, is accepted."""
    assert make(datacontenttype=content_type).datacontenttype == content_type


@pytest.mark.parametrize(
    "content_type",
    [
        "json",
        "application/",
        "/json",
        "application json",
        "application/json\n",
        "text/plain; charset=utf-8\r\nx-injected: 1",
        "application/jsön",
    ],
)
def test_create_refuses_datacontenttype_that_is_not_a_media_type(content_type: str) -> None:
    """A datacontenttype that is not a media type (or smuggles a line break) is refused."""
    with pytest.raises(InvalidEvent) as caught:
        make(datacontenttype=content_type)
    assert caught.value.field == "datacontenttype"


@pytest.mark.parametrize(
    "schema", ["https://example.com/schemas/order.json", "urn:example:order:v1", "s3://bucket/schema.avsc"]
)
def test_create_accepts_absolute_uri_as_dataschema(schema: str) -> None:
    """A dataschema with a URI scheme is accepted."""
    assert make(dataschema=schema).dataschema == schema


@pytest.mark.parametrize("schema", ["/schemas/order.json", "order.json", "//example.com/order.json"])
def test_create_refuses_relative_dataschema(schema: str) -> None:
    """dataschema must be an absolute URI; relative references are refused."""
    with pytest.raises(InvalidEvent) as caught:
        make(dataschema=schema)
    assert caught.value.field == "dataschema"
    assert "absolute URI" in caught.value.reason


# --- create: extensions ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["comexampleextension1", "tags", "partitionkey", "a", "x" * 64, "2fa"])
def test_create_accepts_lowercase_alphanumeric_extension_names(name: str) -> None:
    """Extension names of lower-case ASCII letters and digits are accepted."""
    assert make(extensions={name: "v"}).extensions == {name: "v"}


@pytest.mark.parametrize(
    "name", ["Upper", "with-dash", "with_underscore", "with.dot", "", "caf\u00e9", "abc\n", "x" * 65]
)
def test_create_refuses_extension_names_outside_lowercase_alphanumerics(name: str) -> None:
    """Upper case, punctuation, non-ASCII, empty, over-long and newline-suffixed names are refused."""
    with pytest.raises(InvalidEvent) as caught:
        make(extensions={name: "v"})
    assert caught.value.field == name
    assert "lower-case letters and digits" in caught.value.reason


@pytest.mark.parametrize(
    "name",
    [
        "id",
        "source",
        "type",
        "specversion",
        "time",
        "subject",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
    ],
)
def test_create_refuses_reserved_names_as_extensions(name: str) -> None:
    """Context attribute names and the JSON format's data members cannot be extensions."""
    with pytest.raises(InvalidEvent) as caught:
        make(extensions={name: "v"})
    assert caught.value.field == name
    assert "reserved" in caught.value.reason


@pytest.mark.parametrize("value", ["text", "", 5, -5, 0, True, False, 2**31 - 1, -(2**31)])
def test_create_accepts_string_integer_and_boolean_extension_values(value: object) -> None:
    """Extension values may be strings, 32-bit integers or booleans, and keep their type."""
    event = make(extensions={"ext": value})
    assert event.extensions["ext"] == value
    assert type(event.extensions["ext"]) is type(value)


@pytest.mark.parametrize("value", [1.5, None, ["a"], {"a": 1}, b"bytes", 2**31, -(2**31) - 1])
def test_create_refuses_other_extension_values(value: object) -> None:
    """Floats, null, containers, bytes and integers outside the 32-bit range are refused."""
    with pytest.raises(InvalidEvent) as caught:
        make(extensions={"ext": value})
    assert caught.value.field == "ext"


def test_with_extensions_returns_a_copy_with_the_extensions_merged() -> None:
    """with_extensions adds or replaces extensions on a copy and leaves the original untouched."""
    original = make(extensions={"tags": "prod", "region": "eu"})
    changed = original.with_extensions(tags="test", attempt=2)
    assert changed.extensions == {"tags": "test", "region": "eu", "attempt": 2}
    assert original.extensions == {"tags": "prod", "region": "eu"}


# --- data and content types ------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "application/json", "text/json; charset=utf-8"])
def test_create_refuses_bytes_data_with_a_json_content_type(content_type: str | None) -> None:
    """JSON data is held decoded, so bytes data needs a non-JSON datacontenttype."""
    with pytest.raises(InvalidEvent) as caught:
        make(datacontenttype=content_type, data=b"{}")
    assert caught.value.field == "data"


def test_create_accepts_bytes_data_with_a_binary_content_type() -> None:
    """Bytes data with a non-JSON datacontenttype is kept as bytes."""
    event = make(datacontenttype="application/octet-stream", data=b"\x00\xff")
    assert event.data == b"\x00\xff"


@pytest.mark.parametrize(
    ("content_type", "is_json"),
    [
        (None, True),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("APPLICATION/JSON", True),
        ("text/json", True),
        ("application/cloudevents+json", True),
        ("application/vnd.api+json", True),
        ("text/plain", False),
        ("application/xml", False),
        ("application/jsonx", False),
        ("application/json-seq", False),
        ("application/octet-stream", False),
    ],
)
def test_is_json_content_type_recognises_json_media_types(content_type: str | None, is_json: bool) -> None:
    """application/json, text/json and */*+json are JSON, parameters and case ignored; absent is JSON."""
    assert is_json_content_type(content_type) is is_json


@pytest.mark.parametrize(
    ("content_type", "body", "data"),
    [
        ("application/json", b'{"a": [1, 2.5, null]}', {"a": [1, 2.5, None]}),
        (None, b'"text"', "text"),
        ("application/json", b"", None),
        ("application/json", None, None),
        ("text/plain", b"hello", b"hello"),
        ("text/plain", b"", b""),
        ("application/octet-stream", b"\xff\x00", b"\xff\x00"),
    ],
)
def test_data_from_bytes_decodes_json_and_keeps_other_bytes(
    content_type: str | None, body: bytes | None, data: object
) -> None:
    """A binary-mode body is parsed when its content type is JSON and kept as bytes otherwise."""
    assert data_from_bytes(content_type, body) == data


def test_data_from_bytes_refuses_invalid_json_naming_data() -> None:
    """A JSON content type with a body that is not JSON is refused naming the data."""
    with pytest.raises(InvalidEvent) as caught:
        data_from_bytes("application/json", b"{not json")
    assert caught.value.field == "data"


@pytest.mark.parametrize(
    ("event", "body"),
    [
        (make(), None),
        (make(data={"a": 1}), b'{"a":1}'),
        (make(data="text"), b'"text"'),
        (make(datacontenttype="image/png", data=b"\x89PNG"), b"\x89PNG"),
    ],
)
def test_data_to_bytes_encodes_json_compactly_and_passes_bytes_through(
    event: CloudEvent, body: bytes | None
) -> None:
    """Data becomes compact JSON, bytes pass through unchanged, and no data stays None."""
    assert data_to_bytes(event) == body


# --- the JSON event format -------------------------------------------------------------------


def test_to_json_dict_writes_the_json_format() -> None:
    """to_json_dict puts attributes and extensions at the top level and JSON data under data."""
    event = make(
        time="2018-04-05T17:31:00Z",
        subject="123",
        datacontenttype="application/json",
        dataschema="https://example.com/schema.json",
        extensions={"comexampleextension1": "value", "comexampleothervalue": 5, "flag": True},
        data={"appinfoA": "abc"},
    )
    assert to_json_dict(event) == {
        "specversion": "1.0",
        "id": "A234-1234-1234",
        "source": "/mycontext",
        "type": "com.example.someevent",
        "time": "2018-04-05T17:31:00Z",
        "subject": "123",
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/schema.json",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "flag": True,
        "data": {"appinfoA": "abc"},
    }


def test_to_json_dict_writes_bytes_as_data_base64() -> None:
    """Binary data is written as data_base64, never as data."""
    out = to_json_dict(make(datacontenttype="application/octet-stream", data=b"\x00\x01\xfe\xff"))
    assert out["data_base64"] == base64.b64encode(b"\x00\x01\xfe\xff").decode()
    assert "data" not in out


def test_to_json_dict_omits_absent_data() -> None:
    """An event without data has neither data nor data_base64."""
    out = to_json_dict(make())
    assert "data" not in out
    assert "data_base64" not in out


@pytest.mark.parametrize(
    "event",
    [
        make(),
        make(data={"nested": {"list": [1, 2.5, "three", None, True]}}),
        make(datacontenttype="application/json", data="just a string"),
        make(data=0),
        make(data=False),
        make(datacontenttype="application/octet-stream", data=b"\x00\xff binary"),
        make(datacontenttype="text/plain", data="caf\u00e9".encode()),
        make(
            time="2026-01-31T09:30:00.5+01:00",
            subject="orders/42",
            dataschema="urn:example:order",
            extensions={"tags": "prod,eu", "attempt": 3, "replayed": False},
            data=[1, 2, 3],
        ),
    ],
    ids=["no-data", "json-object", "json-string", "zero", "false", "bytes", "text-bytes", "everything"],
)
def test_json_format_round_trips(event: CloudEvent) -> None:
    """from_json_dict(to_json_dict(e)) == e, extension types and bytes data included."""
    assert from_json_dict(to_json_dict(event)) == event


def test_json_format_decodes_data_base64_to_bytes() -> None:
    """data_base64 with a binary content type decodes to the original bytes."""
    encoded = base64.b64encode(b"\x00\x01\x02").decode()
    event = from_json_dict(doc(datacontenttype="application/octet-stream", data_base64=encoded))
    assert event.data == b"\x00\x01\x02"


@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_json_format_decodes_base64_carried_json(content_type: str | None) -> None:
    """data_base64 whose content type is JSON (or absent) is decoded into the JSON value it carries."""
    encoded = base64.b64encode(b'{"a": 1}').decode()
    event = from_json_dict(doc(datacontenttype=content_type, data_base64=encoded))
    assert event.data == {"a": 1}


def test_strict_json_format_refuses_duplicate_keys_in_base64_carried_json() -> None:
    """At the edge, JSON in data_base64 is held to the same rules as JSON in data."""
    encoded = base64.b64encode(b'{"a": 1, "a": 2}').decode()
    with pytest.raises(InvalidEvent) as caught:
        from_json_dict(doc(data_base64=encoded), strict=True)
    assert caught.value.field == "data_base64"
    assert "'a' twice" in caught.value.reason


def test_json_format_reads_text_data_as_a_string_and_keeps_its_bytes() -> None:
    """Non-JSON data given as a JSON string (e.g. text/plain) is held as its UTF-8 bytes."""
    event = from_json_dict(doc(datacontenttype="text/plain", data="caf\u00e9"))
    assert event.data == "caf\u00e9".encode()
    assert to_json_dict(event)["data_base64"] == base64.b64encode("caf\u00e9".encode()).decode()


def test_json_format_keeps_a_json_string_as_a_string() -> None:
    """With a JSON content type a string in data is the JSON string itself, never parsed again."""
    event = from_json_dict(doc(datacontenttype="application/json", data='{"not": "parsed"}'))
    assert event.data == '{"not": "parsed"}'


def test_json_format_refuses_non_string_data_for_non_json_content_type() -> None:
    """Non-JSON datacontenttype with data that is not a string is refused naming data."""
    with pytest.raises(InvalidEvent) as caught:
        from_json_dict(doc(datacontenttype="text/plain", data=5))
    assert caught.value.field == "data"


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"data_base64": "!!not base64!!"}, "base64"),
        ({"data_base64": 5}, "base64 string"),
        ({"data": "x", "data_base64": "eA=="}, "not both"),
    ],
)
def test_json_format_refuses_bad_data_base64(members: dict[str, Any], reason: str) -> None:
    """Invalid base64, a non-string data_base64, or data and data_base64 together are refused."""
    with pytest.raises(InvalidEvent) as caught:
        from_json_dict(doc(datacontenttype="application/octet-stream", **members))
    assert caught.value.field == "data_base64"
    assert reason in caught.value.reason


def test_json_format_treats_null_attributes_and_extensions_as_unset() -> None:
    """A null optional attribute or extension is read as absent, as the JSON format requires."""
    event = from_json_dict(doc(subject=None, time=None, unsetextension=None, kept="yes"))
    assert event.subject is None
    assert event.time is None
    assert event.extensions == {"kept": "yes"}


def test_json_format_reads_unknown_members_as_extensions() -> None:
    """Members that are not context attributes or data become extensions with their JSON types."""
    event = from_json_dict(doc(comexampleextension1="value", comexampleothervalue=5, flag=True))
    assert event.extensions == {"comexampleextension1": "value", "comexampleothervalue": 5, "flag": True}


@pytest.mark.parametrize("document", [[], "event", 5, None])
def test_json_format_refuses_a_document_that_is_not_an_object(document: object) -> None:
    """A structured event must be a JSON object; anything else is refused naming the body."""
    with pytest.raises(InvalidEvent) as caught:
        from_json_dict(document)
    assert caught.value.field == "body"


def test_json_format_refuses_an_invalid_extension_naming_it() -> None:
    """A JSON-format event with a badly named extension is refused naming the extension."""
    with pytest.raises(InvalidEvent) as caught:
        from_json_dict(doc(**{"Bad-Name": "x"}))
    assert caught.value.field == "Bad-Name"


# --- parse_json ------------------------------------------------------------------------------


def nested(depth: int, *, container: str = "list") -> str:
    """JSON text of `depth` nested lists (or objects) around the number 1."""
    if container == "list":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("container", ["list", "object"])
def test_parse_json_accepts_nesting_up_to_max_json_depth(container: str) -> None:
    """Exactly MAX_JSON_DEPTH nested arrays or objects are accepted."""
    assert parse_json(nested(MAX_JSON_DEPTH, container=container)) is not None


@pytest.mark.parametrize("container", ["list", "object"])
def test_parse_json_refuses_nesting_deeper_than_max_json_depth(container: str) -> None:
    """One level more than MAX_JSON_DEPTH is refused, naming the field and the limit."""
    with pytest.raises(InvalidEvent) as caught:
        parse_json(nested(MAX_JSON_DEPTH + 1, container=container).encode(), field_name="value")
    assert caught.value.field == "value"
    assert str(MAX_JSON_DEPTH) in caught.value.reason


def test_parse_json_refuses_nesting_beyond_orjsons_own_limit_as_invalid_event() -> None:
    """Nesting deep enough to trip orjson's recursion limit is still an InvalidEvent, not a crash."""
    with pytest.raises(InvalidEvent) as caught:
        parse_json(nested(5000))
    assert caught.value.field == "body"


def test_parse_json_takes_a_custom_depth_limit() -> None:
    """max_depth lowers the limit for callers that want less."""
    assert parse_json("[[1]]", max_depth=2) == [[1]]
    with pytest.raises(InvalidEvent):
        parse_json("[[[1]]]", max_depth=2)


@pytest.mark.parametrize("text", [b"{", b"", b"nope", b"[1,]", b"{'a': 1}", b"\xff"])
@pytest.mark.parametrize("field_name", ["body", "value", "data"])
def test_parse_json_refuses_invalid_json_naming_the_field(text: bytes, field_name: str) -> None:
    """Text that is not JSON is refused with the caller's field name and 'not valid JSON'."""
    with pytest.raises(InvalidEvent) as caught:
        parse_json(text, field_name=field_name)
    assert caught.value.field == field_name
    assert "not valid JSON" in caught.value.reason


def test_parse_json_reads_bytes_and_str() -> None:
    """parse_json accepts JSON as bytes or as str."""
    assert parse_json(b'{"a": 1}') == parse_json('{"a": 1}') == {"a": 1}


# --- partition keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "extensions", "key"),
    [
        ("orders/42", {"partitionkey": "customer-7"}, "customer-7"),
        ("orders/42", {}, "orders/42"),
        (None, {"partitionkey": "customer-7"}, "customer-7"),
        (None, {}, None),
        (None, {"partitionkey": 7}, "7"),
        (None, {"tags": "prod"}, None),
    ],
)
def test_partition_key_is_partitionkey_then_subject_then_none(
    subject: str | None, extensions: dict[str, Any], key: str | None
) -> None:
    """The record key is the partitionkey extension, else the subject, else none (SPEC §2)."""
    assert make(subject=subject, extensions=extensions).partition_key == key


@pytest.mark.parametrize("member", ["time", "datacontenttype"])
@pytest.mark.parametrize("value", [[1], {"a": 1}])
def test_an_attribute_of_the_wrong_type_is_an_invalid_event_not_a_crash(member: str, value: object) -> None:
    """The memoised fast path looks values up only once they are known to be strings."""
    doc = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", member: value}
    with pytest.raises(InvalidEvent):
        from_json_dict(doc)


def test_strict_parsing_refuses_integers_beyond_64_bits_naming_their_path() -> None:
    """orjson would round them to floats; at the edge they are refused, naming where they are."""
    with pytest.raises(InvalidEvent) as caught:
        parse_json(b'{"order_id": 123456789012345678901234567890}', field_name="data", strict=True)
    assert caught.value.field == "data.order_id"
    assert "64-bit" in caught.value.reason
    with pytest.raises(InvalidEvent) as caught:
        parse_json(b'[1, {"a": [2, -9223372036854775809]}]', field_name="data", strict=True)
    assert caught.value.field == "data[1].a[1]"
    with pytest.raises(InvalidEvent) as caught:
        parse_json(b'{"n": 1' + b"0" * 300 + b"}", strict=True)
    assert caught.value.field == "n", "a field of the whole body is named by its path alone"


def test_strict_parsing_keeps_every_64_bit_integer_and_long_digit_strings() -> None:
    """The extremes of signed and unsigned 64 bits, and digits inside strings, are accepted exactly."""
    body = b'{"max": 18446744073709551615, "min": -9223372036854775808, "s": "123456789012345678901234"}'
    assert parse_json(body, strict=True) == {
        "max": 18446744073709551615,
        "min": -9223372036854775808,
        "s": "123456789012345678901234",
    }

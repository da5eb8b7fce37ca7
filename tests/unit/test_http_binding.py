"""The CloudEvents HTTP binding: binary, structured and batch requests (bus.http_binding)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bus.errors import InvalidEvent
from bus.events import CloudEvent, to_json_dict
from bus.http_binding import (
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    from_http,
    to_http_binary,
    to_http_structured,
)

BINARY: dict[str, str] = {
    "ce-specversion": "1.0",
    "ce-id": "evt-1",
    "ce-source": "/orders",
    "ce-type": "order.placed",
}
"""The minimal headers of a binary-mode CloudEvent request."""


def make(**overrides: Any) -> CloudEvent:
    """A valid event with `overrides` applied."""
    base: dict[str, Any] = {"id": "evt-1", "source": "/orders", "type": "order.placed"}
    return CloudEvent.create(**{**base, **overrides})


def json_doc(**members: Any) -> dict[str, Any]:
    """A JSON-format event document."""
    return {"specversion": "1.0", "id": "evt-1", "source": "/orders", "type": "order.placed", **members}


def one(headers: dict[str, str], body: bytes = b"") -> CloudEvent:
    """Decode a request that must hold exactly one event."""
    events = from_http(headers, body)
    assert len(events) == 1
    return events[0]


# --- binary mode -----------------------------------------------------------------------------


def test_binary_mode_reads_ce_headers_and_content_type() -> None:
    """ce-* headers become attributes and extensions, content-type becomes datacontenttype."""
    event = one(
        {
            **BINARY,
            "ce-time": "2026-01-31T09:30:00Z",
            "ce-subject": "orders/42",
            "ce-tags": "prod,eu",
            "content-type": "application/json; charset=utf-8",
            "user-agent": "curl/8",
        },
        b'{"total": 12.5}',
    )
    assert event.id == "evt-1"
    assert event.time == "2026-01-31T09:30:00Z"
    assert event.subject == "orders/42"
    assert event.datacontenttype == "application/json; charset=utf-8"
    assert event.extensions == {"tags": "prod,eu"}
    assert event.data == {"total": 12.5}


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro \u20ac \U0001f600"),
        ("euro%e2%82%ac", "euro\u20ac"),
        ("%41%42C", "ABC"),
        ("100%25%20sure", "100% sure"),
        ("say%20%22hi%22", 'say "hi"'),
        ("a+b", "a+b"),
        ("plain/path:with;punctuation", "plain/path:with;punctuation"),
    ],
)
def test_binary_mode_percent_decodes_header_values(raw: str, decoded: str) -> None:
    """Header values are percent-decoded once; lower-case and needless escapes are accepted."""
    assert one({**BINARY, "ce-subject": raw}).subject == decoded


@pytest.mark.parametrize("raw", ["%C0%A0", "%FF", "%E2%82", "%ED%A0%80"])
def test_binary_mode_refuses_percent_encoded_bytes_that_are_not_utf8(raw: str) -> None:
    """Escapes that decode to invalid UTF-8 (overlong, truncated, surrogates) are refused by name."""
    with pytest.raises(InvalidEvent) as caught:
        from_http({**BINARY, "ce-subject": raw}, b"")
    assert caught.value.field == "ce-subject"
    assert "UTF-8" in caught.value.reason


@pytest.mark.parametrize("raw", ["caf\u00c3\u00a9", "caf\u00e9", "\u20ac"])
def test_binary_mode_refuses_header_values_that_are_not_ascii(raw: str) -> None:
    """Raw UTF-8 in a header (read as latin-1, `cafÃ©`) is refused by name, asking for percent-encoding."""
    with pytest.raises(InvalidEvent) as caught:
        from_http({**BINARY, "ce-subject": raw}, b"")
    assert caught.value.field == "ce-subject"
    assert "percent-encode" in caught.value.reason


def test_binary_mode_without_content_type_reads_the_body_as_json() -> None:
    """No content-type means JSON data, and no datacontenttype is invented."""
    event = one(BINARY, b"[1, 2]")
    assert event.datacontenttype is None
    assert event.data == [1, 2]


def test_binary_mode_with_an_empty_body_has_no_data() -> None:
    """An empty body means no data."""
    assert one({**BINARY, "content-type": "text/plain"}, b"").data is None


def test_binary_mode_keeps_non_json_bodies_as_bytes() -> None:
    """A non-JSON content type keeps the body as bytes."""
    assert one({**BINARY, "content-type": "image/png"}, b"\x89PNG\r\n").data == b"\x89PNG\r\n"


def test_binary_mode_refuses_an_invalid_json_body_naming_data() -> None:
    """A JSON content type with a body that is not JSON is refused naming data."""
    with pytest.raises(InvalidEvent) as caught:
        from_http({**BINARY, "content-type": "application/json"}, b"{oops")
    assert caught.value.field == "data"


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "application/json"}, {k: v for k, v in BINARY.items() if k != "ce-specversion"}],
)
def test_binary_mode_without_ce_specversion_explains_both_modes(headers: dict[str, str]) -> None:
    """A request that is neither structured nor binary is refused, saying how to send one."""
    with pytest.raises(InvalidEvent) as caught:
        from_http(headers, b"{}")
    assert caught.value.field == "ce-specversion"
    assert "ce-* headers" in caught.value.reason
    assert STRUCTURED_CONTENT_TYPE in caught.value.reason


@pytest.mark.parametrize("missing", ["ce-id", "ce-source", "ce-type"])
def test_binary_mode_without_a_required_header_is_refused_naming_it(missing: str) -> None:
    """A binary request missing ce-id, ce-source or ce-type is refused naming the header."""
    headers = {k: v for k, v in BINARY.items() if k != missing}
    with pytest.raises(InvalidEvent) as caught:
        from_http(headers, b"")
    assert caught.value.field == missing


def test_binary_mode_refuses_an_invalid_attribute_naming_it() -> None:
    """Attributes from headers are validated like any event's."""
    with pytest.raises(InvalidEvent) as caught:
        from_http({**BINARY, "ce-specversion": "0.3"}, b"")
    assert caught.value.field == "specversion"


# --- structured mode -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [STRUCTURED_CONTENT_TYPE, "application/cloudevents+json; charset=UTF-8", "Application/CloudEvents+JSON"],
)
def test_structured_mode_reads_the_event_from_the_body(content_type: str) -> None:
    """application/cloudevents+json (any case, any parameters) carries the JSON format in the body."""
    body = orjson.dumps(json_doc(count=5, data={"a": 1}))
    event = one({"content-type": content_type}, body)
    assert event.extensions == {"count": 5}
    assert event.data == {"a": 1}


def test_structured_mode_body_wins_over_ce_headers() -> None:
    """In structured mode ce-* headers are ignored; the body is the event."""
    headers = {
        **BINARY,
        "ce-id": "from-header",
        "ce-subject": "header",
        "content-type": STRUCTURED_CONTENT_TYPE,
    }
    event = one(headers, orjson.dumps(json_doc(id="from-body")))
    assert event.id == "from-body"
    assert event.subject is None


def test_structured_mode_refuses_invalid_json_naming_the_body() -> None:
    """A structured body that is not JSON is refused naming the body."""
    with pytest.raises(InvalidEvent) as caught:
        from_http({"content-type": STRUCTURED_CONTENT_TYPE}, b"{oops")
    assert caught.value.field == "body"


def test_structured_mode_refuses_a_missing_attribute_naming_it() -> None:
    """A structured event without a required attribute is refused naming the attribute."""
    document = json_doc()
    del document["source"]
    with pytest.raises(InvalidEvent) as caught:
        from_http({"content-type": STRUCTURED_CONTENT_TYPE}, orjson.dumps(document))
    assert caught.value.field == "source"


# --- batch mode ------------------------------------------------------------------------------


def test_batch_mode_reads_every_event_in_order() -> None:
    """application/cloudevents-batch+json carries a JSON array of events, decoded in order."""
    body = orjson.dumps([json_doc(id="a"), json_doc(id="b", data=[1]), json_doc(id="c")])
    events = from_http({"content-type": BATCH_CONTENT_TYPE + "; charset=utf-8"}, body)
    assert [event.id for event in events] == ["a", "b", "c"]
    assert events[1].data == [1]


def test_batch_mode_accepts_an_empty_batch() -> None:
    """An empty array is a valid batch of no events."""
    assert from_http({"content-type": BATCH_CONTENT_TYPE}, b"[]") == []


@pytest.mark.parametrize("body", [b"{}", b'"events"', b"5", b"null"])
def test_batch_mode_refuses_a_body_that_is_not_an_array(body: bytes) -> None:
    """A batch must be a JSON array; anything else is refused naming the body."""
    with pytest.raises(InvalidEvent) as caught:
        from_http({"content-type": BATCH_CONTENT_TYPE}, body)
    assert caught.value.field == "body"
    assert "array" in caught.value.reason


@pytest.mark.parametrize(
    ("elements", "field"),
    [
        ([json_doc(id="a"), json_doc(id="")], "[1].id"),
        ([json_doc(id="a"), json_doc(id="b"), json_doc(time="2026-02-30T00:00:00Z")], "[2].time"),
        ([{"specversion": "1.0", "source": "/s", "type": "t"}], "[0].id"),
        ([json_doc(), "not an event"], "[1].body"),
        ([json_doc(Bad="x")], "[0].Bad"),
    ],
)
def test_batch_mode_names_the_index_of_an_invalid_element(elements: list[Any], field: str) -> None:
    """An invalid element fails the whole batch; the field is prefixed with its index."""
    with pytest.raises(InvalidEvent) as caught:
        from_http({"content-type": BATCH_CONTENT_TYPE}, orjson.dumps(elements))
    assert caught.value.field == field


def test_batch_mode_refuses_invalid_json_naming_the_body() -> None:
    """A batch body that is not JSON is refused naming the body."""
    with pytest.raises(InvalidEvent) as caught:
        from_http({"content-type": BATCH_CONTENT_TYPE}, b"[{")
    assert caught.value.field == "body"


# --- encoding --------------------------------------------------------------------------------


def test_to_http_binary_maps_attributes_to_ce_headers() -> None:
    """Binary encoding writes ce-* headers, content-type and the data as the body."""
    event = make(
        time="2026-01-31T09:30:00Z",
        subject="orders/42",
        datacontenttype="application/json",
        extensions={"count": 5, "flag": False},
        data={"a": 1},
    )
    headers, body = to_http_binary(event)
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "evt-1",
        "ce-source": "/orders",
        "ce-type": "order.placed",
        "ce-time": "2026-01-31T09:30:00Z",
        "ce-subject": "orders/42",
        "ce-count": "5",
        "ce-flag": "false",
        "content-type": "application/json",
    }
    assert body == b'{"a":1}'


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (" ", "%20"),
        ('"', "%22"),
        ("%", "%25"),
        ("\u00e9", "%C3%A9"),
        ("Euro \u20ac \U0001f600", "Euro%20%E2%82%AC%20%F0%9F%98%80"),
        ("line\nbreak\ttab", "line%0Abreak%09tab"),
        ("\x7f\x80", "%7F%C2%80"),
        ("a/b:c?d=e&f#g'(h)~!*+,;@[]{}|\\^`<>$", "a/b:c?d=e&f#g'(h)~!*+,;@[]{}|\\^`<>$"),
    ],
)
def test_to_http_binary_percent_encodes_what_the_http_binding_requires(value: str, encoded: str) -> None:
    """Space, '"', '%' and everything outside printable ASCII is percent-encoded as upper-case UTF-8."""
    headers, _ = to_http_binary(make(subject=value))
    assert headers["ce-subject"] == encoded


def test_to_http_binary_header_values_are_printable_ascii() -> None:
    """Every header value binary encoding produces is printable US-ASCII, as RFC 7230 requires."""
    headers, _ = to_http_binary(make(subject='\u00fcber "quoted" 100%\r\n', extensions={"note": "\u2603 x"}))
    for value in headers.values():
        assert all(0x21 <= ord(char) <= 0x7E for char in value), value


def test_to_http_binary_labels_json_data_and_leaves_empty_events_bare() -> None:
    """JSON data without datacontenttype gets application/json; no data means no content-type."""
    headers, body = to_http_binary(make(data="text"))
    assert (headers["content-type"], body) == ("application/json", b'"text"')
    headers, body = to_http_binary(make())
    assert ("content-type" not in headers, body) == (True, b"")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (make(datacontenttype="application/json", data={"a": [1, None]}), None),
        (make(data="text"), make(datacontenttype="application/json", data="text")),
        (make(datacontenttype="application/octet-stream", data=b"\x00\xff"), None),
        (make(), None),
        (
            make(
                subject='caf\u00e9 "100%" \u20ac\U0001f600',
                time="2026-01-31T09:30:00Z",
                dataschema="https://example.com/s?q=a%20b",
                extensions={"tags": "prod, eu"},
            ),
            None,
        ),
        (make(extensions={"count": 5, "flag": True}), make(extensions={"count": "5", "flag": "true"})),
    ],
    ids=["json", "json-implied-type", "bytes", "no-data", "awkward-text", "typed-extensions"],
)
def test_to_http_binary_round_trips_through_from_http(event: CloudEvent, expected: CloudEvent | None) -> None:
    """from_http(to_http_binary(e)) gives e back; headers are text, so extensions come back as strings."""
    headers, body = to_http_binary(event)
    assert one(headers, body) == (expected or event)


@pytest.mark.parametrize(
    "event",
    [
        make(extensions={"count": 5, "flag": True}, data={"a": 1}),
        make(datacontenttype="application/octet-stream", data=b"\x00\xff"),
        make(subject="s p a c e"),
    ],
)
def test_to_http_structured_round_trips_through_from_http(event: CloudEvent) -> None:
    """Structured encoding is the JSON format in the body and decodes back to the same event."""
    headers, body = to_http_structured(event)
    assert headers == {"content-type": STRUCTURED_CONTENT_TYPE}
    assert orjson.loads(body) == to_json_dict(event)
    assert one(headers, body) == event

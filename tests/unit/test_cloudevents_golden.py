"""The CloudEvents specification's own example events decode and re-encode (tests/fixtures/cloudevents)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from bus.events import CloudEvent, from_json_dict, is_json_content_type, to_json_dict
from bus.http_binding import BATCH_CONTENT_TYPE, from_http, to_http_binary
from bus.kafka_binding import from_record, to_record

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cloudevents"
SINGLE_EVENTS = sorted(p.name for p in FIXTURES.glob("*.json") if p.name != "json_format_batch.json")
HTTP_EXAMPLES = sorted(p.stem for p in FIXTURES.glob("*.http"))
THRIFT_BYTES = b"\x0b\x00\x01\x00\x00\x00\x03abc\x00"
"""What the fixtures' data_base64 (CwABAAAAA2FiYwA=) decodes to."""


def load(name: str) -> Any:
    """A fixture file parsed with the standard library, independent of the code under test."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def read_http(stem: str) -> tuple[dict[str, str], bytes]:
    """An `.http` fixture: lower-cased headers and the body (one trailing newline dropped)."""
    text = (FIXTURES / f"{stem}.http").read_text(encoding="utf-8")
    head, _, body = text.partition("\n\n")
    headers = {}
    for line in head.splitlines():
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body.removesuffix("\n").encode("utf-8")


def expected_reencoding(document: dict[str, Any]) -> dict[str, Any]:
    """The JSON format bus writes for a spec document: nulls dropped, non-JSON text as data_base64."""
    out = {name: value for name, value in document.items() if value is not None}
    if "data" in out and not is_json_content_type(out.get("datacontenttype")):
        out["data_base64"] = base64.b64encode(out.pop("data").encode("utf-8")).decode("ascii")
    return out


def test_fixture_folder_holds_the_spec_examples() -> None:
    """The golden files are present, so the parametrized tests below cannot silently run on nothing."""
    assert len(SINGLE_EVENTS) == 5
    assert len(HTTP_EXAMPLES) == 3


def test_core_spec_example_decodes() -> None:
    """The core spec's com.github.pull_request.opened example decodes attribute by attribute."""
    event = from_json_dict(load("spec_pull_request_opened.json"))
    assert event == CloudEvent(
        specversion="1.0",
        type="com.github.pull_request.opened",
        source="https://github.com/cloudevents/spec/pull",
        subject="123",
        id="A234-1234-1234",
        time="2018-04-05T17:31:00Z",
        datacontenttype="text/xml",
        extensions={"comexampleextension1": "value", "comexampleothervalue": 5},
        data=b'<much wow="xml"/>',
    )
    assert event.partition_key == "123"


def test_binary_data_example_decodes_data_base64_to_bytes() -> None:
    """The JSON format's Binary-valued example decodes data_base64 into the raw bytes."""
    event = from_json_dict(load("json_format_binary_data.json"))
    assert event.datacontenttype == "application/vnd.apache.thrift.binary"
    assert event.data == THRIFT_BYTES
    assert event.extensions == {"comexampleextension1": "value", "comexampleothervalue": 5}


def test_xml_data_example_drops_the_null_extension() -> None:
    """The XML example's "unsetextension": null is read as unset, not as an extension."""
    event = from_json_dict(load("json_format_xml_data.json"))
    assert "unsetextension" not in event.extensions
    assert event.data == b'<much wow="xml"/>'


def test_json_data_example_decodes_data_as_json() -> None:
    """The JSON-object example's data is a JSON value and its null subject is unset."""
    event = from_json_dict(load("json_format_json_data.json"))
    assert event.subject is None
    assert event.data == {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True}


def test_string_data_example_is_a_json_string() -> None:
    """Data with no datacontenttype is JSON, so the string example stays a string."""
    event = from_json_dict(load("json_format_string_data.json"))
    assert event.datacontenttype is None
    assert event.data == "I'm just a string"


@pytest.mark.parametrize("name", SINGLE_EVENTS)
def test_spec_example_reencodes_to_the_json_format(name: str) -> None:
    """Re-encoding a spec example gives the same document, nulls dropped and non-JSON text as base64."""
    document = load(name)
    event = from_json_dict(document)
    assert to_json_dict(event) == expected_reencoding(document)
    assert from_json_dict(to_json_dict(event)) == event


@pytest.mark.parametrize("name", SINGLE_EVENTS)
@pytest.mark.parametrize("structured", [False, True])
def test_spec_example_survives_the_kafka_binding(name: str, structured: bool) -> None:
    """A spec example goes through a Kafka record and back, with only binary mode's stringified ints."""
    event = from_json_dict(load(name))
    record = to_record(event, structured=structured)
    back = from_record(record.key, record.value, record.headers)
    if structured:
        assert back == event
    else:
        assert back.extensions == {"comexampleextension1": "value", "comexampleothervalue": "5"}
        assert back.data == event.data
        assert (back.id, back.source, back.type, back.time) == (
            event.id,
            event.source,
            event.type,
            event.time,
        )


@pytest.mark.parametrize("stem", HTTP_EXAMPLES)
def test_spec_example_reencodes_to_the_specs_http_binary_request(stem: str) -> None:
    """to_http_binary writes the headers the spec shows for each example, and the same body."""
    event = from_json_dict(load(f"{stem}.json"))
    expected_headers, expected_body = read_http(stem)
    headers, body = to_http_binary(event)
    assert headers == expected_headers
    if is_json_content_type(headers["content-type"]):
        assert orjson.loads(body) == orjson.loads(expected_body)
    else:
        assert body == expected_body


@pytest.mark.parametrize("stem", HTTP_EXAMPLES)
def test_specs_http_binary_request_decodes_to_the_example_event(stem: str) -> None:
    """The spec's HTTP binary requests decode to the JSON example (extensions become strings)."""
    event = from_json_dict(load(f"{stem}.json"))
    headers, body = read_http(stem)
    [decoded] = from_http(headers, body)
    assert decoded.extensions == {"comexampleextension1": "value", "comexampleothervalue": "5"}
    assert decoded.datacontenttype == (event.datacontenttype or "application/json")
    assert decoded.data == event.data
    assert (decoded.id, decoded.source, decoded.type, decoded.time) == (
        event.id,
        event.source,
        event.type,
        event.time,
    )


def test_batch_example_decodes_both_events() -> None:
    """The JSON batch example decodes into its binary-data event and its JSON-data event, in order."""
    body = (FIXTURES / "json_format_batch.json").read_bytes()
    first, second = from_http({"content-type": BATCH_CONTENT_TYPE}, body)
    assert (first.source, first.id, first.data) == ("/mycontext/4", "B234-1234-1234", THRIFT_BYTES)
    assert (second.source, second.id, second.type) == (
        "/mycontext/9",
        "C234-1234-1234",
        "com.example.someotherevent",
    )
    assert second.data == {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True}
    assert [to_json_dict(event) for event in (first, second)] == load("json_format_batch.json")

"""Typed event data is validated at the edge, each mismatch naming its exact path (SPEC §2)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bus.avro_codec import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, decode, encode
from bus.avro_schema import Schema, parse
from bus.avro_validation import conform, validate
from bus.errors import InvalidEvent

ORDER = parse(
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "quantity", "type": "int"},
            {"name": "total", "type": "long"},
            {"name": "paid", "type": "boolean"},
            {"name": "weight", "type": "float"},
            {
                "name": "items",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Item",
                        "fields": [{"name": "sku", "type": "string"}, {"name": "price", "type": "double"}],
                    },
                },
            },
            {"name": "labels", "type": {"type": "map", "values": "string"}},
            {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
            {"name": "coupon", "type": ["null", "string"], "default": None},
            {"name": "gift", "type": ["null", "shop.Item"], "default": None},
            {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
            {"name": "blob", "type": "bytes"},
            {"name": "placed", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "note", "type": "string", "default": ""},
        ],
    }
)


def order(**changes: Any) -> dict[str, Any]:
    """A valid order with some members replaced (a value of DROP removes the member)."""
    data: dict[str, Any] = {
        "id": "o-1",
        "quantity": 2,
        "total": 2_000,
        "paid": False,
        "weight": 1.5,
        "items": [{"sku": "a", "price": 1.25}, {"sku": "b", "price": 3}, {"sku": "c", "price": 10.0}],
        "labels": {"channel": "web"},
        "status": "NEW",
        "coupon": None,
        "gift": None,
        "digest": "\x00\x01\x02\xff",
        "blob": b"\x00raw",
        "placed": 1_769_850_000_000,
        "note": "leave at door",
    }
    for name, value in changes.items():
        if value is DROP:
            del data[name]
        else:
            data[name] = value
    return data


DROP = object()


def refusal(schema: Schema, datum: Any) -> tuple[str, str]:
    with pytest.raises(InvalidEvent) as caught:
        validate(schema, datum)
    return caught.value.field, caught.value.reason


def test_a_valid_order_passes_and_round_trips() -> None:
    """Valid data encodes and decodes to itself (bytes and fixed as strings of code points 0-255)."""
    data = order()
    validate(ORDER, data)
    back = decode(ORDER, encode(ORDER, data), max_bytes=4096, max_items=100)
    assert back == {
        **data,
        "blob": "\x00raw",
        "items": [*data["items"][:1], {"sku": "b", "price": 3.0}, data["items"][2]],
    }


def test_the_error_names_the_array_item_and_field() -> None:
    """A bad price in the third item is reported at data.items[2].price, with the value."""
    items = [{"sku": "a", "price": 1}, {"sku": "b", "price": 2}, {"sku": "c", "price": "ten"}]
    assert refusal(ORDER, order(items=items)) == ("data.items[2].price", "expected a double, got 'ten'")


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"quantity": True}, "data.quantity", "expected an int (32-bit integer), got true"),
        ({"quantity": 1.0}, "data.quantity", "expected an int (32-bit integer), got 1.0"),
        ({"quantity": 2**31}, "data.quantity", "out of range"),
        ({"total": 2**63}, "data.total", "out of range"),
        ({"total": -(2**63)}, None, None),
        ({"weight": 7}, None, None),
        ({"weight": False}, "data.weight", "expected a float, got false"),
        ({"weight": 1e39}, "data.weight", "beyond 32-bit range"),
        ({"paid": 0}, "data.paid", "expected a boolean, got 0"),
        ({"id": None}, "data.id", "expected a string, got null"),
        ({"id": "a\ud800"}, "data.id", "lone surrogate"),
        ({"labels": {"channel": 5}}, 'data.labels["channel"]', "expected a string, got 5"),
        ({"labels": []}, "data.labels", "expected a map (a JSON object), got an array"),
        ({"status": "LOST"}, "data.status", "expected one of the symbols NEW, PAID, got 'LOST'"),
        ({"coupon": 5}, "data.coupon", "expected one of null, a string, got 5"),
        ({"gift": {"sku": "g", "price": "free"}}, "data.gift.price", "expected a double, got 'free'"),
        ({"digest": "abc"}, "data.digest", "got 3 bytes"),
        ({"digest": b"abcd"}, None, None),
        ({"blob": "\u20ac"}, "data.blob", "code points 0-255"),
        ({"blob": 5}, "data.blob", "expected bytes"),
        ({"placed": "2026-01-31T09:30:00Z"}, "data.placed", "expected a long (64-bit integer)"),
        ({"id": DROP}, "data.id", "is missing; expected a string (the field has no default)"),
        ({"note": DROP, "coupon": DROP, "gift": DROP}, None, None),
        ({"colour": "red"}, "data.colour", "is not a field of shop.Order; its fields are blob, coupon"),
        ({"items": "none"}, "data.items", "expected an array, got 'none'"),
        ({"items": [None]}, "data.items[0]", "expected a shop.Item record (a JSON object), got null"),
    ],
)
def test_json_rules_and_precise_paths(changes: dict[str, Any], field: str | None, reason: str | None) -> None:
    """Ints fit floats, booleans are not numbers, ranges hold, defaults fill in, unknown members fail."""
    data = order(**changes)
    if field is None:
        validate(ORDER, data)
        encode(ORDER, data)
        return
    got_field, got_reason = refusal(ORDER, data)
    assert got_field == field
    assert reason is not None
    assert reason in got_reason


def test_a_top_level_mismatch_names_data() -> None:
    """Data that is not a record at all is reported at `data`."""
    assert refusal(ORDER, [1, 2]) == ("data", "expected a shop.Order record (a JSON object), got an array")


def test_defaults_are_filled_in_for_the_writer() -> None:
    """Missing members with defaults are written as their defaults, and the input is not changed."""
    data = order(note=DROP, coupon=DROP)
    wire = conform(ORDER, data)
    assert wire["note"] == ""
    assert wire["coupon"] is None
    assert "note" not in data


def test_unions_pick_the_branch_validation_chose() -> None:
    """In a wide union each value is written as the branch validation chose, and reads back the same."""
    schema = parse(
        {
            "type": "record",
            "name": "Pick",
            "fields": [
                {
                    "name": "value",
                    "type": [
                        "null",
                        "boolean",
                        "int",
                        "double",
                        "string",
                        {"type": "array", "items": "long"},
                        {"type": "map", "values": "string"},
                        {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "long"}]},
                    ],
                }
            ],
        }
    )
    for value in [None, True, 3, 2.5, "s", [1, 2], {"k": "v"}, {"x": 1}]:
        data = {"value": value}
        assert decode(schema, encode(schema, data), max_bytes=100, max_items=10) == data
    with pytest.raises(InvalidEvent) as caught:
        validate(schema, {"value": {"x": 1.5}})
    assert caught.value.field == "data.value"
    assert "expected one of null, a boolean" in caught.value.reason


def test_json_typed_strings_take_any_json_value() -> None:
    """A {"logicalType": "json"} string accepts any JSON value and refuses what JSON cannot carry."""
    schema = parse({"type": "string", "logicalType": "json"})
    for value in [None, 1, "text", [1, {"a": None}], {"nested": {"deep": [True]}}]:
        assert decode(schema, encode(schema, value), max_bytes=1000, max_items=1) == value
    with pytest.raises(InvalidEvent) as caught:
        validate(schema, {"when": object()})
    assert caught.value.field == "data"


def test_deep_nesting_is_refused() -> None:
    """Data of a recursive schema nesting deeper than 64 levels is refused, not a RecursionError."""
    schema = parse(
        {
            "type": "record",
            "name": "Node",
            "fields": [{"name": "next", "type": ["null", "Node"], "default": None}],
        }
    )
    data: dict[str, Any] = {"next": None}
    for _ in range(200):
        data = {"next": data}
    with pytest.raises(InvalidEvent) as caught:
        validate(schema, data)
    assert "nests deeper than 64 levels" in caught.value.reason
    shallow: dict[str, Any] = {"next": None}
    for _ in range(10):
        shallow = {"next": shallow}
    assert decode(schema, encode(schema, shallow), max_bytes=100, max_items=10) == shallow


def test_hostile_data_cannot_make_union_validation_exponential() -> None:
    """Nested data that fits two record branches at every level is refused within a bounded budget."""
    link = ["null", "A", "B"]
    schema = parse(
        {
            "type": "record",
            "name": "A",
            "fields": [
                {"name": "v", "type": "int"},
                {
                    "name": "next",
                    "type": [
                        "null",
                        "A",
                        {
                            "type": "record",
                            "name": "B",
                            "fields": [
                                {"name": "v", "type": "int"},
                                {"name": "w", "type": ["null", "int"], "default": None},
                                {"name": "next", "type": link},
                            ],
                        },
                    ],
                },
            ],
        }
    )
    datum: Any = {"v": "not an int"}
    for _ in range(40):
        datum = {"v": 1, "next": datum}
    started = time.perf_counter()
    with pytest.raises(InvalidEvent):
        validate(schema, datum)
    assert time.perf_counter() - started < 5.0


BATCH = parse(
    {
        "type": "record",
        "name": "Batch",
        "fields": [
            {"name": "ids", "type": {"type": "array", "items": "int"}},
            {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
            {"name": "more", "type": ["null", "string", {"type": "array", "items": "int"}], "default": None},
        ],
    }
)


def test_more_items_than_workers_read_are_refused_naming_the_array() -> None:
    """150,000 ids are over DEFAULT_MAX_ITEMS: refused at data.ids with the limit and the fix."""
    field, reason = refusal(BATCH, {"ids": [1] * 150_000})
    assert field == "data.ids"
    assert str(DEFAULT_MAX_ITEMS) in reason
    assert "split it" in reason


def test_data_at_the_item_limit_passes_and_the_worker_limit_reads_it() -> None:
    """Exactly DEFAULT_MAX_ITEMS items in all validates, and decodes under the same limit."""
    data = {"ids": [1] * (DEFAULT_MAX_ITEMS - 1), "tags": {"a": "b"}}
    body = encode(BATCH, data)
    assert decode(BATCH, body, max_bytes=DEFAULT_MAX_BYTES, max_items=DEFAULT_MAX_ITEMS)["ids"] == data["ids"]


def test_array_items_and_map_entries_count_together() -> None:
    """The limit is on the total, as the decoder counts it: the container that crosses it is named."""
    datum = {"ids": [1, 2, 3], "tags": {"a": "x", "b": "y"}, "more": [4, 5]}
    validate(BATCH, datum, max_items=7)
    with pytest.raises(InvalidEvent) as caught:
        validate(BATCH, datum, max_items=6)
    assert caught.value.field == "data.more"
    assert "over the limit of 6" in caught.value.reason
    with pytest.raises(InvalidEvent) as caught:
        validate(BATCH, datum, max_items=4)
    assert caught.value.field == "data.tags"

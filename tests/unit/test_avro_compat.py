"""Schema evolution: reader-schema decoding and the compatibility check (Avro spec, schema resolution)."""

from __future__ import annotations

from typing import Any, TypedDict

import pytest

from bus.avro_codec import decode, encode
from bus.avro_compat import DEFAULT_COMPATIBILITY, Compatibility, check_compatible
from bus.avro_schema import Schema, parse
from bus.errors import InvalidEvent


class Limits(TypedDict):
    """decode()'s limits, as keyword arguments."""

    max_bytes: int
    max_items: int


LIMITS: Limits = {"max_bytes": 4096, "max_items": 100}
BASE: list[dict[str, Any]] = [{"name": "id", "type": "string"}, {"name": "quantity", "type": "int"}]


def order(*fields: dict[str, Any], name: str = "Order", **extra: Any) -> Schema:
    return parse({"type": "record", "name": name, "namespace": "shop", "fields": list(fields), **extra})


V1 = order(*BASE)
V2 = order(*BASE, {"name": "note", "type": "string", "default": ""})


def test_the_default_is_full() -> None:
    """bus checks both directions unless told otherwise (docs/decisions/avro.md)."""
    assert DEFAULT_COMPATIBILITY is Compatibility.FULL


def test_a_v1_consumer_reads_v2_data_with_an_added_defaulted_field() -> None:
    """Data written with v2 decodes with the v1 reader schema: the new field is skipped."""
    body = encode(V2, {"id": "o-1", "quantity": 2, "note": "gift"})
    assert decode(V2, body, reader_schema=V1, **LIMITS) == {"id": "o-1", "quantity": 2}


def test_a_v2_consumer_reads_v1_data_and_gets_the_default() -> None:
    """Data written with v1 decodes with the v2 reader schema: the new field takes its default."""
    body = encode(V1, {"id": "o-1", "quantity": 2})
    assert decode(V1, body, reader_schema=V2, **LIMITS) == {"id": "o-1", "quantity": 2, "note": ""}


@pytest.mark.parametrize("mode", list(Compatibility))
def test_adding_a_defaulted_field_is_compatible_in_every_mode(mode: Compatibility) -> None:
    """An added field with a default keeps old and new readers working."""
    assert check_compatible(V2, V1, mode) == []


def test_removing_a_field_without_default_breaks_old_readers() -> None:
    """v1 readers need `quantity`: removing it is BACKWARD-compatible only."""
    v3 = order({"name": "id", "type": "string"})
    assert check_compatible(v3, V1, Compatibility.BACKWARD) == []
    problems = check_compatible(v3, V1, Compatibility.FORWARD)
    assert problems == [
        "data.quantity: the reader needs it, the writer does not write it, and it has no default "
        "(old schema reading new data)"
    ]
    assert check_compatible(v3, V1, Compatibility.FULL) == problems
    assert check_compatible(v3, V1, Compatibility.NONE) == []


def test_adding_a_field_without_default_breaks_new_readers_of_old_data() -> None:
    """A new required field cannot be read from v1 data: refused BACKWARD, fine FORWARD."""
    v3 = order(*BASE, {"name": "channel", "type": "string"})
    assert check_compatible(v3, V1, Compatibility.FORWARD) == []
    assert check_compatible(v3, V1, Compatibility.BACKWARD) == [
        "data.channel: the reader needs it, the writer does not write it, and it has no default "
        "(new schema reading old data)"
    ]
    with pytest.raises(InvalidEvent, match="cannot be read with the reader schema"):
        decode(V1, encode(V1, {"id": "o-1", "quantity": 2}), reader_schema=v3, **LIMITS)


def test_changing_int_to_string_is_refused_both_ways() -> None:
    """int and string do not resolve into each other."""
    v3 = order({"name": "id", "type": "string"}, {"name": "quantity", "type": "string"})
    assert check_compatible(v3, V1, Compatibility.FULL) == [
        "data.quantity: written as an int (32-bit integer), cannot be read as a string "
        "(new schema reading old data)",
        "data.quantity: written as a string, cannot be read as an int (32-bit integer) "
        "(old schema reading new data)",
    ]


def test_int_to_long_is_a_backward_promotion() -> None:
    """A long reader reads int data (promotion), an int reader cannot read long data."""
    v3 = order({"name": "id", "type": "string"}, {"name": "quantity", "type": "long"})
    assert check_compatible(v3, V1, Compatibility.BACKWARD) == []
    assert check_compatible(v3, V1, Compatibility.FORWARD) != []
    body = encode(V1, {"id": "o-1", "quantity": 7})
    assert decode(V1, body, reader_schema=v3, **LIMITS) == {"id": "o-1", "quantity": 7}


@pytest.mark.parametrize(
    ("writer", "reader", "ok"),
    [
        ("int", "long", True),
        ("int", "double", True),
        ("long", "float", True),
        ("float", "double", True),
        ("string", "bytes", True),
        ("bytes", "string", True),
        ("long", "int", False),
        ("double", "float", False),
        ("boolean", "int", False),
    ],
)
def test_promotions_follow_the_avro_spec(writer: str, reader: str, ok: bool) -> None:
    """int->long->float->double and string<->bytes resolve; narrowing does not."""
    problems = check_compatible(parse(f'"{reader}"'), parse(f'"{writer}"'), Compatibility.BACKWARD)
    assert (problems == []) is ok


def enum(*symbols: str, **extra: Any) -> Schema:
    return parse({"type": "enum", "name": "Status", "namespace": "shop", "symbols": list(symbols), **extra})


def test_adding_an_enum_symbol_breaks_old_readers_unless_they_have_a_default() -> None:
    """Old readers cannot read a new symbol, unless their enum declares a default symbol."""
    v1, v2 = enum("NEW", "PAID"), enum("NEW", "PAID", "REFUNDED")
    assert check_compatible(v2, v1, Compatibility.BACKWARD) == []
    assert check_compatible(v2, v1, Compatibility.FORWARD) == [
        "data: written symbols REFUNDED are not in the reader's enum shop.Status, "
        "which has no default symbol (old schema reading new data)"
    ]
    v1_default = enum("NEW", "PAID", "UNKNOWN", default="UNKNOWN")
    assert check_compatible(v2, v1_default, Compatibility.FORWARD) == []
    body = encode(v2, "REFUNDED")
    assert decode(v2, body, reader_schema=v1_default, **LIMITS) == "UNKNOWN"


def test_removing_an_enum_symbol_breaks_new_readers_of_old_data() -> None:
    """Old data may hold the removed symbol: refused BACKWARD."""
    assert check_compatible(enum("NEW"), enum("NEW", "PAID"), Compatibility.BACKWARD) != []


def test_nested_records_arrays_maps_and_unions_are_checked_with_paths() -> None:
    """Problems deep inside arrays, maps and unions name the path down to the field."""

    def shape(price: str) -> Schema:
        item = {"type": "record", "name": "Item", "fields": [{"name": "price", "type": price}]}
        return order(
            {"name": "items", "type": {"type": "array", "items": item}},
            {"name": "by_sku", "type": {"type": "map", "values": "Item"}},
            {"name": "gift", "type": ["null", "Item"], "default": None},
        )

    problems = check_compatible(shape("string"), shape("double"), Compatibility.BACKWARD)
    assert [p.split(":", 1)[0] for p in problems] == [
        "data.items[*].price",
        "data.by_sku[*].price",
        "data.gift.price",
    ]


def test_unions_resolve_branch_by_branch() -> None:
    """Making a field nullable is backward compatible; making it required again is not."""
    required = order({"name": "id", "type": "string"}, {"name": "quantity", "type": "int"})
    nullable = order(
        {"name": "id", "type": "string"}, {"name": "quantity", "type": ["null", "int"], "default": None}
    )
    assert check_compatible(nullable, required, Compatibility.BACKWARD) == []
    assert check_compatible(required, nullable, Compatibility.BACKWARD) == [
        "data.quantity: written as null, cannot be read as an int (32-bit integer) "
        "(new schema reading old data)"
    ]


def test_record_names_must_match_unless_aliased() -> None:
    """A renamed record is a different type, unless the reader lists the old name as an alias."""
    renamed = order(*BASE, name="Purchase")
    assert "names differ" in check_compatible(renamed, V1, Compatibility.BACKWARD)[0]
    assert (
        check_compatible(order(*BASE, name="Purchase", aliases=["Order"]), V1, Compatibility.BACKWARD) == []
    )


def test_fixed_sizes_must_match() -> None:
    """A fixed of another size cannot be read."""
    four = parse({"type": "fixed", "name": "Id", "size": 4})
    eight = parse({"type": "fixed", "name": "Id", "size": 8})
    assert check_compatible(eight, four, Compatibility.BACKWARD) == [
        "data: fixed Id is 4 bytes when written, 8 when read (new schema reading old data)"
    ]


def test_field_aliases_match_renamed_fields() -> None:
    """A reader field whose alias names the writer's field reads it."""
    renamed = order(
        {"name": "id", "type": "string"}, {"name": "count", "type": "int", "aliases": ["quantity"]}
    )
    assert check_compatible(renamed, V1, Compatibility.BACKWARD) == []


def test_recursive_schemas_terminate() -> None:
    """A recursive record is checked once, not forever."""
    node = parse(
        {
            "type": "record",
            "name": "Node",
            "fields": [{"name": "next", "type": ["null", "Node"], "default": None}],
        }
    )
    assert check_compatible(node, node) == []


JSON_TEXT: dict[str, Any] = {"type": "string", "logicalType": "json"}


@pytest.mark.parametrize(
    ("plain", "as_json"),
    [
        ({"name": "payload", "type": "string"}, {"name": "payload", "type": JSON_TEXT}),
        (
            {"name": "payload", "type": {"type": "array", "items": "string"}},
            {"name": "payload", "type": {"type": "array", "items": JSON_TEXT}},
        ),
        ({"name": "payload", "type": ["null", "string"]}, {"name": "payload", "type": JSON_TEXT}),
        ({"name": "payload", "type": "bytes"}, {"name": "payload", "type": JSON_TEXT}),
    ],
)
def test_adding_or_removing_the_json_logical_type_is_incompatible_both_ways(
    plain: dict[str, Any], as_json: dict[str, Any]
) -> None:
    """A v2 reader would parse v1's plain text as JSON (and fail), a v1 reader would get v2's JSON
    as text: turning a field into `logicalType: json` or back is refused, naming the field."""
    text, json_text = order(*BASE, plain), order(*BASE, as_json)
    for new, old in ((json_text, text), (text, json_text)):
        problems = check_compatible(new, old)
        assert problems, (new.text, old.text)
        assert all(problem.startswith("data.payload") for problem in problems), problems
        assert any("logicalType json" in problem for problem in problems), problems
        for mode in (Compatibility.BACKWARD, Compatibility.FORWARD):
            assert check_compatible(new, old, mode), mode


def test_a_json_field_kept_as_it_was_stays_compatible() -> None:
    """The json logical type on both sides is the same string type: nothing to report."""
    v1 = order(*BASE, {"name": "payload", "type": JSON_TEXT})
    v2 = order(
        *BASE, {"name": "payload", "type": JSON_TEXT}, {"name": "note", "type": "string", "default": ""}
    )
    assert check_compatible(v2, v1) == []
    assert check_compatible(parse(JSON_TEXT), parse(JSON_TEXT)) == []

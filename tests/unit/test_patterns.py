"""The EventBridge event-pattern language, exact-match subset (bus.patterns)."""

from __future__ import annotations

from typing import Any

import pytest

from bus.events import CloudEvent, to_json_dict
from bus.patterns import Pattern, PatternError, compile


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """Compile `pattern` and match it against `event`."""
    return compile(pattern).matches(event)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("order.placed", True),
        ("order.placed2", False),
        ("Order.Placed", False),
        ("order.placed ", False),
        ("", False),
        (None, False),
    ],
)
def test_strings_match_exactly(value: object, expected: bool) -> None:
    """A string matches only the identical string: case, whitespace and suffixes count."""
    assert matches({"type": ["order.placed"]}, {"type": value}) is expected


@pytest.mark.parametrize(
    ("wanted", "value", "expected"),
    [
        (5, 5, True),
        (5, 5.0, True),
        (5.0, 5, True),
        (0, -0.0, True),
        (1.5, 1.5, True),
        (5, 6, False),
        (5, "5", False),
        ("5", 5, False),
    ],
)
def test_numbers_match_by_value(wanted: object, value: object, expected: bool) -> None:
    """Numbers compare by value (5 matches 5.0) and never equal their string spelling."""
    assert matches({"n": [wanted]}, {"n": value}) is expected


@pytest.mark.parametrize(
    ("wanted", "value", "expected"),
    [
        (True, True, True),
        (False, False, True),
        (True, False, False),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (0, False, False),
        (1.0, True, False),
        (True, "true", False),
    ],
)
def test_booleans_never_equal_numbers(wanted: object, value: object, expected: bool) -> None:
    """true and false match only themselves, never 1, 0 or the string "true"."""
    assert matches({"flag": [wanted]}, {"flag": value}) is expected


@pytest.mark.parametrize(
    ("wanted", "event", "expected"),
    [
        (None, {"x": None}, True),
        (None, {}, False),
        (None, {"x": ""}, False),
        (None, {"x": 0}, False),
        (None, {"x": False}, False),
        ("", {"x": ""}, True),
        ("", {"x": None}, False),
        ("", {}, False),
    ],
)
def test_null_empty_string_and_missing_are_different(
    wanted: object, event: dict[str, Any], expected: bool
) -> None:
    """null matches only null, "" matches only "", and neither matches a missing field."""
    assert matches({"x": [wanted]}, event) is expected


@pytest.mark.parametrize(
    ("value", "expected"), [("a", True), ("b", True), (1, True), ("c", False), ("1", False)]
)
def test_an_array_of_values_is_an_or(value: object, expected: bool) -> None:
    """A field matches when its value equals any one of the pattern's values."""
    assert matches({"x": ["a", "b", 1]}, {"x": value}) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["x", "y", "z"], True),
        (["a", "y"], True),
        (["a", "b"], False),
        ([], False),
        ([["y"]], False),
        ([1, 2.0], True),
    ],
)
def test_an_array_in_the_event_matches_when_any_element_does(value: list[Any], expected: bool) -> None:
    """An array in the event matches when any of its elements matches (no nested arrays)."""
    assert matches({"x": ["y", 2]}, {"x": value}) is expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"data": {"size": 10, "kind": "jpg"}}, True),
        ({"data": {"size": 10.0}}, True),
        ({"data": {"size": 11}}, False),
        ({"data": {}}, False),
        ({"data": {"other": {"size": 10}}}, False),
        ({"data": 10}, False),
        ({"data": "size"}, False),
        ({"size": 10}, False),
        ({}, False),
        ({"data": [{"size": 1}, {"size": 10}]}, True),
        ({"data": [{"size": 1}, 10]}, False),
    ],
)
def test_nested_objects_match_field_by_field(event: dict[str, Any], expected: bool) -> None:
    """A nested pattern matches the nested object (or any object in an array) at the same path."""
    assert matches({"data": {"size": [10]}}, event) is expected


def test_every_field_of_a_pattern_must_match() -> None:
    """Fields of a pattern are ANDed: one mismatching field fails the whole pattern."""
    pattern = {"type": ["order.placed"], "source": ["/shop"], "data": {"country": ["DE"]}}
    event = {"type": "order.placed", "source": "/shop", "data": {"country": "DE", "total": 3}}
    assert matches(pattern, event)
    assert not matches(pattern, {**event, "source": "/other"})
    assert not matches(pattern, {**event, "data": {"country": "FR"}})


@pytest.mark.parametrize(
    "pattern",
    [{"x": [None]}, {"x": [""]}, {"x": [False]}, {"x": [0]}, {"data": {"x": [None]}}],
)
def test_a_missing_field_never_matches(pattern: dict[str, Any]) -> None:
    """A field absent from the event matches no value, not even null, "" or false."""
    assert not matches(pattern, {"data": {}})


def test_fields_the_pattern_does_not_name_are_ignored() -> None:
    """Extra fields in the event do not affect matching."""
    assert matches({"type": ["t"]}, {"type": "t", "source": "/s", "data": {"anything": [1]}})


def test_an_empty_pattern_matches_every_event() -> None:
    """A pattern with no fields constrains nothing (a manifest rule without a pattern)."""
    assert matches({}, {})
    assert matches({}, {"type": "t"})


def test_patterns_match_events_in_the_cloudevents_json_format() -> None:
    """Attributes and extensions sit at the top level and the payload under data, as in to_json_dict."""
    event = CloudEvent.create(
        id="1",
        source="s3://uploads",
        type="bus.object.created",
        subject="photos/cat.jpg",
        extensions={"tags": "prod", "attempt": 2},
        data={"bucket": "uploads", "size": 2048},
    )
    pattern = {"type": ["bus.object.created"], "attempt": [2], "data": {"bucket": ["uploads"]}}
    assert matches(pattern, to_json_dict(event))
    assert not matches({"data": {"bucket": ["other"]}}, to_json_dict(event))


def test_compile_returns_a_reusable_pattern() -> None:
    """compile() returns a Pattern that can match many events."""
    pattern = compile({"type": ["a", "b"]})
    assert isinstance(pattern, Pattern)
    assert [pattern.matches({"type": t}) for t in ("a", "b", "c")] == [True, True, False]


# --- compile errors --------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["type", ["type"], None, 5, True])
def test_compile_refuses_a_pattern_that_is_not_an_object(pattern: object) -> None:
    """A pattern must be a JSON object."""
    with pytest.raises(PatternError, match="must be a JSON object"):
        compile(pattern)


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ({"type": "order.placed"}, "type"),
        ({"n": 5}, "n"),
        ({"x": None}, "x"),
        ({"data": {"size": 10}}, "data.size"),
        ({"data": {"a": {"b": True}}}, "data.a.b"),
    ],
)
def test_compile_refuses_a_scalar_where_an_array_belongs(pattern: dict[str, Any], path: str) -> None:
    """Match values must be in an array; the message names the path and shows the fix."""
    with pytest.raises(PatternError) as caught:
        compile(pattern)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "must be in an array, e.g. [" in message


@pytest.mark.parametrize(("pattern", "path"), [({"type": []}, "type"), ({"data": {"key": []}}, "data.key")])
def test_compile_refuses_an_empty_array(pattern: dict[str, Any], path: str) -> None:
    """An empty array of match values could never match, so it is refused naming the path."""
    with pytest.raises(PatternError, match=rf"^{path}: .*must not be empty"):
        compile(pattern)


def test_compile_refuses_an_empty_nested_object() -> None:
    """An empty object inside a pattern is refused naming its path."""
    with pytest.raises(PatternError, match=r"^data: .*must not be empty"):
        compile({"data": {}})


@pytest.mark.parametrize(
    ("pattern", "path", "operator"),
    [
        ({"data": {"key": [{"suffix": ".jpg"}]}}, "data.key", "suffix"),
        ({"data": {"size": [{"numeric": [">", 0]}]}}, "data.size", "numeric"),
        ({"source": [{"prefix": "s3://"}]}, "source", "prefix"),
        ({"x": [{"exists": True}]}, "x", "exists"),
        ({"x": [{"anything-but": ["a"]}]}, "x", "anything-but"),
        ({"x": ["plain", {"equals-ignore-case": "A"}]}, "x", "equals-ignore-case"),
    ],
)
def test_compile_refuses_content_filters_not_supported_yet(
    pattern: dict[str, Any], path: str, operator: str
) -> None:
    """Operator objects (prefix, suffix, numeric, ...) are refused naming the path and the operator."""
    with pytest.raises(PatternError) as caught:
        compile(pattern)
    assert str(caught.value) == f"{path}: operator {operator!r} is not supported yet"


def test_compile_refuses_an_array_inside_match_values() -> None:
    """Match values are scalars; a nested array is refused naming the path."""
    with pytest.raises(PatternError, match=r"^x: match values must be strings, numbers, booleans or null"):
        compile({"x": [["a"]]})


def test_pattern_error_is_a_value_error() -> None:
    """PatternError is a ValueError, so callers may catch either (SPEC §5)."""
    assert issubclass(PatternError, ValueError)
    with pytest.raises(ValueError, match="type"):
        compile({"type": "x"})

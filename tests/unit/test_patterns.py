"""The EventBridge event-pattern language (bus.patterns), cases from AWS's and event-ruler's docs."""

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
        ([["y"]], True),
        ([1, 2.0], True),
    ],
)
def test_an_array_in_the_event_matches_when_any_element_does(value: list[Any], expected: bool) -> None:
    """An array in the event matches when any element does; nested arrays are flattened (event-ruler)."""
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


def test_compile_refuses_an_array_inside_match_values() -> None:
    """Match values are scalars; a nested array is refused naming the path."""
    with pytest.raises(PatternError, match=r"^x: match values must be strings, numbers, booleans or null"):
        compile({"x": [["a"]]})


def test_pattern_error_is_a_value_error() -> None:
    """PatternError is a ValueError, so callers may catch either (SPEC §5)."""
    assert issubclass(PatternError, ValueError)
    with pytest.raises(ValueError, match="type"):
        compile({"type": "x"})


# --- content filters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ({"prefix": "2017-10-02"}, "2017-10-02T18:43:48Z", True),
        ({"prefix": "2017-10-02"}, "2017-10-03T00:00:00Z", False),
        ({"prefix": "us-"}, "US-east", False),
        ({"prefix": "1"}, 10, False),
        ({"prefix": {"equals-ignore-case": "EventB"}}, "eventbridge", True),
        ({"prefix": {"equals-ignore-case": "EventB"}}, "EVENTBRIDGE", True),
        ({"prefix": {"equals-ignore-case": "EventB"}}, "event", False),
        ({"suffix": ".png"}, "cat.png", True),
        ({"suffix": ".png"}, "cat.PNG", False),
        ({"suffix": {"equals-ignore-case": ".png"}}, "cat.PNG", True),
        ({"suffix": {"equals-ignore-case": ".png"}}, "cat.jpg", False),
        ({"equals-ignore-case": "alice"}, "ALICE", True),
        ({"equals-ignore-case": "alice"}, "alicia", False),
        ({"equals-ignore-case": "true"}, True, False),
    ],
)
def test_string_operators_work_on_strings_only(
    operator: dict[str, Any], value: object, expected: bool
) -> None:
    """prefix, suffix and equals-ignore-case (alone or combined) match string values only."""
    assert matches({"x": [operator]}, {"x": value}) is expected


@pytest.mark.parametrize(
    ("wildcard", "value", "expected"),
    [
        ("Simple*Service", "SimpleQueueService", True),
        ("Simple*Service", "SimpleService", True),
        ("Simple*Service", "SimpleServices", False),
        ("dir/*.png", "dir/a/b.png", True),
        ("*", "", True),
        ("*", 5, False),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("a\\\\b", "a\\b", True),
        ("*/lib/*", "/usr/lib/x", True),
        ("a.c", "abc", False),
    ],
)
def test_wildcard_star_matches_any_run_and_escapes_are_literal(
    wildcard: str, value: object, expected: bool
) -> None:
    """`*` matches any run of characters; `\\*` and `\\\\` match a literal star and backslash."""
    assert matches({"x": [{"wildcard": wildcard}]}, {"x": value}) is expected


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ({"anything-but": "initializing"}, "running", True),
        ({"anything-but": "initializing"}, "initializing", False),
        ({"anything-but": "initializing"}, 5, True),
        ({"anything-but": "initializing"}, None, True),
        ({"anything-but": 123}, 123.0, False),
        ({"anything-but": 123}, 124, True),
        ({"anything-but": ["stopped", "overloaded"]}, "stopped", False),
        ({"anything-but": ["stopped", "overloaded"]}, "running", True),
        ({"anything-but": [100, 200, 300]}, 200, False),
        ({"anything-but": {"prefix": "init"}}, "initializing", False),
        ({"anything-but": {"prefix": "init"}}, "running", True),
        ({"anything-but": {"suffix": ".png"}}, "a.png", False),
        ({"anything-but": {"suffix": ".png"}}, "a.jpg", True),
        ({"anything-but": {"prefix": ["init", "stop"]}}, "stopping", False),
        ({"anything-but": {"prefix": ["init", "stop"]}}, "running", True),
        ({"anything-but": {"suffix": [".png", ".gif"]}}, "a.gif", False),
        ({"anything-but": {"suffix": [".png", ".gif"]}}, "a.jpg", True),
        ({"anything-but": {"equals-ignore-case": "initializing"}}, "INITIALIZING", False),
        ({"anything-but": {"equals-ignore-case": ["a", "b"]}}, "B", False),
        ({"anything-but": {"equals-ignore-case": ["a", "b"]}}, "c", True),
        ({"anything-but": {"wildcard": "*/lib/*"}}, "/usr/lib/x", False),
        ({"anything-but": {"wildcard": "*/lib/*"}}, "/usr/bin/x", True),
    ],
)
def test_anything_but_matches_every_present_value_not_excluded(
    operator: dict[str, Any], value: object, expected: bool
) -> None:
    """anything-but (a value, a list, prefix, suffix, equals-ignore-case, wildcard) excludes only those."""
    assert matches({"x": [operator]}, {"x": value}) is expected


def test_anything_but_needs_the_field_present() -> None:
    """anything-but matches values, so a missing field (or an object there) does not match it."""
    assert not matches({"x": [{"anything-but": "a"}]}, {})
    assert not matches({"x": [{"anything-but": "a"}]}, {"x": {"y": "b"}})


def test_anything_but_on_an_array_matches_when_any_element_is_not_excluded() -> None:
    """Like every value match, anything-but on an array succeeds when one element passes."""
    assert matches({"x": [{"anything-but": "a"}]}, {"x": ["a", "b"]})
    assert not matches({"x": [{"anything-but": "a"}]}, {"x": ["a", "a"]})


@pytest.mark.parametrize(
    ("numeric", "value", "expected"),
    [
        ([">", 0, "<=", 5], 5, True),
        ([">", 0, "<=", 5], 0, False),
        ([">", 0, "<=", 5], 0.000001, True),
        ([">=", 0, "<", 5], 0, True),
        ([">=", 0, "<", 5], 5, False),
        (["<", 10], 3, True),
        (["<", 10], 10, False),
        (["<=", 10], 10.0, True),
        ([">", 10], 10.5, True),
        ([">=", 10], 9.999999, False),
        (["=", 3.018e2], 301.8, True),
        (["=", 300], 3e2, True),
        (["=", 0.1], 0.1, True),
        ([">", 0], "5", False),
        ([">", 0], True, False),
        ([">", 0], None, False),
        ([">", 0], 5_000_000_001, False),
        (["<", 0], -5_000_000_000, True),
    ],
)
def test_numeric_compares_numbers_by_value(numeric: list[Any], value: object, expected: bool) -> None:
    """numeric matches JSON numbers (not strings or booleans) within +-5e9 against its bounds."""
    assert matches({"x": [{"numeric": numeric}]}, {"x": value}) is expected


@pytest.mark.parametrize(
    ("block", "value", "expected"),
    [
        ("10.0.0.0/24", "10.0.0.33", True),
        ("10.0.0.0/24", "10.0.1.1", False),
        ("10.0.0.0/8", "10.255.255.255", True),
        ("10.0.0.0/24", "not an ip", False),
        ("10.0.0.0/24", 10, False),
        ("2001:db8::/32", "2001:db8::1", True),
        ("2001:db8::/32", "2001:0DB8:0000::ff", True),
        ("2001:db8::/32", "2001:db9::1", False),
        ("2001:db8::/32", "10.0.0.1", False),
    ],
)
def test_cidr_matches_ip_addresses_in_the_block(block: str, value: object, expected: bool) -> None:
    """cidr matches IPv4 and IPv6 address strings inside the block, whatever their spelling."""
    assert matches({"ip": [{"cidr": block}]}, {"ip": value}) is expected


@pytest.mark.parametrize(
    ("event", "exists_true", "exists_false"),
    [
        ({"detail": {"c": 5}}, True, False),
        ({"detail": {"c": None}}, True, False),
        ({"detail": {"c": ""}}, True, False),
        ({"detail": {"c": [1]}}, True, False),
        ({"detail": {}}, False, True),
        ({}, False, True),
        ({"detail": "flat"}, False, True),
        ({"detail": {"c": {"c1": 100}}}, False, True),
        ({"detail": {"c": []}}, False, True),
        ({"detail": {"c": [{"c1": 1}]}}, False, True),
    ],
)
def test_exists_looks_at_leaf_values_only(
    event: dict[str, Any], exists_true: bool, exists_false: bool
) -> None:
    """exists is about leaf values: null and "" exist, an object or an empty array does not (event-ruler)."""
    assert matches({"detail": {"c": [{"exists": True}]}}, event) is exists_true
    assert matches({"detail": {"c": [{"exists": False}]}}, event) is exists_false


def test_operators_and_values_in_one_array_are_alternatives() -> None:
    """Values and operator objects in one array are ORed."""
    pattern = {"x": ["exact", {"prefix": "pre"}, {"numeric": [">", 10]}, {"exists": False}]}
    assert [matches(pattern, {"x": v}) for v in ("exact", "prefix", 11, 10, "other")] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert matches(pattern, {})


# --- arrays of objects ---------------------------------------------------------------------------

EMPLOYEES = {
    "employees": [
        [{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}],
        [{"firstName": "Peter", "lastName": "Jones"}],
    ]
}


def test_arrays_of_objects_are_crushed_into_their_parent_field() -> None:
    """Objects inside (nested) arrays are matched as if they were the parent field's value."""
    assert matches({"employees": {"firstName": ["Anna"]}}, EMPLOYEES)


def test_arrays_of_objects_match_array_consistently() -> None:
    """Fields of one object pattern must all match within the same array element."""
    assert matches({"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, EMPLOYEES)
    assert not matches({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, EMPLOYEES)


def test_absence_in_an_array_is_checked_in_the_matched_element() -> None:
    """exists:false next to a positive field is judged in the element the positive field matched."""
    event = {"a": [{"b": 1, "c": "x"}, {"c": "y"}]}
    assert matches({"a": {"b": [{"exists": False}], "c": ["y"]}}, event)
    assert not matches({"a": {"b": [{"exists": False}], "c": ["x"]}}, event)


def test_absence_alone_in_an_array_needs_every_element() -> None:
    """An object pattern of only exists:false matches an array when no element has the field."""
    assert not matches({"a": {"b": [{"exists": False}]}}, {"a": [{"b": 1}, {"c": 2}]})
    assert matches({"a": {"b": [{"exists": False}]}}, {"a": [{"c": 1}, {"c": 2}]})


# --- $or ---------------------------------------------------------------------------------------


def test_or_matches_when_any_branch_matches() -> None:
    """ "$or" ORs whole sub-patterns, ANDed with the fields beside it."""
    pattern = {
        "source": ["aws.cloudwatch"],
        "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
    }
    assert matches(pattern, {"source": "aws.cloudwatch", "namespace": "AWS/EC2"})
    assert matches(pattern, {"source": "aws.cloudwatch", "metricName": "CPUUtilization"})
    assert not matches(pattern, {"source": "aws.cloudwatch", "namespace": "AWS/ES"})
    assert not matches(pattern, {"source": "other", "namespace": "AWS/EC2"})


def test_or_nests_and_appears_at_any_level() -> None:
    """$or inside $or branches and inside nested objects (event-ruler's "Nested Or and And")."""
    pattern = {
        "source": ["aws.cloudwatch"],
        "$or": [
            {"metricName": ["CPUUtilization"]},
            {"metricType": ["MetricType"], "$or": [{"metricId": [1234]}, {"spaceId": [1000]}]},
        ],
        "detail": {"$or": [{"state": ["ALARM"]}, {"level": [{"numeric": [">", 3]}]}]},
    }
    base = {"source": "aws.cloudwatch", "detail": {"level": 4}}
    assert matches(pattern, {**base, "metricType": "MetricType", "spaceId": 1000})
    assert not matches(pattern, {**base, "metricType": "MetricType", "spaceId": 1})
    assert matches(pattern, {**base, "metricName": "CPUUtilization"})
    assert not matches(pattern, {**base, "metricName": "CPUUtilization", "detail": {"level": 3}})


def test_or_branches_under_one_array_field_stay_array_consistent() -> None:
    """A field named both beside and inside $or is matched within one array element."""
    anna = {"employees": {"firstName": ["Anna"]}}
    jones = {"employees": {"lastName": ["Jones"]}}
    smith = {"employees": {"lastName": ["Smith"]}}
    assert not matches({**anna, "$or": [jones, {"other": [1]}]}, EMPLOYEES)
    assert matches({**anna, "$or": [smith, {"other": [1]}]}, EMPLOYEES)


# --- explain -----------------------------------------------------------------------------------


def test_explain_is_none_when_the_event_matches() -> None:
    """explain() returns None for a matching event."""
    assert compile({"type": ["t"]}).explain({"type": "t"}) is None


def test_explain_names_the_first_field_that_failed() -> None:
    """explain() names the field path, the pattern's values and the event's value."""
    pattern = compile({"type": ["t"], "data": {"size": [{"numeric": [">", 0]}]}})
    assert (
        pattern.explain({"type": "t", "data": {"size": 0}})
        == 'data.size: [{"numeric":[">",0]}] did not match 0'
    )
    assert pattern.explain({"data": {"size": 1}}) == 'type: ["t"] did not match the field is missing'


def test_explain_says_when_no_or_alternative_matched() -> None:
    """With $or, explain() says so and shows the first alternative's failure."""
    explained = compile({"$or": [{"a": [1]}, {"b": [2]}]}).explain({})
    assert (
        explained
        == "no $or alternative matched; the first failed at a: [1] did not match the field is missing"
    )


# --- compile errors for operators ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ({"x": [{"prefix": 5}]}, "x: prefix takes a string, got 5"),
        ({"x": [{"prefix": {"other": "a"}}]}, 'x: prefix takes a string or {"equals-ignore-case": "..."}'),
        ({"x": [{"suffix": None}]}, "x: suffix takes a string, got null"),
        ({"x": [{"equals-ignore-case": ["a"]}]}, "x: equals-ignore-case takes a string"),
        ({"x": [{"wildcard": "a**b"}]}, "x: wildcard: consecutive '*' are not allowed"),
        ({"x": [{"wildcard": "a\\b"}]}, "x: wildcard: a backslash may only escape"),
        ({"x": [{"wildcard": "a\\"}]}, "x: wildcard: a backslash may only escape"),
        ({"x": [{"anything-but": [True]}]}, "x: anything-but takes strings or numbers"),
        ({"x": [{"anything-but": None}]}, "x: anything-but takes strings or numbers"),
        ({"x": [{"anything-but": ["a", 1]}]}, "x: anything-but takes strings or numbers"),
        ({"x": [{"anything-but": []}]}, "x: anything-but: the list must not be empty"),
        ({"x": [{"anything-but": {"numeric": [">", 1]}}]}, "x: anything-but takes a value, a list"),
        ({"x": [{"anything-but": {"prefix": 1}}]}, "x: anything-but prefix takes a string"),
        ({"x": [{"anything-but": {"prefix": ""}}]}, "x: anything-but prefix: an empty prefix is not allowed"),
        ({"x": [{"anything-but": {"suffix": ["a", ""]}}]}, "x: anything-but suffix: an empty suffix is not"),
        ({"x": [{"anything-but": {"suffix": []}}]}, "x: anything-but suffix: the list must not be empty"),
        ({"x": [{"numeric": [">"]}]}, "x: numeric takes one or two comparisons"),
        ({"x": [{"numeric": 5}]}, "x: numeric takes one or two comparisons"),
        ({"x": [{"numeric": ["<", 5, ">", 0]}]}, "x: numeric: a range is a lower bound then an upper bound"),
        ({"x": [{"numeric": [">", 5, "<", 1]}]}, "x: numeric: the lower bound must be below the upper"),
        ({"x": [{"numeric": ["=", 1, "<", 5]}]}, "x: numeric: unknown or misplaced comparison"),
        ({"x": [{"numeric": ["!=", 1]}]}, "x: numeric: unknown or misplaced comparison"),
        ({"x": [{"numeric": [">", "ten"]}]}, 'x: numeric: bounds must be numbers, got "ten"'),
        ({"x": [{"numeric": [">", True]}]}, "x: numeric: bounds must be numbers, got true"),
        ({"x": [{"numeric": [">", 6e9]}]}, "x: numeric: bounds must be between -5e9 and 5e9"),
        ({"x": [{"numeric": [">", 0.0000001]}]}, "x: numeric: bounds have at most 6 decimal places"),
        ({"x": [{"cidr": "10.0.0.1"}]}, "x: cidr takes an IPv4 or IPv6 block"),
        ({"x": [{"cidr": "10.0.0.0/33"}]}, "x: cidr takes an IPv4 or IPv6 block"),
        ({"x": [{"exists": "yes"}]}, 'x: exists takes true or false, got "yes"'),
        ({"x": [{"contains": "a"}]}, "x: unknown operator 'contains' (operators: prefix"),
        ({"x": [{"prefix": "a", "suffix": "b"}]}, "x: an operator object has exactly one key"),
        ({"x": [{}]}, "x: an operator object has exactly one key"),
        ({"data": {"n": [{"numeric": [">", "x"]}]}}, "data.n: numeric: bounds must be numbers"),
    ],
)
def test_compile_refuses_invalid_operators_naming_path_and_problem(
    pattern: dict[str, Any], message: str
) -> None:
    """An invalid operator is refused at compile time; the message starts with the field path."""
    with pytest.raises(PatternError) as caught:
        compile(pattern)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ({"$or": [{"a": [1]}]}, "$or: $or takes an array of at least two pattern objects"),
        ({"$or": {"a": [1]}}, "$or: $or takes an array of at least two pattern objects"),
        ({"d": {"$or": [{"a": [1]}, {}]}}, "d.$or[1]: each $or branch must be a non-empty pattern object"),
        ({"$or": [{"a": [1]}, "b"]}, "$or[1]: each $or branch must be a non-empty pattern object"),
        ({"$or": [{"a": [1]}, {"b": 2}]}, "b: match values must be in an array"),
    ],
)
def test_compile_refuses_a_malformed_or(pattern: dict[str, Any], message: str) -> None:
    """$or must be an array of two or more non-empty pattern objects."""
    with pytest.raises(PatternError) as caught:
        compile(pattern)
    assert str(caught.value).startswith(message)


def test_compile_refuses_an_or_that_expands_too_far() -> None:
    """Every $or multiplies the alternatives; more than the limit is refused with the fix."""
    branches = [{"a": [i]} for i in range(4)]
    pattern = {f"f{i}": {"$or": branches} for i in range(6)}
    with pytest.raises(PatternError, match="more than 1024 alternatives; split the rule"):
        compile(pattern)

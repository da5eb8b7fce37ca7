"""The rule index returns exactly what matching_rules returns, from few candidates (bus.rule_index)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.patterns import compile
from bus.routing import Rule, TagSelector, matching_rules
from bus.rule_index import RuleIndex


def rule(name: str, pattern: dict[str, Any] | None = None, **tags: list[str]) -> Rule:
    """A rule named `name` targeting itself, with a compiled pattern (default: match everything)."""
    selector = TagSelector(**{kind: frozenset(values) for kind, values in tags.items()})
    return Rule(name=name, pattern=compile(pattern or {}), targets=(name,), tags=selector)


def names(index: RuleIndex, event: dict[str, Any]) -> list[str]:
    """Names of the rules the index matches, checked against the linear matcher first."""
    found = index.matching(event)
    assert found == matching_rules(event, index.rules)
    return [found_rule.name for found_rule in found]


def candidate_names(index: RuleIndex, event: dict[str, Any], *, with_data: bool = True) -> list[str]:
    """Names of the candidate rules for the event."""
    return [index.rules[position].name for position in index.candidates(event, with_data=with_data)]


def test_exact_type_anchor_keeps_other_types_out_of_the_candidates() -> None:
    """A rule on `type` is a candidate only for events of one of its types."""
    index = RuleIndex([rule("a", {"type": ["a", "a2"]}), rule("b", {"type": ["b"]})])
    assert candidate_names(index, {"type": "a2"}) == ["a"]
    assert names(index, {"type": "b"}) == ["b"]
    assert candidate_names(index, {"type": "c"}) == []
    assert candidate_names(index, {}) == []
    assert index.unanchored == ()


def test_nested_anchor_in_data() -> None:
    """A nested exact field (`data.kind`) anchors the rule, arrays of objects included."""
    index = RuleIndex([rule("jpeg", {"data": {"kind": ["jpeg"], "size": [{"numeric": [">", 10]}]}})])
    assert names(index, {"data": {"kind": "jpeg", "size": 11}}) == ["jpeg"]
    assert candidate_names(index, {"data": {"kind": "png", "size": 11}}) == []
    assert names(index, {"data": [{"kind": "png"}, {"kind": "jpeg", "size": 20}]}) == ["jpeg"]
    assert names(index, {"data": [{"kind": "jpeg", "size": 1}, {"kind": "png", "size": 20}]}) == []
    assert names(index, {"data": [[{"kind": ["x", "jpeg"], "size": 11}]]}) == ["jpeg"]
    assert candidate_names(index, {"data": "jpeg"}) == []


@pytest.mark.parametrize(
    ("pattern", "value", "matched"),
    [
        ([1], 1, True),
        ([1], 1.0, True),
        ([1.0], 1, True),
        ([1], "1", False),
        (["1"], 1, False),
        (["1"], "1", True),
        ([1], True, False),
        ([True], 1, False),
        ([True], True, True),
        ([False], 0, False),
        ([0], False, False),
        ([None], None, True),
        ([None], "", False),
        ([""], None, False),
        ([{"numeric": ["=", 2.5]}], 2.5, True),
        ([{"numeric": ["=", 3]}], 3.0, True),
        ([{"numeric": ["=", 3]}], "3", False),
        ([{"numeric": ["=", 0.1]}], 0.1, True),
        ([{"numeric": ["=", 1]}], True, False),
        ([1, "x", None], [5, None], True),
        ([1], [[2, [1.0]]], True),
        ([1], [], False),
    ],
)
def test_exact_values_compare_as_patterns_do(pattern: list[Any], value: Any, matched: bool) -> None:
    """Numbers by value (1 == 1.0), never a string or a boolean; null is a value; arrays: any element."""
    index = RuleIndex([rule("r", {"x": pattern})])
    assert index.unanchored == ()
    assert names(index, {"x": value}) == (["r"] if matched else [])


def test_null_is_not_missing() -> None:
    """[null] needs a null value: a missing field or parent is no candidate; exists false is unanchored."""
    index = RuleIndex(
        [rule("null", {"data": {"x": [None]}}), rule("absent", {"data": {"x": [{"exists": False}]}})]
    )
    assert index.unanchored == (1,)
    assert names(index, {"data": {"x": None}}) == ["null"]
    assert names(index, {"data": {}}) == ["absent"]
    assert names(index, {}) == ["absent"]
    assert names(index, {"data": {"x": [None, 1]}}) == ["null"]


@pytest.mark.parametrize(
    ("spec", "hits", "misses"),
    [
        ({"prefix": "img/"}, ["img/a.jpg", "img/"], ["IMG/a", "im", "", 5, None]),
        ({"prefix": ""}, ["", "x"], [0, None, True]),
        ({"suffix": ".jpg"}, ["a.jpg", ".jpg"], ["a.JPG", "jpg", "a.jpg.png", 1]),
        ({"suffix": ""}, ["", "x"], [0, None, False]),
        ({"equals-ignore-case": "Alice"}, ["alice", "ALICE", "aLiCe"], ["alic", "alice ", 1]),
        ({"prefix": {"equals-ignore-case": "IMG/"}}, ["img/a", "Img/b", "IMG/"], ["im", "xIMG/"]),
        ({"suffix": {"equals-ignore-case": ".JPG"}}, ["a.jpg", "B.Jpg"], ["a.png", "jpg"]),
        ({"equals-ignore-case": "\u0130"}, ["\u0130", "i\u0307"], ["i", "I"]),
        ({"prefix": {"equals-ignore-case": "i\u0307x"}}, ["\u0130x", "i\u0307xy"], ["ix"]),
    ],
)
def test_string_operator_anchors(spec: dict[str, Any], hits: list[Any], misses: list[Any]) -> None:
    """prefix, suffix and equals-ignore-case (alone or combined) anchor a rule and find exactly its hits."""
    index = RuleIndex([rule("r", {"source": [spec]})])
    assert index.unanchored == ()
    for value in hits:
        assert names(index, {"source": value}) == ["r"], value
    for value in misses:
        assert candidate_names(index, {"source": value}) == [], value


def test_mixed_leaf_is_anchored_under_every_key() -> None:
    """A field mixing exact, prefix and suffix values is one anchor with a key per value."""
    index = RuleIndex([rule("r", {"source": ["exact", {"prefix": "p."}, {"suffix": ".s"}, 7]})])
    for value in ["exact", "p.x", "x.s", 7.0]:
        assert names(index, {"source": value}) == ["r"]
    assert candidate_names(index, {"source": "other"}) == []


@pytest.mark.parametrize(
    "spec",
    [
        [{"anything-but": "a"}],
        [{"anything-but": {"prefix": "a"}}],
        [{"numeric": [">", 1]}],
        [{"exists": True}],
        [{"exists": False}],
        ["a", {"exists": False}],
        ["a", {"anything-but": "b"}],
        [{"wildcard": "a*"}],
        [{"cidr": "10.0.0.0/8"}],
        [float("nan")],
    ],
)
def test_operators_without_a_finite_key_set_leave_the_rule_unanchored(spec: list[Any]) -> None:
    """anything-but, ranges, exists, wildcard and cidr never anchor: the rule is checked for every event."""
    index = RuleIndex([rule("r", {"x": spec})])
    assert index.unanchored == (0,)
    for value in ["a", "b", 1, 10, "10.1.2.3", None]:
        assert candidate_names(index, {"x": value}) == ["r"]
        names(index, {"x": value})


def test_an_unanchored_field_beside_an_anchored_one_does_not_matter() -> None:
    """One anchored field is enough: anything-but beside type still indexes the rule by type."""
    index = RuleIndex([rule("r", {"type": ["t"], "source": [{"anything-but": "x"}]})])
    assert index.unanchored == ()
    assert names(index, {"type": "t", "source": "y"}) == ["r"]
    assert names(index, {"type": "t", "source": "x"}) == []


def test_or_alternatives_are_each_anchored() -> None:
    """Each $or alternative is anchored on its own path; the rule is found through either."""
    index = RuleIndex([rule("r", {"$or": [{"type": ["t"]}, {"data": {"kind": ["k"]}}]})])
    assert index.unanchored == ()
    assert names(index, {"type": "t"}) == ["r"]
    assert names(index, {"type": "u", "data": {"kind": "k"}}) == ["r"]
    assert candidate_names(index, {"type": "u", "data": {"kind": "j"}}) == []


def test_or_with_an_unanchored_alternative_leaves_the_rule_unanchored() -> None:
    """When one $or alternative has no anchor, the rule is a candidate for every event."""
    index = RuleIndex([rule("r", {"$or": [{"type": ["t"]}, {"source": [{"anything-but": "s"}]}]})])
    assert index.unanchored == (0,)
    assert names(index, {"type": "u", "source": "x"}) == ["r"]
    assert names(index, {"type": "u", "source": "s"}) == []


def test_nested_or_expands_to_anchored_alternatives() -> None:
    """$or inside an object yields alternatives that keep the field beside it as their anchor."""
    index = RuleIndex(
        [rule("r", {"type": ["t"], "data": {"$or": [{"a": [1]}, {"b": [{"anything-but": 1}]}]}})]
    )
    assert index.unanchored == ()
    assert names(index, {"type": "t", "data": {"b": 2}}) == ["r"]
    assert candidate_names(index, {"type": "u", "data": {"b": 2}}) == []


def test_order_is_rule_order_and_duplicates_are_kept() -> None:
    """Matches come in rule order, and a rule listed twice is matched twice, as matching_rules does."""
    shared = rule("shared", {"type": ["t"]})
    rules = [
        rule("everything"),
        shared,
        rule("by-source", {"source": [{"prefix": "s"}]}),
        shared,
        rule("not-x", {"type": [{"anything-but": "x"}]}),
        rule("type-again", {"type": ["t", "u"]}),
    ]
    index = RuleIndex(rules)
    assert names(index, {"type": "t", "source": "src"}) == [
        "everything",
        "shared",
        "by-source",
        "shared",
        "not-x",
        "type-again",
    ]
    assert names(index, {"type": "x"}) == ["everything"]


def test_tag_selectors_filter_candidates() -> None:
    """Candidates are only rules whose tag selector accepts the event's `tags` extension."""
    index = RuleIndex(
        [
            rule("prod", {"type": ["t"]}, all=["prod"]),
            rule("not-test", {}, none=["test"]),
            rule("eu-or-us", {"type": ["t"]}, any=["eu", "us"]),
        ]
    )
    assert names(index, {"type": "t", "tags": "prod,eu"}) == ["prod", "not-test", "eu-or-us"]
    assert names(index, {"type": "t", "tags": "test,us"}) == ["eu-or-us"]
    assert candidate_names(index, {"type": "u", "tags": "test"}) == []


def test_anchors_prefer_attributes_so_data_is_decoded_only_for_candidates() -> None:
    """A rule with `type` and `data` fields is anchored on type: without data it is no candidate elsewhere."""
    index = RuleIndex(
        [
            rule("typed", {"type": ["t"], "data": {"kind": ["k"]}}),
            rule("data-only", {"data": {"kind": ["k"]}}),
            rule("attributes", {"source": ["s"]}),
        ]
    )
    assert [index.needs_data(position) for position in range(3)] == [True, True, False]
    assert candidate_names(index, {"type": "u", "source": "s"}, with_data=False) == [
        "data-only",
        "attributes",
    ]
    assert candidate_names(index, {"type": "t"}, with_data=False) == ["typed", "data-only"]
    assert candidate_names(index, {"type": "t", "data": {"kind": "x"}}) == ["typed"]
    assert candidate_names(index, {"type": "u", "data": {"kind": "k"}}, with_data=False) == ["data-only"]


def test_anchors_prefer_few_exact_keys_over_affixes() -> None:
    """Of `source` prefix and `subject` exact, the exact key anchors the rule."""
    index = RuleIndex([rule("r", {"source": [{"prefix": "s"}], "subject": ["a"]})])
    assert candidate_names(index, {"source": "s1", "subject": "b"}) == []
    assert candidate_names(index, {"source": "x", "subject": "a"}) == ["r"]


def routed(index: RuleIndex, event: dict[str, Any]) -> list[Rule]:
    """The router's two phases: candidates on attributes, `data` used only when a candidate needs it."""
    attributes = {name: value for name, value in event.items() if name != "data"}
    positions = index.candidates(attributes, with_data=False)
    if any(index.needs_data(position) for position in positions):
        return index.select(event, positions)
    return index.select(attributes, positions)


def test_two_phase_routing_equals_matching_rules() -> None:
    """Deciding attribute-only rules without `data` gives the same rules as matching the whole event."""
    rules = [
        rule("a", {"type": ["t"]}),
        rule("b", {"type": ["t"], "data": {"n": [1]}}),
        rule("c", {"data": {"n": [{"numeric": [">", 0]}]}}),
    ]
    index = RuleIndex(rules)
    events: list[dict[str, Any]] = [
        {"type": "t", "data": {"n": 1}},
        {"type": "u", "data": {"n": 2}},
        {"type": "t"},
    ]
    for event in events:
        assert routed(index, event) == matching_rules(event, rules)


def test_empty_index_and_event_without_fields() -> None:
    """No rules match nothing; an empty event meets only unanchored rules."""
    assert RuleIndex([]).matching({"type": "t"}) == []
    index = RuleIndex([rule("any"), rule("t", {"type": ["t"]})])
    assert names(index, {}) == ["any"]


# --- properties: the index agrees with matching_rules on generated rules and events -------------

TOP = ["type", "source", "x"]
INNER = ["kind", "n"]
TAGS = ["prod", "eu", "test"]
STRINGS = st.sampled_from(["a", "ab", "b", "", "A", "ba", "Ab", "AB", "\u0130", "i\u0307"])
NUMBERS = st.sampled_from([1, 0, 1.0, 2.5, -1, 3, 3.0])
SCALARS = st.one_of(STRINGS, NUMBERS, st.booleans(), st.none())

UNANCHORED: st.SearchStrategy[Any] = st.one_of(
    st.one_of(STRINGS, NUMBERS, st.lists(STRINGS, min_size=1, max_size=2)).map(lambda a: {"anything-but": a}),
    NUMBERS.map(lambda n: {"numeric": [">=", n]}),
    st.booleans().map(lambda b: {"exists": b}),
)
ITEMS: st.SearchStrategy[Any] = st.one_of(
    SCALARS,
    SCALARS,
    STRINGS.map(lambda s: {"prefix": s}),
    STRINGS.map(lambda s: {"suffix": s}),
    STRINGS.map(lambda s: {"equals-ignore-case": s}),
    STRINGS.map(lambda s: {"prefix": {"equals-ignore-case": s}}),
    STRINGS.map(lambda s: {"suffix": {"equals-ignore-case": s}}),
    NUMBERS.map(lambda n: {"numeric": ["=", n]}),
    UNANCHORED,
)
"""Pattern array items: mostly kinds the index keys on, so that generated rules are mostly anchored."""
LEAF = st.lists(ITEMS, min_size=1, max_size=3)
INNER_FIELDS = st.dictionaries(st.sampled_from(INNER), LEAF, min_size=1, max_size=2)
INNER_OBJECTS = st.one_of(
    INNER_FIELDS,
    INNER_FIELDS,
    st.tuples(INNER_FIELDS, st.lists(INNER_FIELDS, min_size=2, max_size=2)).map(
        lambda pair: {**pair[0], "$or": pair[1]}
    ),
)
TOP_FIELDS = st.dictionaries(
    st.sampled_from([*TOP, "data"]), st.one_of(LEAF, LEAF, INNER_OBJECTS), min_size=1, max_size=3
)
PATTERNS = st.one_of(
    TOP_FIELDS,
    TOP_FIELDS,
    st.tuples(TOP_FIELDS, st.lists(TOP_FIELDS, min_size=2, max_size=3)).map(
        lambda pair: {**pair[0], "$or": pair[1]}
    ),
)
SELECTORS: st.SearchStrategy[dict[str, list[str]]] = st.one_of(
    st.just({}),
    st.just({}),
    st.dictionaries(
        st.sampled_from(["all", "any", "none"]), st.lists(st.sampled_from(TAGS), min_size=1, max_size=2)
    ),
)


VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from([*INNER, "data"]), inner, max_size=3)
    ),
    max_leaves=6,
)
ONE_IN_FOUR = st.sampled_from([True, False, False, False])


def one_in_four(draw: st.DrawFn) -> bool:
    """True for about one draw in four."""
    return draw(ONE_IN_FOUR)


RANDOM_EVENTS = st.dictionaries(st.sampled_from([*TOP, "data"]), VALUES, max_size=4)


def hit(draw: st.DrawFn, item: Any) -> Any:
    """A value that the pattern array item probably accepts (operators such as anything-but may miss)."""
    if not isinstance(item, dict):
        return draw(st.sampled_from([item, float(item)])) if type(item) in (int, float) else item
    ((op, arg),) = item.items()
    if op == "prefix":
        text = arg["equals-ignore-case"].upper() if isinstance(arg, dict) else arg
        return text + draw(STRINGS)
    if op == "suffix":
        text = arg["equals-ignore-case"].upper() if isinstance(arg, dict) else arg
        return draw(STRINGS) + text
    if op == "equals-ignore-case":
        return draw(st.sampled_from([arg, arg.upper(), arg.swapcase()]))
    if op == "numeric":
        return arg[1] + draw(st.sampled_from([0, 0.0, 1]))
    return draw(SCALARS)


def satisfying(draw: st.DrawFn, pattern: dict[str, Any]) -> dict[str, Any]:
    """An object that probably matches the pattern: values taken from it, sometimes inside arrays."""
    made: dict[str, Any] = {}
    for name, spec in pattern.items():
        if name == "$or":
            value: Any = satisfying(draw, draw(st.sampled_from(spec)))
            made = both(made, value)
            continue
        if isinstance(spec, dict):
            value = satisfying(draw, spec)
        else:
            item = draw(st.sampled_from(spec))
            if item == {"exists": False}:
                continue
            value = hit(draw, item)
        if one_in_four(draw):
            value = [draw(VALUES), value]
        made = both(made, {name: value})
    return made


def both(left: Any, right: Any) -> Any:
    """A value meeting what each one meets: objects merged field by field, other values side by side."""
    if not (isinstance(left, dict) and isinstance(right, dict)):
        return [left, right]
    merged = dict(left)
    for name, value in right.items():
        merged[name] = both(left[name], value) if name in left else value
    return merged


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Rule], dict[str, Any]]:
    """1-8 rules (some listed twice) and an event: random, or built to match one of them, maybe spoilt."""
    rules: list[Rule] = []
    patterns: list[dict[str, Any]] = []
    for number in range(draw(st.integers(1, 8))):
        if rules and one_in_four(draw):
            rules.append(draw(st.sampled_from(rules)))
            continue
        pattern = {} if one_in_four(draw) and one_in_four(draw) else draw(PATTERNS)
        patterns.append(pattern)
        rules.append(rule(f"r{number}", pattern, **draw(SELECTORS)))
    event = draw(RANDOM_EVENTS)
    if not one_in_four(draw):
        event = {**event, **satisfying(draw, draw(st.sampled_from(patterns)))}
        if event and one_in_four(draw):
            event[draw(st.sampled_from(sorted(event)))] = draw(VALUES)
    tags = draw(st.none() | st.lists(st.sampled_from(TAGS)).map(",".join))
    return rules, event if tags is None else {**event, "tags": tags}


@settings(max_examples=400, deadline=None, derandomize=True)
@given(case=cases())
def test_index_agrees_with_matching_rules(case: tuple[list[Rule], dict[str, Any]]) -> None:
    """For generated rule sets and events, RuleIndex.matching returns matching_rules' rules, in order."""
    rules, event = case
    found = RuleIndex(rules).matching(event)
    expected = matching_rules(event, rules)
    assert found == expected
    assert [id(found_rule) for found_rule in found] == [id(expected_rule) for expected_rule in expected]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(case=cases())
def test_two_phase_routing_agrees_with_matching_rules(case: tuple[list[Rule], dict[str, Any]]) -> None:
    """Candidates without `data` hold every candidate with it, and the two-phase result is exact."""
    rules, event = case
    index = RuleIndex(rules)
    attributes = {name: value for name, value in event.items() if name != "data"}
    assert set(index.candidates(event)) <= set(index.candidates(attributes, with_data=False))
    assert routed(index, event) == matching_rules(event, rules)

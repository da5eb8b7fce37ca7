"""Decisions remembered per attribute values give exactly `matching_rules`' answer, every time."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from bus.decisions import MAX_KEYS, Decisions, matching
from bus.patterns import compile as compile_pattern
from bus.routing import Rule, TagSelector, matching_rules
from bus.rule_index import RuleIndex
from tests.unit.test_rule_index import VALUES, cases


def rule(name: str, pattern: dict[str, Any]) -> Rule:
    return Rule(name=name, pattern=compile_pattern(pattern), targets=("f",), tags=TagSelector())


@settings(max_examples=300, deadline=None, derandomize=True)
@given(case=cases(), other_data=VALUES)
def test_remembered_decisions_agree_with_matching_rules(
    case: tuple[list[Rule], dict[str, Any]], other_data: Any
) -> None:
    """The first event decides afresh, the next with the same attributes reuses it; both are exact."""
    rules, event = case
    decisions = Decisions(RuleIndex(rules))
    assert list(matching(decisions, event)) == matching_rules(event, rules)
    again = {**event, "data": other_data}
    assert list(matching(decisions, again)) == matching_rules(again, rules)
    assert list(matching(decisions, event)) == matching_rules(event, rules)


def test_the_attribute_part_is_decided_once_per_key() -> None:
    decisions = Decisions(RuleIndex([rule("t", {"type": ["a"]}), rule("d", {"data": {"n": [1]}})]))
    first = decisions.decide({"type": "a", "id": "1"})
    assert decisions.decide({"type": "a", "id": "2"}) is first
    assert (first.matched, first.pending, first.needs_value) == ((0,), (1,), True)
    assert [r.name for r in decisions.finish({"type": "a", "data": {"n": 1}}, first)] == ["t", "d"]
    assert [r.name for r in decisions.finish({"type": "a", "data": {"n": 2}}, first)] == ["t"]


def test_true_and_one_are_decided_apart() -> None:
    """True == 1 in Python, and hashes alike; a pattern's true never matches the number 1."""
    decisions = Decisions(RuleIndex([rule("flag", {"flag": [True]}), rule("zero", {"flag": [0]})]))
    assert [r.name for r in matching(decisions, {"flag": True})] == ["flag"]
    assert [r.name for r in matching(decisions, {"flag": 1})] == []
    assert [r.name for r in matching(decisions, {"flag": 0})] == ["zero"]
    assert [r.name for r in matching(decisions, {"flag": False})] == []


def _twin(value: Any) -> Any:
    """A value equal to `value` in Python but not to EventBridge: 1 for true, false for 0."""
    if type(value) is bool:
        return int(value)
    if type(value) is int and value in {0, 1}:
        return value == 1
    return value


@settings(max_examples=300, deadline=None, derandomize=True)
@given(case=cases())
def test_an_event_and_its_boolean_number_twin_are_each_decided_right(
    case: tuple[list[Rule], dict[str, Any]],
) -> None:
    rules, event = case
    twin = {name: _twin(value) for name, value in event.items()}
    decisions = Decisions(RuleIndex(rules))
    assert list(matching(decisions, event)) == matching_rules(event, rules)
    assert list(matching(decisions, twin)) == matching_rules(twin, rules)


def test_rules_on_unique_attributes_are_never_remembered() -> None:
    decisions = Decisions(RuleIndex([rule("one", {"id": ["1"]})]))
    assert decisions.decide({"id": "1"}) is not decisions.decide({"id": "1"})
    assert [r.name for r in matching(decisions, {"id": "1"})] == ["one"]


def test_an_unhashable_attribute_is_decided_afresh_and_the_memo_is_bounded() -> None:
    decisions = Decisions(RuleIndex([rule("x", {"x": [1]})]))
    assert [r.name for r in matching(decisions, {"x": [1, 2]})] == ["x"]
    for n in range(MAX_KEYS + 5):
        decisions.decide({"x": n})
    assert len(decisions._memo) == MAX_KEYS
    assert [r.name for r in matching(decisions, {"x": 1})] == ["x"]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(case=cases(), other_data=VALUES)
def test_data_checks_leave_only_the_data_to_test_and_agree_with_finish(
    case: tuple[list[Rule], dict[str, Any]], other_data: Any
) -> None:
    """Checked once against the attributes, the pending rules' data tests give finish's answer."""
    rules, event = case
    attributes = {name: value for name, value in event.items() if name not in ("data", "data_base64")}
    decisions = Decisions(RuleIndex(rules))
    decision = decisions.decide(attributes)
    checks = decisions.data_checks(decision, attributes)
    assert [position for position, _ in checks] == sorted(position for position, _ in checks)
    for data in (event.get("data"), other_data, None):
        alone = {} if data is None else {"data": data}
        found = [p for p, test in checks if test is None or test(alone)]
        expected = decisions.finish({**attributes, **alone}, decision)
        assert [rules[p] for p in sorted((*decision.matched, *found))] == expected

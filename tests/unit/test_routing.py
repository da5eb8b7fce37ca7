"""Routing decisions: tag selectors and rule fan-out (bus.routing)."""

from __future__ import annotations

from typing import Any

import pytest

from bus.patterns import compile
from bus.routing import Rule, TagSelector, event_tags, matching_rules, route


def selector(**tags: list[str]) -> TagSelector:
    """A TagSelector from lists of tags."""
    return TagSelector(**{name: frozenset(values) for name, values in tags.items()})


def rule(name: str, targets: list[str], pattern: dict[str, Any] | None = None, **tags: list[str]) -> Rule:
    """A rule with a compiled pattern (default: match everything)."""
    return Rule(name=name, pattern=compile(pattern or {}), targets=tuple(targets), tags=selector(**tags))


@pytest.mark.parametrize(
    ("tags", "event_tags_", "expected"),
    [
        ({}, set(), True),
        ({}, {"anything"}, True),
        ({"all": ["prod", "eu"]}, {"prod", "eu", "media"}, True),
        ({"all": ["prod", "eu"]}, {"prod"}, False),
        ({"all": ["prod"]}, set(), False),
        ({"any": ["eu", "us"]}, {"us"}, True),
        ({"any": ["eu", "us"]}, {"eu", "us"}, True),
        ({"any": ["eu", "us"]}, {"apac"}, False),
        ({"any": ["eu", "us"]}, set(), False),
        ({"none": ["test"]}, {"prod"}, True),
        ({"none": ["test"]}, set(), True),
        ({"none": ["test", "dev"]}, {"prod", "dev"}, False),
        ({"all": ["prod"], "any": ["eu", "us"], "none": ["test"]}, {"prod", "eu"}, True),
        ({"all": ["prod"], "any": ["eu", "us"], "none": ["test"]}, {"prod", "eu", "test"}, False),
        ({"all": ["prod"], "any": ["eu", "us"], "none": ["test"]}, {"prod", "apac"}, False),
        ({"all": ["prod"], "any": ["eu", "us"], "none": ["test"]}, {"eu"}, False),
    ],
)
def test_tag_selector_all_any_none(tags: dict[str, list[str]], event_tags_: set[str], expected: bool) -> None:
    """all: every tag present; any: at least one (when given); none: not one present."""
    assert selector(**tags).accepts(frozenset(event_tags_)) is expected


@pytest.mark.parametrize(
    ("event", "tags"),
    [
        ({"tags": "a, b,,c"}, {"a", "b", "c"}),
        ({"tags": "prod,eu,media"}, {"prod", "eu", "media"}),
        ({"tags": " prod "}, {"prod"}),
        ({"tags": "prod,prod"}, {"prod"}),
        ({"tags": ""}, set()),
        ({"tags": " , ,"}, set()),
        ({}, set()),
        ({"tags": 5}, set()),
        ({"tags": ["prod"]}, set()),
        ({"data": {"tags": "prod"}}, set()),
    ],
)
def test_event_tags_reads_the_comma_separated_tags_extension(event: dict[str, Any], tags: set[str]) -> None:
    """Tags come from the top-level `tags` string, split on commas, trimmed, empties dropped."""
    assert event_tags(event) == frozenset(tags)


def test_route_sends_each_target_once_in_rule_order() -> None:
    """Targets of all matching rules are returned once each, in the order rules and targets list them."""
    rules = [rule("r1", ["b", "a"]), rule("r2", ["a", "c"]), rule("r3", ["c", "b", "d"])]
    assert route({"type": "t"}, rules) == ["b", "a", "c", "d"]


def test_route_skips_rules_whose_pattern_does_not_match() -> None:
    """A rule whose pattern does not match contributes no targets."""
    rules = [
        rule("orders", ["billing"], {"type": ["order.placed"]}),
        rule("uploads", ["thumbnail"], {"type": ["bus.object.created"]}),
    ]
    assert route({"type": "order.placed"}, rules) == ["billing"]
    assert route({"type": "user.created"}, rules) == []


def test_route_skips_rules_whose_tags_do_not_match() -> None:
    """A rule whose pattern matches but whose tag selector refuses the event contributes nothing."""
    rules = [
        rule("prod-only", ["audit"], {"type": ["t"]}, all=["prod"]),
        rule("any", ["log"], {"type": ["t"]}),
    ]
    assert route({"type": "t", "tags": "test"}, rules) == ["log"]
    assert route({"type": "t", "tags": "prod"}, rules) == ["audit", "log"]


def test_route_with_no_rules_goes_nowhere() -> None:
    """With no rules an event has no targets."""
    assert route({"type": "t"}, []) == []


def test_matching_rules_lists_the_matching_rules_in_order() -> None:
    """matching_rules returns the rules that matched, in rule order (for `bus rules explain`)."""
    first = rule("first", ["x"], {"type": ["t"]})
    skipped = rule("skipped", ["y"], {"type": ["other"]})
    last = rule("last", ["z"])
    assert matching_rules({"type": "t"}, [first, skipped, last]) == [first, last]

"""Routing decisions: which targets an event goes to (pure).

`route(event, rules)` takes the event in the CloudEvents JSON format (attributes at the top,
payload under `data`) and returns each matched target once, in rule order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bus.input_transform import InputTransform
from bus.patterns import Pattern

__all__ = ["FlowTag", "Rule", "TagSelector", "event_tags", "explain", "matching_rules", "route"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TagSelector:
    """Rule selector over the event's `tags` extension."""

    all: frozenset[str] = frozenset()
    """Tags the event must all carry."""
    any: frozenset[str] = frozenset()
    """Tags of which the event must carry at least one (ignored when empty)."""
    none: frozenset[str] = frozenset()
    """Tags the event must not carry."""

    def accepts(self, tags: frozenset[str]) -> bool:
        """True when an event with these tags passes the selector."""
        if not self.all <= tags:
            return False
        if self.any and not (self.any & tags):
            return False
        return not (self.none & tags)


@dataclass(frozen=True, slots=True)
class FlowTag:
    """Marks a rule compiled from a flow step (bus.flows): what its targets' events carry."""

    flow: str
    step: str
    starts: bool
    """True for a start step: the run is the matched event's id."""
    join: bool = False
    """True for a join: its target is the joiner, which gathers the run's parts (bus.flow_joiner)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """A routing rule: events matching `pattern` and `tags` go to every target."""

    name: str
    pattern: Pattern
    targets: tuple[str, ...]
    tags: TagSelector = TagSelector()
    # Left out of the hash (a mapping has none) but compared, so rules stay hashable and equal by value.
    transforms: Mapping[str, InputTransform] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    """Target -> how the `data` that target receives is built; targets not listed get the event as is."""
    flow: FlowTag | None = None
    """Set on rules compiled from flows: the router adds the flow's extensions to what it sends."""


def event_tags(event: Mapping[str, Any]) -> frozenset[str]:
    """The event's tags: the comma-separated `tags` extension (SPEC §2)."""
    raw = event.get("tags")
    if not isinstance(raw, str):
        return frozenset()
    return frozenset(tag.strip() for tag in raw.split(",") if tag.strip())


def matching_rules(event: Mapping[str, Any], rules: Iterable[Rule]) -> list[Rule]:
    """The rules an event matches, in order."""
    tags = event_tags(event)
    return [rule for rule in rules if rule.tags.accepts(tags) and rule.pattern.matches(event)]


def route(event: Mapping[str, Any], rules: Sequence[Rule]) -> list[str]:
    """Every target the event goes to, each once, in rule order."""
    targets: dict[str, None] = {}
    for rule in matching_rules(event, rules):
        targets.update(dict.fromkeys(rule.targets))
    return list(targets)


def explain(event: Mapping[str, Any], rule: Rule) -> str | None:
    """None when the rule matches the event, else why not: the tags, or the first field that failed."""
    tags = event_tags(event)
    selector = rule.tags
    if not selector.all <= tags:
        return f"tags: needs all of {sorted(selector.all)}, the event has {sorted(tags)}"
    if selector.any and not (selector.any & tags):
        return f"tags: needs one of {sorted(selector.any)}, the event has {sorted(tags)}"
    if selector.none & tags:
        return (
            f"tags: must carry none of {sorted(selector.none)}, the event has {sorted(selector.none & tags)}"
        )
    return rule.pattern.explain(event)

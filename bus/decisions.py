"""Routing decisions on attributes, remembered (pure): most events repeat a few attribute values.

A rule whose pattern names neither `data` nor `data_base64` is decided by the event's values at
the top-level fields the rules name (`type`, `source`, extensions, the `tags` of tag selectors).
`Decisions.decide(attributes)` keys on exactly those values: the first event with a given key pays
for the index lookup and the pattern checks, later ones pay for one dict lookup. What the key
cannot decide is returned as candidates: the rules that look at the data, checked by `finish`
once the value is decoded.

Fields that differ on every event (`id`, `time`) would make every key new; when a rule names one,
nothing is remembered. At most `MAX_KEYS` keys are kept per rule set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bus.routing import Rule
from bus.rule_index import DATA, RuleIndex

__all__ = ["MAX_KEYS", "Decision", "Decisions", "matching"]

MAX_KEYS = 10_000
"""Most attribute keys remembered per rule set (a new rule set starts empty)."""

_UNIQUE = frozenset({"id", "time"})
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Decision:
    """What the attributes decide."""

    matched: tuple[int, ...]
    """Positions of the attribute-only rules that match, ascending."""
    pending: tuple[int, ...]
    """Positions of the candidate rules that look at the data: `finish` checks them."""
    needs_value: bool
    """True when the value must be decoded: a pending rule, or a matched rule with a transformer."""


class Decisions:
    """The rules of one rule set, decided by attribute key, remembered up to `MAX_KEYS` keys."""

    __slots__ = ("_fields", "_index", "_memo", "_pattern_data", "_transforming")

    def __init__(self, index: RuleIndex) -> None:
        rules = index.rules
        self._index = index
        self._pattern_data = frozenset(p for p in range(len(rules)) if index.needs_data(p))
        self._transforming = frozenset(p for p, rule in enumerate(rules) if rule.transforms)
        named = {name for rule in rules for name in rule.pattern.top_fields} - DATA
        if any(rule.tags.all or rule.tags.any or rule.tags.none for rule in rules):
            named.add("tags")
        self._fields: tuple[str, ...] | None = None if named & _UNIQUE else tuple(sorted(named))
        self._memo: dict[tuple[Any, ...], Decision] = {}

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rule set, in order."""
        return self._index.rules

    def decide(self, attributes: Mapping[str, Any]) -> Decision:
        """What the event's attributes decide (its `data`, if present, is not looked at)."""
        key = self._key(attributes)
        if key is not None:
            known = self._memo.get(key)
            if known is not None:
                return known
        positions = self._index.candidates(attributes, with_data=False)
        rules = self._index.rules
        pattern_data = self._pattern_data
        matched = tuple(
            p for p in positions if p not in pattern_data and rules[p].pattern.matches(attributes)
        )
        pending = tuple(p for p in positions if p in pattern_data)
        needs_value = bool(pending) or not self._transforming.isdisjoint(matched)
        decision = Decision(matched, pending, needs_value)
        if key is not None and len(self._memo) < MAX_KEYS:
            self._memo[key] = decision
        return decision

    def finish(self, event: Mapping[str, Any], decision: Decision) -> list[Rule]:
        """The rules the event matches, in order: the decided ones plus the pending that match `event`."""
        rules = self._index.rules
        if not decision.pending:
            return [rules[p] for p in decision.matched]
        found = [p for p in decision.pending if rules[p].pattern.matches(event)]
        return [rules[p] for p in sorted((*decision.matched, *found))]

    def _key(self, attributes: Mapping[str, Any]) -> tuple[Any, ...] | None:
        fields = self._fields
        if fields is None:
            return None
        key = tuple(attributes.get(name, _MISSING) for name in fields)
        try:
            hash(key)
        except TypeError:  # a list or object extension in a structured event: decide afresh
            return None
        return key


def matching(decisions: Decisions, event: Mapping[str, Any]) -> Sequence[Rule]:
    """The rules an event (with its data) matches: `decide` then `finish` (for tests and tools)."""
    return decisions.finish(event, decisions.decide(event))

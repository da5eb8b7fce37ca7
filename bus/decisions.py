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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bus.patterns import _MISSING as _ABSENT  # what a pattern's nodes take for an absent field
from bus.patterns import _Leaf, _Object
from bus.routing import Rule
from bus.rule_index import DATA, RuleIndex

__all__ = ["MAX_KEYS", "Decision", "Decisions", "matching"]

MAX_KEYS = 10_000
"""Most attribute keys remembered per rule set (a new rule set starts empty)."""

_UNIQUE = frozenset({"id", "time"})
_MISSING: Any = object()

_Test = Callable[[Any], bool]
"""A compiled test of one value (a pattern node's `accepts_field`)."""
_EventTest = Callable[[Mapping[str, Any]], bool]
"""A compiled test of an event (or of an object in it)."""
_Node = _Leaf | _Object
"""A node of a compiled pattern."""


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

    __slots__ = ("_fields", "_index", "_memo", "_pattern_data", "_splits", "_tests", "_transforming")

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
        self._splits: dict[int, tuple[tuple[tuple[tuple[str, _Node], ...], _EventTest | None], ...]] = {}
        self._tests: dict[tuple[int, tuple[int, ...]], _EventTest] = {}

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rule set, in order."""
        return self._index.rules

    @property
    def fields(self) -> tuple[str, ...] | None:
        """The top-level fields whose values decide (`data` aside), sorted; None when one differs
        on every event (`id`, `time`), so that nothing is remembered."""
        return self._fields

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

    def data_checks(
        self, decision: Decision, attributes: Mapping[str, Any]
    ) -> tuple[tuple[int, _EventTest | None], ...]:
        """What is left of `decision`'s pending rules for events with these attributes and no
        `data_base64`: per rule that may still match, in order, its position and a test of the
        event with `data` alone (None: the rule matches whatever the data).

        The attribute fields are checked here, once; per event only the data is looked at. The
        same alternatives left give the same test object, so a caller may remember by it.
        """
        checks: list[tuple[int, _EventTest | None]] = []
        for position in decision.pending:
            left: list[int] = []
            for number, (fields, test) in enumerate(self._split(position)):
                if all(node.accepts_field(attributes.get(name, _ABSENT)) for name, node in fields):
                    if test is None:  # no data field: the rule matches whatever the data
                        checks.append((position, None))
                        break
                    left.append(number)
            else:
                if left:
                    checks.append((position, self._test(position, tuple(left))))
        return tuple(checks)

    def _split(self, position: int) -> tuple[tuple[tuple[tuple[str, _Node], ...], _EventTest | None], ...]:
        """Per alternative of the rule's pattern: its other fields, and the test of its data fields."""
        split = self._splits.get(position)
        if split is None:
            alternatives = self._index.rules[position].pattern.alternatives
            split = tuple(
                (
                    tuple((name, node) for name, node in alternative.fields if name != "data"),
                    _fields_test(data) if (data := _data_fields(alternative.fields)) else None,
                )
                for alternative in alternatives
            )
            self._splits[position] = split
        return split

    def _test(self, position: int, left: tuple[int, ...]) -> _EventTest:
        """The test passed when one of the alternatives numbered `left` passes its data test."""
        test = self._tests.get((position, left))
        if test is None:
            split = self._split(position)
            tests = [split[number][1] for number in left]
            test = _any_of([found for found in tests if found is not None])
            self._tests[position, left] = test
        return test

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
        for value in key:
            if type(value) is bool:
                # true == 1 and hashes alike, but a pattern's true never matches the number 1.
                key = tuple((bool, value) if type(value) is bool else value for value in key)
                break
        try:
            hash(key)
        except TypeError:  # a list or object extension in a structured event: decide afresh
            return None
        return key


def _any_of(alternatives: Sequence[_EventTest]) -> _EventTest:
    """One test passed when one of `alternatives` is."""
    if len(alternatives) == 1:
        return alternatives[0]
    if len(alternatives) == 2:  # the usual `$or` of two: no loop at all
        first, second = alternatives
        return lambda event: first(event) or second(event)

    def any_passes(event: Mapping[str, Any]) -> bool:
        for test in alternatives:  # noqa: SIM110 - hot path: a loop allocates no generator
            if test(event):
                return True
        return False

    return any_passes


def _data_fields(fields: tuple[tuple[str, _Node], ...]) -> tuple[tuple[str, _Test], ...]:
    """The compiled tests of the `data` fields among an alternative's fields."""
    return tuple((name, _compiled(node)) for name, node in fields if name == "data")


def _fields_test(fields: tuple[tuple[str, _Test], ...]) -> _EventTest:
    """A test of an object: each field's value (or `_ABSENT`) passes its test."""
    if len(fields) == 1:
        ((name, test),) = fields
        return lambda found: test(found.get(name, _ABSENT))

    def accepts(found: Mapping[str, Any]) -> bool:
        for name, test in fields:  # noqa: SIM110 - hot path: a loop allocates no generator
            if not test(found.get(name, _ABSENT)):
                return False
        return True

    return accepts


def _compiled(node: _Node) -> _Test:
    """`node.accepts_field`, cut short for the usual values: a plain object, a string, a number."""
    if isinstance(node, _Leaf):
        return _leaf_test(node)
    # For one object, accepts_at(value) is accepts(value): each field's test in turn.
    general = node.accepts_at
    if len(node.fields) == 1:  # a path such as data.customer.tier: one call per level
        ((name, child),) = node.fields
        test = _compiled(child)
        return lambda value: test(value.get(name, _ABSENT)) if type(value) is dict else general(value)
    on_object = _fields_test(tuple((name, _compiled(child)) for name, child in node.fields))
    return lambda value: on_object(value) if type(value) is dict else general(value)


def _leaf_test(leaf: _Leaf) -> _Test:
    """`leaf.accepts`, without its dispatch for a string (or, with one matcher, a number)."""
    general = leaf.accepts
    strings = leaf.strings
    if strings is not None:
        return lambda value: value in strings if type(value) is str else general(value)
    if len(leaf.matchers) != 1:
        return general
    one = leaf.matchers[0].accepts

    def accepts(value: Any) -> bool:
        kind = type(value)
        if kind is str or kind is int or kind is float:  # one scalar: its one matcher decides
            return one(value)
        return general(value)

    return accepts


def matching(decisions: Decisions, event: Mapping[str, Any]) -> Sequence[Rule]:
    """The rules an event (with its data) matches: `decide` then `finish` (for tests and tools)."""
    return decisions.finish(event, decisions.decide(event))

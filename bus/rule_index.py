"""An index over routing rules: the few rules an event may match, without trying every rule (pure).

`RuleIndex(rules).matching(event)` returns exactly `bus.routing.matching_rules(event, rules)`, the
same rules in the same order, while looking at a handful of candidates instead of every rule.

Like aws/event-ruler's state machine, cut down to one step: every `$or` alternative of a rule's
pattern gets an *anchor*, a field path (`type`, `data.kind`) at which the alternative matches only
when one of the event's values is among a finite set of keys: exact values and `numeric` `=` (keyed
by value, so 1 and 1.0 are one key, a boolean never a number), `equals-ignore-case` (keyed lower-case),
and `prefix` / `suffix` (keyed by text, looked up by the event string's head or tail of each indexed
length). Of an alternative's anchors the index keeps the best by, in turn: outside `data`, exact
before prefix/suffix, the longer shortest affix, fewer keys, `type`, shallower. An alternative
without one (`anything-but`, `exists`, `numeric` ranges, `wildcard`, `cidr`, an empty pattern)
makes its rule a candidate for every event.

An event looks up its values at the indexed paths only, walking arrays and objects in arrays as
bus.patterns does; the rules found plus the always-candidates, less those whose tag selector refuses
the event, are then checked with their full pattern in rule order. An anchor is a necessary condition
and never a sufficient one, so a loose key costs one pattern check, never a wrong answer.

A router that decodes `data` only when it must works in two phases:

    positions = index.candidates(attributes, with_data=False)  # `data` anchors count as hits
    if any(index.needs_data(position) for position in positions):
        event = ...  # the attributes with `data` decoded
    matched = index.select(event, positions)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bus.pattern_ops import Matcher, _Exact, _IgnoreCase, _Numeric, _Prefix, _Suffix
from bus.patterns import _Leaf, _Object, _objects, _scalars
from bus.routing import Rule, TagSelector, event_tags

__all__ = ["DATA", "RuleIndex"]

DATA = frozenset({"data", "data_base64"})
"""The CloudEvents members that hold the payload: the top-level fields a router may not decode."""

_ABSENT: Any = object()
_TRUE = ("boolean", True)
_FALSE = ("boolean", False)

_EXACT, _FOLDED, _PREFIX, _FOLDED_PREFIX, _SUFFIX, _FOLDED_SUFFIX = range(6)
_AFFIXES = frozenset({_PREFIX, _FOLDED_PREFIX, _SUFFIX, _FOLDED_SUFFIX})

Positions = tuple[int, ...]


def _key(value: Any) -> Any:
    """The lookup key of an exact value: numbers by value (1 == 1.0), booleans apart from numbers."""
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    return value


def _entry(matcher: Matcher) -> tuple[int, Any] | None:
    """(kind, key) when the matcher accepts only values with that key, else None."""
    if isinstance(matcher, _Exact):
        return _exact_entry(matcher.value)
    if isinstance(matcher, _Numeric):
        # Only `["=", n]` has low == high (ranges need low < high). It accepts the numbers whose
        # shortest repr is n; n has at most 6 decimals within +-5e9, so they are those == float(n).
        low = matcher.low
        return (_EXACT, float(low)) if low is not None and low == matcher.high else None
    if isinstance(matcher, _IgnoreCase):
        return _FOLDED, matcher.lowered
    if isinstance(matcher, _Prefix):
        return (_FOLDED_PREFIX if matcher.ignore_case else _PREFIX), matcher.text
    if isinstance(matcher, _Suffix):
        return (_FOLDED_SUFFIX if matcher.ignore_case else _SUFFIX), matcher.text
    return None


def _exact_entry(value: Any) -> tuple[int, Any] | None:
    """The key of an exact value; None for NaN (it equals nothing) and unhashable YAML oddities (sets)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        hash(value)
    except TypeError:
        return None
    return _EXACT, _key(value)


@dataclass(frozen=True, slots=True)
class _Anchor:
    """A path and the keys of which one must be found there for an alternative to match."""

    path: tuple[str, ...]
    entries: tuple[tuple[int, Any], ...]

    @property
    def rank(self) -> tuple[bool, bool, int, int, bool, int]:
        """Smaller is better: outside `data`, exact, long affixes, few keys, `type`, shallow."""
        affixes = [len(key) for kind, key in self.entries if kind in _AFFIXES]
        return (
            self.path[0] in DATA,
            bool(affixes),
            -min(affixes, default=0),  # `prefix: "com."` is a weaker anchor than `prefix: "/acme/orders/"`
            len(self.entries),
            self.path != ("type",),
            len(self.path),
        )


def _anchors(alternative: _Object, path: tuple[str, ...] = ()) -> Iterator[_Anchor]:
    """Every anchor of an $or-free conjunction, nested objects included (each field is required)."""
    for name, node in alternative.fields:
        where = (*path, name)
        if isinstance(node, _Object):
            # An object holding an anchored leaf is positive: some object at the field must match it.
            yield from _anchors(node, where)
            continue
        entries = _leaf_entries(node)
        if entries is not None:
            yield _Anchor(where, entries)


def _leaf_entries(leaf: _Leaf) -> tuple[tuple[int, Any], ...] | None:
    """The leaf's keys when every matcher has one (none accepts absence), else None."""
    entries = [_entry(matcher) for matcher in leaf.matchers]
    if any(entry is None for entry in entries):
        return None
    return tuple(dict.fromkeys(entry for entry in entries if entry is not None))


class _Node:
    """One path of the index: its key tables and the paths one field deeper."""

    __slots__ = ("affixes", "children", "exact", "folded", "folded_affixes", "texts")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.exact: dict[Any, Positions] = {}
        self.folded: dict[str, Positions] = {}
        self.affixes: tuple[_Affixes, ...] = ()
        self.folded_affixes: tuple[_Affixes, ...] = ()
        self.texts = False
        """True when a string may hit more than `exact` (ignore-case or affix tables)."""

    def collect(self, value: Any, hits: set[int]) -> None:
        """Add the positions found for the event's value at this path and below it."""
        if type(value) is str:  # the usual case: a string attribute, looked up directly
            found = self.exact.get(value)
            if found:
                hits.update(found)
            if self.texts:
                self._collect_text(value, hits)
            return
        if self.exact or self.texts:
            # A lone scalar skips _scalars' generator; arrays are taken apart by it.
            items = _scalars(value) if isinstance(value, list | Mapping) else (value,)
            for item in items:
                try:
                    found = self.exact.get(_key(item))
                except TypeError:  # an unhashable value equals no pattern value
                    found = None
                if found:
                    hits.update(found)
                if self.texts and isinstance(item, str):
                    self._collect_text(item, hits)
        if self.children:
            for found_object in _objects(value):
                for name, child in self.children.items():
                    inner = found_object.get(name, _ABSENT)
                    if inner is not _ABSENT:
                        child.collect(inner, hits)

    def _collect_text(self, text: str, hits: set[int]) -> None:
        for affixes in self.affixes:
            affixes.collect(text, hits)
        if self.folded or self.folded_affixes:
            lowered = text.lower()
            found = self.folded.get(lowered)
            if found:
                hits.update(found)
            for affixes in self.folded_affixes:
                affixes.collect(lowered, hits)


@dataclass(frozen=True, slots=True)
class _Affixes:
    """Prefix or suffix texts by length, looked up with the string's head or tail of each length."""

    suffix: bool
    by_length: tuple[tuple[int, dict[str, Positions]], ...]
    """Ascending by length."""

    def collect(self, text: str, hits: set[int]) -> None:
        size = len(text)
        for length, table in self.by_length:
            if length > size:
                return
            found = table.get(text[size - length :] if self.suffix else text[:length])
            if found:
                hits.update(found)


class RuleIndex:
    """Rules indexed by their patterns' anchors; `matching(event)` equals `matching_rules(event, rules)`."""

    __slots__ = (
        "_always",
        "_always_without_data",
        "_data",
        "_root",
        "_selectors",
        "_tagged",
        "_top",
        "rules",
    )

    def __init__(self, rules: Sequence[Rule]) -> None:
        """Index the rules; positions in `candidates` and `needs_data` are indexes into `rules`."""
        self.rules: tuple[Rule, ...] = tuple(rules)
        always: list[int] = []
        data_anchored: list[int] = []
        tables: dict[tuple[str, ...], dict[tuple[int, Any], dict[int, None]]] = {}
        for position, rule in enumerate(self.rules):
            alternatives = rule.pattern.alternatives
            chosen = [min(_anchors(alt), key=lambda a: a.rank, default=None) for alt in alternatives]
            anchors = [anchor for anchor in chosen if anchor is not None]
            if len(anchors) < len(chosen):
                always.append(position)
                continue
            for anchor in anchors:
                table = tables.setdefault(anchor.path, {})
                for entry in anchor.entries:
                    table.setdefault(entry, {})[position] = None
                if anchor.path[0] in DATA:
                    data_anchored.append(position)
        self._always: Positions = tuple(always)
        self._always_without_data: Positions = tuple(sorted({*always, *data_anchored}))
        self._root = _build(tables)
        self._top = tuple(self._root.children.items())
        self._data: tuple[bool, ...] = tuple(bool(DATA & rule.pattern.top_fields) for rule in self.rules)
        self._selectors: tuple[TagSelector | None, ...] = tuple(
            None if rule.tags == TagSelector() else rule.tags for rule in self.rules
        )
        self._tagged = any(selector is not None for selector in self._selectors)

    @property
    def unanchored(self) -> Positions:
        """Positions of the rules with an alternative without anchor: candidates for every event."""
        return self._always

    def needs_data(self, position: int) -> bool:
        """True when the rule at `position` names `data` or `data_base64`: attributes cannot decide it."""
        return self._data[position]

    def candidates(self, event: Mapping[str, Any], *, with_data: bool = True) -> list[int]:
        """Ascending positions of the rules whose tags accept the event and whose anchors it hits.

        `with_data=False` ignores the event's `data` and counts every alternative anchored in
        `data` as hit, so the result also holds every candidate of the event with `data` decoded.
        """
        hits = set(self._always if with_data else self._always_without_data)
        for name, node in self._top:
            if not with_data and name in DATA:
                continue
            value = event.get(name, _ABSENT)
            if value is not _ABSENT:
                node.collect(value, hits)
        if not self._tagged:
            return sorted(hits)
        tags = event_tags(event)
        selectors = self._selectors
        return [
            position
            for position in sorted(hits)
            if (selector := selectors[position]) is None or selector.accepts(tags)
        ]

    def select(self, event: Mapping[str, Any], positions: Sequence[int]) -> list[Rule]:
        """The rules at `positions` (from `candidates`) whose full pattern matches, in that order."""
        rules = self.rules
        return [rules[position] for position in positions if rules[position].pattern.matches(event)]

    def matching(self, event: Mapping[str, Any]) -> list[Rule]:
        """The rules the event matches, in order: exactly `bus.routing.matching_rules(event, rules)`."""
        return self.select(event, self.candidates(event))


def _build(tables: Mapping[tuple[str, ...], Mapping[tuple[int, Any], Mapping[int, None]]]) -> _Node:
    """The trie of paths, each node holding frozen key tables of positions."""
    root = _Node()
    for path, table in tables.items():
        node = root
        for name in path:
            node = node.children.setdefault(name, _Node())
        by_kind: dict[int, dict[Any, Positions]] = {}
        for (kind, key), positions in table.items():
            by_kind.setdefault(kind, {})[key] = tuple(positions)
        node.exact = by_kind.get(_EXACT, {})
        node.folded = by_kind.get(_FOLDED, {})
        node.affixes = _affixes(by_kind, _PREFIX, _SUFFIX)
        node.folded_affixes = _affixes(by_kind, _FOLDED_PREFIX, _FOLDED_SUFFIX)
        node.texts = bool(node.folded or node.affixes or node.folded_affixes)
    return root


def _affixes(
    by_kind: Mapping[int, Mapping[Any, Positions]], prefix: int, suffix: int
) -> tuple[_Affixes, ...]:
    """The prefix and suffix tables of one case mode, grouped by text length; empty ones left out."""
    built: list[_Affixes] = []
    for kind, is_suffix in ((prefix, False), (suffix, True)):
        lengths: dict[int, dict[str, Positions]] = {}
        for text, positions in by_kind.get(kind, {}).items():
            lengths.setdefault(len(text), {})[text] = positions
        if lengths:
            built.append(_Affixes(is_suffix, tuple(sorted(lengths.items()))))
    return tuple(built)

"""The EventBridge event-pattern language: compile a pattern once, match many events (pure).

The whole language as aws/event-ruler implements it: exact values, OR arrays, nested fields,
arrays in events (any element; objects matched array-consistently), `$or`, and the operators of
bus.pattern_ops. Semantics and where bus follows event-ruler over AWS's docs:
docs/decisions/patterns.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bus.pattern_ops import Matcher, PatternError, compile_operator, exact, show

__all__ = ["Pattern", "PatternError", "compile"]

MAX_ALTERNATIVES = 1024
"""`$or` expands to at most this many alternatives per pattern."""

_MISSING: Any = object()


def _scalars(value: Any) -> Iterator[Any]:
    """The leaf values at a field: arrays (at any depth) taken apart, objects skipped."""
    if isinstance(value, list):
        for item in value:
            yield from _scalars(item)
    elif value is not _MISSING and not isinstance(value, Mapping):
        yield value


def _objects(value: Any) -> list[Mapping[str, Any]]:
    """The objects at a field: the object itself, or those in an array at any depth."""
    kind = type(value)
    if kind is dict:
        return [value]
    if kind is list:
        return [found for item in value for found in _objects(item)]
    return [value] if isinstance(value, Mapping) else []


@dataclass(frozen=True, slots=True)
class _Miss:
    """Why a field did not match: the leaf and the event's value there."""

    leaf: _Leaf
    value: Any

    def describe(self) -> str:
        got = "the field is missing" if self.value is _MISSING else show(self.value)
        return f"{self.leaf.path}: {self.leaf.shown} did not match {got}"


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A field's array of match values: any one of them may match any leaf value."""

    path: str
    matchers: tuple[Matcher, ...]
    shown: str
    strings: frozenset[str] | None = None
    """When every match value is a plain string: those strings (a set lookup decides)."""

    @property
    def absent_ok(self) -> bool:
        return any(matcher.absent_ok for matcher in self.matchers)

    def accepts(self, value: Any) -> bool:
        """`check(value) is None`, without building the reason (the routing hot path)."""
        kind = type(value)
        if kind is str or kind is int or kind is float or kind is bool or value is None:
            return self._accepts_one(value)
        if kind is list:
            present = False
            for item in _scalars(value):
                present = True
                if self._accepts_one(item):
                    return True
            return not present and self.absent_ok
        if value is _MISSING or kind is dict or isinstance(value, Mapping):
            return self.absent_ok
        return self._accepts_one(value)

    accepts_field = accepts
    """The test `_Object` applies to a field's value (for a leaf: `accepts`)."""

    def _accepts_one(self, item: Any) -> bool:
        strings = self.strings
        if strings is not None:
            return type(item) is str and item in strings
        for matcher in self.matchers:  # noqa: SIM110 - hot path: a loop allocates no generator
            if matcher.accepts(item):
                return True
        return False

    def check(self, value: Any) -> _Miss | None:
        present = False
        for item in _scalars(value):
            present = True
            if any(matcher.accepts(item) for matcher in self.matchers):
                return None
        if not present and self.absent_ok:
            return None
        return _Miss(self, value)


@dataclass(frozen=True, slots=True)
class _Object:
    """An $or-free conjunction of fields; a name may repeat when `$or` branches add to a field."""

    fields: tuple[tuple[str, _Leaf | _Object], ...]
    positive: bool
    """True when some field needs a value present; purely-absence objects check every array element."""

    def check(self, event: Mapping[str, Any]) -> _Miss | None:
        for name, node in self.fields:
            value = event.get(name, _MISSING)
            miss = node.check(value) if isinstance(node, _Leaf) else node.check_at(value)
            if miss is not None:
                return miss
        return None

    def accepts(self, event: Mapping[str, Any]) -> bool:
        """`check(event) is None`, without building the reason."""
        for name, node in self.fields:
            value = event.get(name, _MISSING)
            if not node.accepts_field(value):
                return False
        return True

    def accepts_at(self, value: Any) -> bool:
        """`check_at(value) is None`, without building the reason."""
        candidates = _objects(value)
        if not candidates:
            return self.accepts({})
        if self.positive:
            return any(self.accepts(candidate) for candidate in candidates)
        return all(self.accepts(candidate) for candidate in candidates)

    accepts_field = accepts_at
    """The test a parent `_Object` applies to this object's field (`accepts_at`)."""

    def check_at(self, value: Any) -> _Miss | None:
        """Match the object (or, array-consistently, the objects of an array) at a field."""
        candidates = _objects(value)
        if not candidates:
            return self.check({})
        first: _Miss | None = None
        for candidate in candidates:
            miss = self.check(candidate)
            if self.positive and miss is None:
                return None
            if not self.positive and miss is not None:
                return miss
            first = first or miss
        return first


def _object(fields: tuple[tuple[str, _Leaf | _Object], ...]) -> _Object:
    positive = any(node.positive if isinstance(node, _Object) else not node.absent_ok for _, node in fields)
    return _Object(fields, positive)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern: `matches(event)` takes the event as a JSON-format dict."""

    alternatives: tuple[_Object, ...]
    """The pattern with every `$or` expanded: it matches when any alternative does."""

    def matches(self, event: Mapping[str, Any]) -> bool:
        """True when the event matches the pattern."""
        source = event if type(event) is dict or isinstance(event, Mapping) else {}
        for alternative in self.alternatives:  # noqa: SIM110 - hot path: a loop allocates no generator
            if alternative.accepts(source):
                return True
        return False

    @property
    def top_fields(self) -> frozenset[str]:
        """The top-level field names the pattern looks at (`type`, `source`, `data`, ...)."""
        return frozenset(name for alternative in self.alternatives for name, _ in alternative.fields)

    def explain(self, event: Mapping[str, Any]) -> str | None:
        """None when the event matches, else the first field path and values that failed."""
        miss = self._miss(event)
        if miss is None:
            return None
        if len(self.alternatives) > 1:
            return f"no $or alternative matched; the first failed at {miss.describe()}"
        return miss.describe()

    def _miss(self, event: Mapping[str, Any]) -> _Miss | None:
        source = event if isinstance(event, Mapping) else {}
        first: _Miss | None = None
        for alternative in self.alternatives:
            miss = alternative.check(source)
            if miss is None:
                return None
            first = first or miss
        return first


def compile(pattern: Any) -> Pattern:
    """Compile a pattern (a dict); raises PatternError naming the path of the first problem."""
    if not isinstance(pattern, Mapping):
        raise PatternError("pattern must be a JSON object")
    return Pattern(tuple(_alternatives(pattern, "")))


def _alternatives(pattern: Mapping[str, Any], path: str) -> list[_Object]:
    """The $or-free alternatives of one pattern object."""
    alternatives = [_object(())]
    for name, spec in pattern.items():
        where = f"{path}.{name}" if path else str(name)
        if name == "$or":
            parts = _or_branches(spec, where, path)
        elif isinstance(spec, Mapping):
            if not spec:
                raise PatternError(f"{where}: an object in a pattern must not be empty")
            parts = [_object(((name, sub),)) for sub in _alternatives(spec, where)]
        elif isinstance(spec, list):
            parts = [_object(((name, _compile_leaf(spec, where)),))]
        else:
            raise PatternError(f"{where}: match values must be in an array, e.g. [{show(spec)}]")
        alternatives = [_combine(left, right) for left in alternatives for right in parts]
        if len(alternatives) > MAX_ALTERNATIVES:
            raise PatternError(
                f"{where}: $or expands to more than {MAX_ALTERNATIVES} alternatives; split the rule"
            )
    return alternatives


def _or_branches(spec: Any, where: str, path: str) -> list[_Object]:
    """Every alternative of every branch; branch fields keep their event path (`path`)."""
    if not isinstance(spec, list) or len(spec) < 2:
        raise PatternError(f"{where}: $or takes an array of at least two pattern objects, got {show(spec)}")
    branches: list[_Object] = []
    for index, branch in enumerate(spec):
        if not isinstance(branch, Mapping) or not branch:
            raise PatternError(f"{where}[{index}]: each $or branch must be a non-empty pattern object")
        branches.extend(_alternatives(branch, path))
    return branches


def _combine(left: _Object, right: _Object) -> _Object:
    """Both objects' fields; nested objects under one name merge, so they match in one array element."""
    fields = list(left.fields)
    for name, node in right.fields:
        for index, (existing_name, existing) in enumerate(fields):
            if existing_name == name and isinstance(existing, _Object) and isinstance(node, _Object):
                fields[index] = (name, _combine(existing, node))
                break
        else:
            fields.append((name, node))
    return _object(tuple(fields))


def _compile_leaf(values: list[Any], path: str) -> _Leaf:
    if not values:
        raise PatternError(f"{path}: an array of match values must not be empty")
    matchers: list[Matcher] = []
    for value in values:
        if isinstance(value, Mapping):
            matchers.append(compile_operator(value, path))
        elif isinstance(value, list):
            raise PatternError(f"{path}: match values must be strings, numbers, booleans or null")
        else:
            matchers.append(exact(value))
    strings = frozenset(values) if all(type(value) is str for value in values) else None
    return _Leaf(path, tuple(matchers), show(values), strings)

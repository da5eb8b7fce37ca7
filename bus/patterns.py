"""The EventBridge event-pattern language: compile a pattern once, match many events (pure).

Supported so far: exact values (strings, numbers, booleans, null), OR arrays, nested fields
and arrays in events (any element matches). Content filters (`prefix`, `numeric`, ...) are
refused at compile time with a PatternError naming the path until the routing issue adds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Pattern", "PatternError", "compile"]

_MISSING = object()


class PatternError(ValueError):
    """A pattern is invalid; the message names the path and the problem."""


@dataclass(frozen=True, slots=True)
class _Leaf:
    values: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        if isinstance(value, list):
            return any(self._equal(item) for item in value)
        return self._equal(value)

    def _equal(self, value: Any) -> bool:
        return any(_same(wanted, value) for wanted in self.values)


def _same(wanted: Any, value: Any) -> bool:
    """EventBridge equality: numbers by value, never a boolean equal to a number."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return wanted is value
    if isinstance(wanted, int | float) and isinstance(value, int | float):
        return wanted == value
    return type(wanted) is type(value) and wanted == value


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern: `matches(event)` takes the event as a JSON-format dict."""

    fields: tuple[tuple[str, _Leaf | Pattern], ...]

    def matches(self, event: Mapping[str, Any]) -> bool:
        """True when every field of the pattern matches the event."""
        for name, sub in self.fields:
            value = event.get(name, _MISSING) if isinstance(event, Mapping) else _MISSING
            if value is _MISSING:
                return False
            if isinstance(sub, Pattern):
                items = value if isinstance(value, list) else [value]
                if not any(isinstance(item, Mapping) and sub.matches(item) for item in items):
                    return False
            elif not sub.accepts(value):
                return False
        return True


def compile(pattern: Any) -> Pattern:
    """Compile a pattern (a dict); raises PatternError naming the path of the first problem."""
    if not isinstance(pattern, Mapping):
        raise PatternError("pattern must be a JSON object")
    return _compile_object(pattern, "")


def _compile_object(pattern: Mapping[str, Any], path: str) -> Pattern:
    fields: list[tuple[str, _Leaf | Pattern]] = []
    for name, spec in pattern.items():
        where = f"{path}.{name}" if path else str(name)
        if isinstance(spec, Mapping):
            if not spec:
                raise PatternError(f"{where}: an object in a pattern must not be empty")
            fields.append((name, _compile_object(spec, where)))
        elif isinstance(spec, list):
            fields.append((name, _compile_leaf(spec, where)))
        else:
            raise PatternError(f"{where}: match values must be in an array, e.g. [{_json(spec)}]")
    return Pattern(tuple(fields))


def _compile_leaf(values: list[Any], path: str) -> _Leaf:
    if not values:
        raise PatternError(f"{path}: an array of match values must not be empty")
    for value in values:
        if isinstance(value, Mapping):
            operator = next(iter(value), "?")
            raise PatternError(f"{path}: operator {operator!r} is not supported yet")
        if isinstance(value, list):
            raise PatternError(f"{path}: match values must be strings, numbers, booleans or null")
    return _Leaf(tuple(values))


def _json(value: Any) -> str:
    import orjson  # noqa: PLC0415 - only on the error path

    return orjson.dumps(value).decode()

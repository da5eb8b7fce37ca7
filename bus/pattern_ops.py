"""The value operators of event patterns (pure): each compiles from its JSON spec and `accepts` one value.

A matcher sees one scalar value of the event (arrays are taken apart by bus.patterns). Only
`exists: false` accepts an absent field; semantics and their sources: docs/decisions/patterns.md.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

__all__ = ["NUMERIC_LIMIT", "Matcher", "PatternError", "compile_operator", "exact", "show"]

NUMERIC_LIMIT = 5_000_000_000
"""Numeric operands and compared event numbers stay within +-5e9, as in event-ruler."""
_MAX_DECIMALS = 6


class PatternError(ValueError):
    """A pattern is invalid; the message names the path and the problem."""


class Matcher(Protocol):
    """One alternative for a field's value."""

    @property
    def absent_ok(self) -> bool:
        """True when the matcher is satisfied by an absent field."""
        ...

    def accepts(self, value: Any) -> bool:
        """True when this scalar event value satisfies the matcher."""
        ...


def show(value: Any) -> str:
    """Compact JSON text of a pattern or event value, for messages."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=repr)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(wanted: Any, value: Any) -> bool:
    """EventBridge equality: numbers by value, never a boolean equal to a number."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return wanted is value
    if _is_number(wanted) and _is_number(value):
        return bool(wanted == value)
    return type(wanted) is type(value) and bool(wanted == value)


@dataclass(frozen=True, slots=True)
class _Exact:
    value: Any
    absent_ok = False

    def accepts(self, value: Any) -> bool:
        return _same(self.value, value)


def exact(value: Any) -> Matcher:
    """The matcher for a plain value in a pattern's array (string, number, boolean or null)."""
    return _Exact(value)


@dataclass(frozen=True, slots=True)
class _IgnoreCase:
    lowered: str
    absent_ok = False

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value.lower() == self.lowered


@dataclass(frozen=True, slots=True)
class _Prefix:
    text: str
    ignore_case: bool
    absent_ok = False

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        return value.lower().startswith(self.text) if self.ignore_case else value.startswith(self.text)


@dataclass(frozen=True, slots=True)
class _Suffix:
    text: str
    ignore_case: bool
    absent_ok = False

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        return value.lower().endswith(self.text) if self.ignore_case else value.endswith(self.text)


@dataclass(frozen=True, slots=True)
class _Wildcard:
    regex: re.Pattern[str]
    absent_ok = False

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and self.regex.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class _AnythingBut:
    excluded: tuple[Matcher, ...]
    strings: frozenset[str] | None = field(init=False, compare=False, repr=False)
    """With only exact values excluded: the strings among them (a string is excluded when it is one)."""
    absent_ok = False

    def __post_init__(self) -> None:
        exact = all(type(matcher) is _Exact for matcher in self.excluded)
        strings = frozenset(m.value for m in self.excluded if type(m) is _Exact and type(m.value) is str)
        object.__setattr__(self, "strings", strings if exact else None)

    def accepts(self, value: Any) -> bool:
        strings = self.strings
        if strings is not None and type(value) is str:
            return value not in strings
        for matcher in self.excluded:  # noqa: SIM110 - hot path: a loop allocates no generator
            if matcher.accepts(value):
                return False
        return True


@dataclass(frozen=True, slots=True)
class _Numeric:
    low: Decimal | None
    low_inclusive: bool
    high: Decimal | None
    high_inclusive: bool
    floats: tuple[float, float] = field(init=False, compare=False, repr=False)
    """The bounds as floats (-inf, inf where open): an int or float strictly between them, or
    strictly outside, is decided without `Decimal` (rounding to float is monotonic)."""
    absent_ok = False

    def __post_init__(self) -> None:
        low = -math.inf if self.low is None else float(self.low)
        high = math.inf if self.high is None else float(self.high)
        object.__setattr__(self, "floats", (low, high))

    def accepts(self, value: Any) -> bool:
        kind = type(value)
        if (kind is float or kind is int) and -NUMERIC_LIMIT <= value <= NUMERIC_LIMIT:
            low, high = self.floats
            if low < value < high:
                return True
            if value < low or value > high:
                return False
            # Equal to a bound as floats: the decimals decide (bounds and inclusiveness).
        if not _is_number(value) or not math.isfinite(value) or abs(value) > NUMERIC_LIMIT:
            return False  # event-ruler compares only numbers within +-5e9 (NaN is no number)
        number = _decimal(value)
        if self.low is not None and (number < self.low or (number == self.low and not self.low_inclusive)):
            return False
        return self.high is None or number < self.high or (number == self.high and self.high_inclusive)


@dataclass(frozen=True, slots=True)
class _Cidr:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    absent_ok = False

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return address.version == self.network.version and address in self.network


@dataclass(frozen=True, slots=True)
class _Exists:
    present: bool

    @property
    def absent_ok(self) -> bool:
        return not self.present

    def accepts(self, value: Any) -> bool:
        return self.present


def compile_operator(spec: Mapping[str, Any], path: str) -> Matcher:
    """Compile one operator object such as {"prefix": "a"}; raises PatternError naming `path`."""
    if len(spec) != 1:
        raise PatternError(f"{path}: an operator object has exactly one key, got {show(spec)}")
    ((name, arg),) = spec.items()
    compiler = _OPERATORS.get(name)
    if compiler is None:
        raise PatternError(f"{path}: unknown operator {name!r} (operators: {', '.join(_OPERATORS)})")
    return compiler(arg, f"{path}: {name}")


def _prefix(arg: Any, where: str) -> Matcher:
    return _Prefix(*_string_or_ignore_case(arg, where))


def _suffix(arg: Any, where: str) -> Matcher:
    return _Suffix(*_string_or_ignore_case(arg, where))


def _ignore_case(arg: Any, where: str) -> Matcher:
    return _IgnoreCase(_string(arg, where).lower())


def _wildcard_matcher(arg: Any, where: str) -> Matcher:
    return _Wildcard(_wildcard(_string(arg, where), where))


def _exists(arg: Any, where: str) -> Matcher:
    if not isinstance(arg, bool):
        raise PatternError(f"{where} takes true or false, got {show(arg)}")
    return _Exists(arg)


def _string(arg: Any, where: str) -> str:
    if not isinstance(arg, str):
        raise PatternError(f"{where} takes a string, got {show(arg)}")
    return arg


def _string_or_ignore_case(arg: Any, where: str) -> tuple[str, bool]:
    if isinstance(arg, Mapping):
        if set(arg) != {"equals-ignore-case"}:
            raise PatternError(f'{where} takes a string or {{"equals-ignore-case": "..."}}, got {show(arg)}')
        return _string(arg["equals-ignore-case"], f"{where} equals-ignore-case").lower(), True
    return _string(arg, where), False


def _wildcard(text: str, where: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            following = text[index + 1 : index + 2]
            if following not in ("*", "\\"):
                raise PatternError(f"{where}: a backslash may only escape '*' or '\\' in {show(text)}")
            parts.append(re.escape(following))
            index += 2
            continue
        if char == "*":
            if parts and parts[-1] == ".*":
                raise PatternError(f"{where}: consecutive '*' are not allowed in {show(text)}; use one")
            parts.append(".*")
        else:
            parts.append(re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def _anything_but(arg: Any, where: str) -> Matcher:
    if isinstance(arg, Mapping):
        if len(arg) != 1 or next(iter(arg)) not in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            raise PatternError(
                f"{where} takes a value, a list, or one of prefix, suffix, equals-ignore-case, wildcard;"
                f" got {show(arg)}"
            )
        ((name, inner),) = arg.items()
        inner_where = f"{where} {name}"
        if name == "equals-ignore-case":
            texts = inner if isinstance(inner, list) else [inner]
            if not texts:
                raise PatternError(f"{inner_where}: the list must not be empty")
            return _AnythingBut(tuple(_IgnoreCase(_string(t, inner_where).lower()) for t in texts))
        if name in ("prefix", "suffix"):
            # As event-ruler: one string or a list of them, none empty (an empty affix is almost
            # surely a mistake there: it would refuse every string and accept every number).
            texts = inner if isinstance(inner, list) else [inner]
            if not texts:
                raise PatternError(f"{inner_where}: the list must not be empty")
            affixes = tuple(_string(t, inner_where) for t in texts)
            if "" in affixes:
                raise PatternError(
                    f"{inner_where}: an empty {name} is not allowed (it would exclude every string)"
                )
            make = _Prefix if name == "prefix" else _Suffix
            return _AnythingBut(tuple(make(affix, False) for affix in affixes))
        text = _string(inner, inner_where)
        return _AnythingBut((_Wildcard(_wildcard(text, inner_where)),))
    values = arg if isinstance(arg, list) else [arg]
    if not values:
        raise PatternError(f"{where}: the list must not be empty")
    strings = all(isinstance(v, str) for v in values)
    if not strings and not all(_is_number(v) for v in values):
        raise PatternError(
            f"{where} takes strings or numbers (all of one kind), not booleans, null or a mix;"
            f" got {show(arg)}"
        )
    return _AnythingBut(tuple(_Exact(v) for v in values))


_LOWER = {">": False, ">=": True}
_UPPER = {"<": False, "<=": True}


def _numeric(arg: Any, where: str) -> Matcher:
    example = 'e.g. [">", 0, "<=", 5] or ["=", 3]'
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise PatternError(f"{where} takes one or two comparisons, {example}; got {show(arg)}")
    pairs = [(arg[i], _bound(arg[i + 1], where)) for i in range(0, len(arg), 2)]
    (op, number), *rest = pairs
    if op == "=" and not rest:
        return _Numeric(number, True, number, True)
    if op in _UPPER and not rest:
        return _Numeric(None, False, number, _UPPER[op])
    if op in _UPPER:
        raise PatternError(f"{where}: a range is a lower bound then an upper bound, {example}")
    if op not in _LOWER:
        raise PatternError(f"{where}: unknown or misplaced comparison {show(op)}, {example}")
    if not rest:
        return _Numeric(number, _LOWER[op], None, False)
    high_op, high = rest[0]
    if high_op not in _UPPER:
        raise PatternError(f"{where}: a range is a lower bound then an upper bound, {example}")
    if high <= number:
        raise PatternError(f"{where}: the lower bound must be below the upper bound, got {show(arg)}")
    return _Numeric(number, _LOWER[op], high, _UPPER[high_op])


def _bound(value: Any, where: str) -> Decimal:
    if not _is_number(value) or not math.isfinite(value):
        raise PatternError(f"{where}: bounds must be numbers, got {show(value)}")
    number = _decimal(value)
    if abs(number) > NUMERIC_LIMIT:
        raise PatternError(f"{where}: bounds must be between -5e9 and 5e9, got {show(value)}")
    exponent = number.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -_MAX_DECIMALS:
        raise PatternError(f"{where}: bounds have at most 6 decimal places, got {show(value)}")
    return number


def _decimal(value: float) -> Decimal:
    """The number as written in JSON (a float's shortest repr), so 0.1 compares equal to 0.1."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _cidr(arg: Any, where: str) -> Matcher:
    text = _string(arg, where)
    try:
        if "/" not in text:
            raise ValueError(text)
        return _Cidr(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise PatternError(
            f"{where} takes an IPv4 or IPv6 block like 10.0.0.0/24 or 2001:db8::/32, got {show(arg)}"
        ) from None


_OPERATORS: dict[str, Callable[[Any, str], Matcher]] = {
    "prefix": _prefix,
    "suffix": _suffix,
    "equals-ignore-case": _ignore_case,
    "wildcard": _wildcard_matcher,
    "anything-but": _anything_but,
    "numeric": _numeric,
    "cidr": _cidr,
    "exists": _exists,
}

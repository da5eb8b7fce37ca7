"""Validate JSON-like event data against an Avro schema, naming the exact path of a mismatch (pure).

Data arrives as JSON, so the rules are JSON's: an integer is accepted where a float or double is
expected, but a boolean is never a number; `bytes` and `fixed` take bytes or, as in Avro's own JSON
encoding, a string of code points 0-255 (one byte each); a record refuses members it does not
declare (a typo at the edge is an error, not silently dropped data); a missing field takes its
default. Logical types are checked as their underlying type; `{"logicalType": "json"}` strings take
any JSON value. Array items and map entries count against the same total the workers' decoder
allows (`DEFAULT_MAX_ITEMS`), so data the edge accepts is data every worker can read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from bus.avro_guard import DEFAULT_MAX_ITEMS
from bus.avro_schema import JSON_LOGICAL_TYPE, Schema
from bus.errors import InvalidEvent
from bus.events import MAX_JSON_DEPTH

__all__ = ["MAX_CHECKS", "conform", "describe", "show", "validate"]

MAX_CHECKS = 10_000
"""Most union branches one validation may try and reject: each failed branch is retried with the
next, so without a bound, data nested through a union of records costs 2^depth."""


class _TooManyItems(InvalidEvent):
    """Over the item limit: not a mismatch for a union to try another branch over."""


class _OverBudget(InvalidEvent):
    """Over MAX_CHECKS failed union branch tries: the validation stops, whatever branch is next."""


_SURROGATE = re.compile("[\ud800-\udfff]")
_INT = (-(2**31), 2**31 - 1)
_LONG = (-(2**63), 2**63 - 1)
_FLOAT_MAX = 3.4028234663852886e38
_ARTICLE = {
    "null": "null",
    "boolean": "a boolean",
    "int": "an int (32-bit integer)",
    "long": "a long (64-bit integer)",
    "float": "a float",
    "double": "a double",
    "bytes": "bytes (or a string of code points 0-255)",
    "string": "a string",
    "array": "an array",
    "map": "a map (a JSON object)",
}


def validate(schema: Schema, datum: Any, *, root: str = "data", max_items: int = DEFAULT_MAX_ITEMS) -> None:
    """Raise InvalidEvent(field="data.items[2].price", reason=...) unless `datum` fits `schema`."""
    conform(schema, datum, root=root, max_items=max_items)


def conform(schema: Schema, datum: Any, *, root: str = "data", max_items: int = DEFAULT_MAX_ITEMS) -> Any:
    """Validate `datum` and return it as fastavro writes it for `schema.wire` (same object if unchanged).

    Defaults are filled in, bytes given as strings become bytes, JSON-typed values become JSON text,
    and a union value whose branch is not obvious is tagged `(branch name, value)` so fastavro
    writes the branch validation chose. More than `max_items` array items and map entries in all
    is refused at the container that crosses the limit.
    """
    return _Conformer(schema, max_items).value(schema.parsed, datum, root, 0)


def describe(schema: Schema, node: Any) -> str:  # noqa: PLR0911 - one answer per Avro type
    """A schema node in words: 'a double', 'a shop.Order record', 'one of the symbols A, B'."""
    node = schema.resolve(node)
    if isinstance(node, list):
        return "one of " + ", ".join(describe(schema, branch) for branch in node)
    if isinstance(node, str):
        return _ARTICLE[node]
    kind = node["type"]
    if node.get("logicalType") == JSON_LOGICAL_TYPE:
        return "a JSON value"
    if kind in ("record", "error"):
        return f"a {node['name']} record (a JSON object)"
    if kind == "enum":
        return "one of the symbols " + ", ".join(node["symbols"])
    if kind == "fixed":
        return f"{node['size']} bytes (fixed {node['name']})"
    if isinstance(kind, dict | list):
        return describe(schema, kind)
    return _ARTICLE[kind]


def show(value: Any) -> str:  # noqa: PLR0911 - one answer per kind of JSON value
    """A value as an error message shows it: short, and never a whole document."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    if isinstance(value, str | int | float):
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a very long integer"
        return text if len(text) <= 60 else f"{text[:57]}..."
    return f"a {type(value).__name__}"


class _Conformer:
    """One validation pass; named types resolve through the schema."""

    __slots__ = ("budget", "items", "max_items", "schema")

    def __init__(self, schema: Schema, max_items: int) -> None:
        self.schema = schema
        self.budget = MAX_CHECKS
        self.items = 0
        self.max_items = max_items

    def fail(self, path: str, node: Any, datum: Any) -> InvalidEvent:
        return InvalidEvent(path, f"expected {describe(self.schema, node)}, got {show(datum)}")

    def value(self, node: Any, datum: Any, path: str, depth: int) -> Any:  # noqa: PLR0911 - per Avro type
        node = self.schema.resolve(node)
        if isinstance(node, str):
            return self.primitive(node, node, datum, path)
        if isinstance(node, list):
            return self.union(node, datum, path, depth)
        kind = node["type"]
        if kind in ("record", "error"):
            return self.record(node, datum, path, depth)
        if kind == "enum":
            if isinstance(datum, str) and datum in node["symbols"]:
                return datum
            raise self.fail(path, node, datum)
        if kind == "array":
            if not isinstance(datum, list | tuple):
                raise self.fail(path, node, datum)
            self.deeper(path, depth)
            self.count(path, len(datum))
            items = node["items"]
            out = [self.value(items, item, f"{path}[{i}]", depth + 1) for i, item in enumerate(datum)]
            return datum if all(a is b for a, b in zip(out, datum, strict=True)) else out
        if kind == "map":
            return self.map(node, datum, path, depth)
        if kind == "fixed":
            raw = self.primitive("bytes", node, datum, path)
            if len(raw) != node["size"]:
                raise InvalidEvent(path, f"expected {describe(self.schema, node)}, got {len(raw)} bytes")
            return raw
        if isinstance(kind, dict | list):
            return self.value(kind, datum, path, depth)
        if node.get("logicalType") == JSON_LOGICAL_TYPE:
            return self.json_text(datum, path)
        return self.primitive(kind, node, datum, path)

    def deeper(self, path: str, depth: int) -> None:
        if depth >= MAX_JSON_DEPTH:
            raise InvalidEvent(path, f"nests deeper than {MAX_JSON_DEPTH} levels")

    def primitive(self, kind: str, node: Any, datum: Any, path: str) -> Any:
        if kind == "bytes":
            if isinstance(datum, bytes | bytearray):
                return bytes(datum)
            if isinstance(datum, str):
                try:
                    return datum.encode("latin-1")
                except UnicodeEncodeError:
                    raise InvalidEvent(
                        path,
                        "expected bytes as a string of code points 0-255 (Avro's JSON encoding), "
                        "got a character above 255; encode the bytes one character each",
                    ) from None
            raise self.fail(path, node, datum)
        problem = _PRIMITIVE_PROBLEMS[kind](datum)
        if problem == _WRONG_TYPE:
            raise self.fail(path, node, datum)
        if problem is not None:
            raise InvalidEvent(path, problem)
        return datum

    def count(self, path: str, items: int) -> None:
        """Add a container's items to the total, refusing before any of them is checked."""
        self.items += items
        if self.items > self.max_items:
            raise _TooManyItems(
                path,
                f"brings the data to {self.items} array items and map entries, over the limit of "
                f"{self.max_items} that workers read; split it into several events",
            )

    def spend(self, path: str) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise _OverBudget(
                path, f"the data takes over {MAX_CHECKS} union branch tries to validate; simplify it"
            )

    def json_text(self, datum: Any, path: str) -> str:
        try:
            return orjson.dumps(datum).decode()
        except orjson.JSONEncodeError as exc:
            raise InvalidEvent(path, f"expected a JSON value, got {show(datum)} ({exc})") from None

    def record(self, node: Any, datum: Any, path: str, depth: int) -> Any:
        if not isinstance(datum, Mapping):
            raise self.fail(path, node, datum)
        self.deeper(path, depth)
        fields = node["fields"]
        known = {f["name"] for f in fields}
        extra = sorted(str(key) for key in datum if key not in known)
        if extra:  # before recursing: an unknown member decides at once, whatever the fields hold
            raise InvalidEvent(
                f"{path}.{extra[0]}",
                f"is not a field of {node['name']}; its fields are " + ", ".join(sorted(known)),
            )
        changed = len(datum) != len(fields)
        out: dict[str, Any] = {}
        for f in fields:
            name = f["name"]
            where = f"{path}.{name}"
            if name in datum:
                given = datum[name]
                value = self.value(f["type"], given, where, depth + 1)
                changed = changed or value is not given
            elif "default" in f:
                value = self.default(f["type"], f["default"], where, depth + 1)
                changed = True
            else:
                raise InvalidEvent(
                    where,
                    f"is missing; expected {describe(self.schema, f['type'])} (the field has no default)",
                )
            out[name] = value
        return out if changed else datum

    def default(self, node: Any, default: Any, path: str, depth: int) -> Any:
        node = self.schema.resolve(node)
        if isinstance(node, list):  # a union's default is a value of its first branch
            return self.tagged(node, 0, self.value(node[0], default, path, depth))
        if isinstance(node, dict) and node.get("logicalType") == JSON_LOGICAL_TYPE:
            return default  # already JSON text
        return self.value(node, default, path, depth)

    def map(self, node: Any, datum: Any, path: str, depth: int) -> Any:
        if not isinstance(datum, Mapping):
            raise self.fail(path, node, datum)
        self.deeper(path, depth)
        self.count(path, len(datum))
        values = node["values"]
        out: dict[str, Any] = {}
        changed = False
        for key, given in datum.items():
            where = f"{path}[{orjson.dumps(key).decode()}]" if isinstance(key, str) else f"{path}[{key!r}]"
            if not isinstance(key, str):
                raise InvalidEvent(where, f"expected map keys to be strings, got {show(key)}")
            value = self.value(values, given, where, depth + 1)
            changed = changed or value is not given
            out[key] = value
        return out if changed else datum

    def union(self, branches: list[Any], datum: Any, path: str, depth: int) -> Any:
        if datum is None:
            if "null" in branches:
                return None
            raise self.fail(path, branches, datum)
        if isinstance(datum, Mapping | list | tuple):
            self.deeper(path, depth)  # before any branch: too deep is not a mismatch to explain
        if len(branches) == 2 and "null" in branches:  # the common nullable field: one branch to try
            other = branches[1] if branches[0] == "null" else branches[0]
            if not _plausible(self.schema.resolve(other), datum):
                raise self.fail(path, branches, datum)
            return self.value(other, datum, path, depth)
        candidates = [i for i, b in enumerate(branches) if _plausible(self.schema.resolve(b), datum)]
        errors: list[InvalidEvent] = []
        counted = self.items
        for index in candidates:
            try:
                value = self.value(branches[index], datum, path, depth)
            except (_TooManyItems, _OverBudget):
                raise
            except InvalidEvent as exc:
                self.items = counted  # a rejected branch writes nothing: its items do not count
                self.spend(path)  # only failed tries count: valid data rarely fails a branch
                errors.append(exc)
                continue
            return self.tagged(branches, index, value)
        inside = [exc for exc in errors if exc.field != path]
        if len(errors) == 1 or len(inside) == 1:
            raise (inside or errors)[0]  # only one branch got past the value's shape: its error is precise
        raise self.fail(path, branches, datum)

    def tagged(self, branches: list[Any], index: int, value: Any) -> Any:
        """`value`, or `(branch name, value)` where fastavro might pick another branch."""
        if len(branches) == 2 and "null" in branches and value is not None:
            return value
        if value is None:
            return None
        branch = branches[index]
        if isinstance(branch, dict):
            name = (
                branch["name"] if branch["type"] in ("record", "error", "enum", "fixed") else branch["type"]
            )
        else:
            name = branch
        return (name, value)


_WRONG_TYPE = "wrong type"


def _string_problem(datum: Any) -> str | None:
    if not isinstance(datum, str):
        return _WRONG_TYPE
    if not datum.isascii() and _SURROGATE.search(datum):
        return "expected a string of Unicode text, got a lone surrogate (it has no UTF-8 encoding)"
    return None


def _integer_problem(kind: str) -> Callable[[Any], str | None]:
    low, high = _INT if kind == "int" else _LONG

    def problem(datum: Any) -> str | None:
        if not isinstance(datum, int) or isinstance(datum, bool):
            return _WRONG_TYPE
        if not low <= datum <= high:
            return f"expected {_ARTICLE[kind]}, got {show(datum)}, out of range"
        return None

    return problem


def _number_problem(kind: str) -> Callable[[Any], str | None]:
    def problem(datum: Any) -> str | None:
        if not isinstance(datum, int | float) or isinstance(datum, bool):
            return _WRONG_TYPE
        try:
            number = float(datum)
        except OverflowError:
            return f"expected {_ARTICLE[kind]}, got an integer too large"
        if kind == "float" and math.isfinite(number) and abs(number) > _FLOAT_MAX:
            return f"expected a float, got {show(datum)}, beyond 32-bit range"
        return None

    return problem


_PRIMITIVE_PROBLEMS: dict[str, Callable[[Any], str | None]] = {
    "null": lambda datum: None if datum is None else _WRONG_TYPE,
    "boolean": lambda datum: None if isinstance(datum, bool) else _WRONG_TYPE,
    "int": _integer_problem("int"),
    "long": _integer_problem("long"),
    "float": _number_problem("float"),
    "double": _number_problem("double"),
    "string": _string_problem,
}


def _plausible(node: Any, datum: Any) -> bool:  # noqa: PLR0911 - one answer per kind of JSON value
    """Whether a union branch could take this kind of JSON value at all (for error messages)."""
    kind = node if isinstance(node, str) else node["type"]
    if isinstance(kind, dict | list):
        return True
    if isinstance(datum, bool):
        return kind == "boolean"
    if isinstance(datum, int | float):
        return (
            kind in ("int", "long", "float", "double")
            if isinstance(datum, int)
            else kind in ("float", "double")
        )
    if isinstance(datum, str):
        return kind in ("string", "bytes", "enum", "fixed")
    if isinstance(datum, bytes | bytearray):
        return kind in ("bytes", "fixed")
    if isinstance(datum, Mapping):
        return kind in ("record", "error", "map")
    if isinstance(datum, list | tuple):
        return kind == "array"
    return False

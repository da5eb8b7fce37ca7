"""Walk untrusted Avro binary against its writer schema before fastavro decodes it (pure).

fastavro trusts the counts in a body: five bytes declaring ten million `null` items decode into a
list of ten million Nones (RELIABILITY, "fastavro"). The guard reads the body the way a decoder
would, without building values, and refuses it when:

- an array or map block declares more items than the remaining bytes could hold (each item of a
  type that takes at least n bytes needs n bytes), or the body's items add up past `max_items`
  (items of `null`, empty records or zero-size fixed take no bytes at all, so only a count bounds them);
- containers nest deeper than `max_depth` (a recursive schema would otherwise recurse in C);
- a length, union index, enum index or boolean is out of range, a varint is over-long, or an
  int or long overflows;
- the body ends early, or bytes are left over after the datum.

Every refusal is InvalidEvent("data", reason).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bus.avro_schema import PRIMITIVES, Schema
from bus.errors import InvalidEvent

__all__ = ["DEFAULT_MAX_ITEMS", "check_body", "min_size"]

DEFAULT_MAX_ITEMS = 100_000
"""Most array items and map entries one body may declare, in all its arrays and maps together.

The edge (`avro_validation.conform`) refuses data over it, so what the gateway accepts workers can read."""

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)
_FIXED_SIZE = {"null": 0, "boolean": 1, "float": 4, "double": 8}
_MIN_SIZE = {"int": 1, "long": 1, "bytes": 1, "string": 1, **_FIXED_SIZE}


class _Cursor:
    """Position in the body and what has been counted so far."""

    __slots__ = ("body", "depth", "items", "max_depth", "max_items", "pos")

    def __init__(self, body: bytes, max_items: int, max_depth: int) -> None:
        self.body = body
        self.pos = 0
        self.items = 0
        self.depth = 0
        self.max_items = max_items
        self.max_depth = max_depth

    def varint(self, limit_bytes: int) -> int:
        """A zig-zag varint of at most `limit_bytes` bytes (5 for int, 10 for long)."""
        body, pos = self.body, self.pos
        if pos < len(body) and body[pos] < 0x80:  # one byte: -64..63, most counts and lengths
            byte = body[pos]
            self.pos = pos + 1
            return (byte >> 1) ^ -(byte & 1)
        shift = 0
        accumulated = 0
        for _ in range(limit_bytes):
            if pos >= len(body):
                raise _truncated(self)
            byte = body[pos]
            pos += 1
            accumulated |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self.pos = pos
                value = (accumulated >> 1) ^ -(accumulated & 1)
                low, high = _INT_RANGE if limit_bytes == 5 else _LONG_RANGE
                if not low <= value <= high:
                    kind = "an int" if limit_bytes == 5 else "a long"
                    raise _refused(self, f"{kind} overflows {32 if limit_bytes == 5 else 64} bits")
                return value
            shift += 7
        raise _refused(self, f"a varint runs over {limit_bytes} bytes")

    def take(self, size: int) -> None:
        if size < 0:
            raise _refused(self, f"a negative length {size}")
        if size > len(self.body) - self.pos:
            raise _truncated(self, size)
        self.pos += size

    def remaining(self) -> int:
        return len(self.body) - self.pos


Step = Callable[[_Cursor], None]


def check_body(schema: Schema, body: bytes, *, max_items: int, max_depth: int) -> None:
    """Raise InvalidEvent("data", ...) unless `body` is exactly one safe datum of `schema`."""
    cursor = _Cursor(body, max_items, max_depth)
    _compile(schema)(cursor)
    if cursor.pos != len(body):
        raise InvalidEvent(
            "data",
            f"has {len(body) - cursor.pos} bytes of trailing garbage after the Avro datum "
            f"(byte {cursor.pos} of {len(body)}); is the writer schema the right one?",
        )


def min_size(schema: Schema, node: Any, visiting: frozenset[str] = frozenset()) -> int:  # noqa: PLR0911 - per type
    """The fewest bytes a value of `node` takes (0 for null, empty records and zero-size fixed)."""
    if isinstance(node, str) and node not in PRIMITIVES:
        if node in visiting:
            return 0  # a record that contains itself without a union can never be written
        return min_size(schema, schema.named[node], visiting | {node})
    if isinstance(node, str):
        return _MIN_SIZE[node]
    if isinstance(node, list):
        return 1  # the branch index
    kind = node["type"]
    if kind in ("record", "error"):
        inside = visiting | {node["name"]}
        return sum(min_size(schema, f["type"], inside) for f in node["fields"])
    if kind in ("enum", "array", "map"):
        return 1
    if kind == "fixed":
        return int(node["size"])
    return min_size(schema, kind, visiting)


_COMPILED: dict[str, Step] = {}


def _compile(schema: Schema) -> Step:
    """The schema's checker, built once per fingerprint (schemas with one fingerprint read alike)."""
    step = _COMPILED.get(schema.fingerprint)
    if step is None:
        step = _Compiler(schema).node(schema.wire)
        if len(_COMPILED) < 10_000:  # bounded: schemas come from the book or a registry
            _COMPILED[schema.fingerprint] = step
    return step


class _Compiler:
    """Turns a schema into nested closures, so the walk does not dispatch on type names."""

    __slots__ = ("named", "schema")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.named: dict[str, Step] = {}

    def node(self, node: Any) -> Step:  # noqa: PLR0911 - one checker per Avro type
        if isinstance(node, str):
            if node in PRIMITIVES:
                return _PRIMITIVE_STEPS[node]
            return self.reference(node)
        if isinstance(node, list):
            return self.union(node)
        kind = node["type"]
        if kind in ("record", "error"):
            return self.named_step(node, self.record)
        if kind == "enum":
            return self.named_step(node, self.enum)
        if kind == "fixed":
            return self.named_step(node, self.fixed)
        if kind == "array":
            return self.blocks(node["items"], key=False)
        if kind == "map":
            return self.blocks(node["values"], key=True)
        return self.node(kind)

    def reference(self, name: str) -> Step:
        found = self.named.get(name)
        if found is not None:
            return found
        return self.node(self.schema.named[name])

    def named_step(self, node: Any, build: Callable[[Any], Step]) -> Step:
        name = node["name"]
        if name in self.named:
            return self.named[name]
        cell: list[Step] = []
        # A recursive type refers to itself before its checker exists: look it up when called.
        self.named[name] = lambda cursor: cell[0](cursor)  # noqa: PLW0108 - cell[0] is filled below
        step = build(node)
        cell.append(step)
        self.named[name] = step
        return step

    def record(self, node: Any) -> Step:
        steps = [self.node(f["type"]) for f in node["fields"]]

        def record(cursor: _Cursor) -> None:
            cursor.depth += 1
            if cursor.depth > cursor.max_depth:
                raise _refused(cursor, f"containers nest deeper than {cursor.max_depth} levels")
            for step in steps:
                step(cursor)
            cursor.depth -= 1

        return record

    def enum(self, node: Any) -> Step:
        count = len(node["symbols"])

        def enum(cursor: _Cursor) -> None:
            index = cursor.varint(5)
            if not 0 <= index < count:
                raise _refused(cursor, f"enum index {index} is outside the {count} symbols of {node['name']}")

        return enum

    def fixed(self, node: Any) -> Step:
        size = int(node["size"])

        def fixed(cursor: _Cursor) -> None:
            cursor.take(size)

        return fixed

    def union(self, branches: list[Any]) -> Step:
        steps = [self.node(branch) for branch in branches]
        count = len(steps)

        def union(cursor: _Cursor) -> None:
            index = cursor.varint(10)
            if not 0 <= index < count:
                raise _refused(cursor, f"union branch {index} does not exist (the union has {count})")
            steps[index](cursor)

        return union

    def blocks(self, items: Any, *, key: bool) -> Step:
        step = self.node(items)
        each = min_size(self.schema, items) + (1 if key else 0)
        what = "map entries" if key else "array items"

        def blocks(cursor: _Cursor) -> None:
            cursor.depth += 1
            if cursor.depth > cursor.max_depth:
                raise _refused(cursor, f"containers nest deeper than {cursor.max_depth} levels")
            while True:
                count = cursor.varint(10)
                if count == 0:
                    break
                if count < 0:  # a negative count is followed by the block's size in bytes
                    count = -count
                    size = cursor.varint(10)
                    if not 0 <= size <= cursor.remaining():
                        raise _refused(cursor, f"a block declares {size} bytes, {cursor.remaining()} remain")
                cursor.items += count
                if cursor.items > cursor.max_items:
                    raise _refused(
                        cursor, f"declares {cursor.items} or more items, over the limit of {cursor.max_items}"
                    )
                if count * each > cursor.remaining():
                    raise _refused(
                        cursor,
                        f"a block declares {count} {what} of at least {each} bytes each, "
                        f"but only {cursor.remaining()} bytes remain",
                    )
                if each == 0:
                    continue  # null, empty records, zero-size fixed: nothing to read, only to count
                for _ in range(count):
                    if key:
                        _string(cursor)
                    step(cursor)
            cursor.depth -= 1

        return blocks


def _null(cursor: _Cursor) -> None:
    return None


def _boolean(cursor: _Cursor) -> None:
    if cursor.pos >= len(cursor.body):
        raise _truncated(cursor)
    if cursor.body[cursor.pos] > 1:
        raise _refused(cursor, f"a boolean byte is {cursor.body[cursor.pos]}, not 0 or 1")
    cursor.pos += 1


def _int(cursor: _Cursor) -> None:
    cursor.varint(5)


def _long(cursor: _Cursor) -> None:
    cursor.varint(10)


def _float(cursor: _Cursor) -> None:
    cursor.take(4)


def _double(cursor: _Cursor) -> None:
    cursor.take(8)


def _string(cursor: _Cursor) -> None:
    cursor.take(cursor.varint(10))


_PRIMITIVE_STEPS: dict[str, Step] = {
    "null": _null,
    "boolean": _boolean,
    "int": _int,
    "long": _long,
    "float": _float,
    "double": _double,
    "bytes": _string,
    "string": _string,
}


def _refused(cursor: _Cursor, reason: str) -> InvalidEvent:
    return InvalidEvent("data", f"is not a valid Avro body: {reason} (at byte {cursor.pos})")


def _truncated(cursor: _Cursor, wanted: int | None = None) -> InvalidEvent:
    more = f"needs {wanted} more bytes" if wanted is not None else "needs more bytes"
    return InvalidEvent(
        "data",
        f"is not a valid Avro body: it ends early at byte {cursor.pos} of {len(cursor.body)} ({more}); "
        "is it truncated, or written with another schema?",
    )

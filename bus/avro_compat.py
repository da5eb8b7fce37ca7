"""Static schema compatibility by the Avro spec's resolution rules (pure).

BACKWARD: the new schema reads data written with the old one. FORWARD: the old schema reads data
written with the new one. FULL: both. NONE: anything goes. bus defaults to FULL: events outlive
their producers (retention, replay, DLQ redrive) and consumers upgrade on their own schedule, so a
v1 consumer must read v2 events and a v2 consumer must read v1 events (docs/decisions/avro.md).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from bus.avro_schema import JSON_LOGICAL_TYPE, PRIMITIVES, Schema
from bus.avro_validation import describe

__all__ = ["DEFAULT_COMPATIBILITY", "Compatibility", "check_compatible"]


class Compatibility(StrEnum):
    """Which readers a new schema version must keep working for (Confluent's names)."""

    BACKWARD = "BACKWARD"
    FORWARD = "FORWARD"
    FULL = "FULL"
    NONE = "NONE"


DEFAULT_COMPATIBILITY = Compatibility.FULL

# Writer type -> reader types it is promoted to (Avro spec, "Schema Resolution").
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def check_compatible(new: Schema, old: Schema, mode: Compatibility = DEFAULT_COMPATIBILITY) -> list[str]:
    """Why `new` may not replace `old` under `mode`; empty when it may. Each problem names its path."""
    problems: list[str] = []
    if mode in (Compatibility.BACKWARD, Compatibility.FULL):
        problems += [f"{p} (new schema reading old data)" for p in _Resolution(new, old).check()]
    if mode in (Compatibility.FORWARD, Compatibility.FULL):
        problems += [f"{p} (old schema reading new data)" for p in _Resolution(old, new).check()]
    return problems


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    kind = node["type"]
    return _kind(kind) if isinstance(kind, dict | list) else str(kind)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Resolution:
    """Whether data written with `writer` can be read with `reader`."""

    __slots__ = ("reader", "seen", "writer")

    def __init__(self, reader: Schema, writer: Schema) -> None:
        self.reader = reader
        self.writer = writer
        self.seen: set[tuple[str, str]] = set()

    def check(self) -> list[str]:
        return self.read(self.reader.parsed, self.writer.parsed, "data")

    def resolve_reader(self, node: Any) -> Any:
        node = self.reader.resolve(node)
        return self.resolve_reader(node["type"]) if isinstance(node, dict) and _nested(node) else node

    def resolve_writer(self, node: Any) -> Any:
        node = self.writer.resolve(node)
        return self.resolve_writer(node["type"]) if isinstance(node, dict) and _nested(node) else node

    def read(self, reader_node: Any, writer_node: Any, path: str) -> list[str]:  # noqa: PLR0911 - per Avro type
        r = self.resolve_reader(reader_node)
        w = self.resolve_writer(writer_node)
        if isinstance(w, list):  # every branch the writer may have chosen must be readable
            return [problem for branch in w for problem in self.read(reader_node, branch, path)]
        if isinstance(r, list):
            index = self.select(r, w)
            if index is None:
                return [f"{path}: written as {self.said(w)}, which no branch of the reader's union reads"]
            return self.read(r[index], writer_node, path)
        mismatch = self.mismatch(r, w, reader_node, writer_node, path)
        if mismatch is not None:
            return [mismatch]
        r_kind, w_kind = _kind(r), _kind(w)
        if r_kind != w_kind:  # a promotion
            return []
        if r_kind in ("record", "error", "enum", "fixed") and not self.same_name(r, w):
            return [f"{path}: written as {w['name']}, read as {r['name']}: the names differ (add an alias)"]
        if r_kind in ("record", "error"):
            return self.record(r, w, path)
        if r_kind == "enum":
            missing = [symbol for symbol in w["symbols"] if symbol not in r["symbols"]]
            if missing and "default" not in r:
                return [
                    f"{path}: written symbols {', '.join(missing)} are not in the reader's enum "
                    f"{r['name']}, which has no default symbol"
                ]
            return []
        if r_kind == "fixed" and r["size"] != w["size"]:
            return [f"{path}: fixed {r['name']} is {w['size']} bytes when written, {r['size']} when read"]
        if r_kind == "array":
            return self.read(r["items"], w["items"], f"{path}[*]")
        if r_kind == "map":
            return self.read(r["values"], w["values"], f"{path}[*]")
        return []

    def mismatch(self, r: Any, w: Any, reader_node: Any, writer_node: Any, path: str) -> str | None:
        """Why the writer's type cannot be read as the reader's, names and contents aside."""
        r_kind, w_kind = _kind(r), _kind(w)
        if r_kind != w_kind and r_kind not in _PROMOTIONS.get(w_kind, frozenset()):
            return f"{path}: written as {self.said(w)}, cannot be read as {describe(self.reader, r)}"
        return _json_text_problem(reader_node, writer_node, path)

    def record(self, r: Any, w: Any, path: str) -> list[str]:
        key = (r["name"], w["name"])
        if key in self.seen:
            return []  # a recursive record: being checked further up this path
        self.seen.add(key)
        try:
            return self.fields(r, w, path)
        finally:
            self.seen.discard(key)

    def fields(self, r: Any, w: Any, path: str) -> list[str]:
        written = {f["name"]: f for f in w["fields"]}
        problems: list[str] = []
        for field in r["fields"]:
            names = [field["name"], *field.get("aliases", [])]
            source = next((written[name] for name in names if name in written), None)
            where = f"{path}.{field['name']}"
            if source is not None:
                problems += self.read(field["type"], source["type"], where)
            elif "default" not in field:
                problems.append(
                    f"{where}: the reader needs it, the writer does not write it, and it has no default"
                )
        return problems

    def same_name(self, r: Any, w: Any) -> bool:
        aliases = [_short(alias) for alias in r.get("aliases", [])]
        return _short(r["name"]) == _short(w["name"]) or _short(w["name"]) in aliases

    def select(self, branches: list[Any], w: Any) -> int | None:
        """The reader branch that reads the writer's type: the first of its kind, else a promotion."""
        w_kind = _kind(w)
        resolved = [self.resolve_reader(branch) for branch in branches]
        for index, r in enumerate(resolved):
            if _kind(r) == w_kind and (
                w_kind not in ("record", "error", "enum", "fixed") or self.same_name(r, w)
            ):
                return index
        for index, r in enumerate(resolved):
            if w_kind in _PROMOTIONS and _kind(r) in _PROMOTIONS[w_kind]:
                return index
        return None

    def said(self, w: Any) -> str:
        return describe(self.writer, w)


def _json_text_problem(reader_node: Any, writer_node: Any, path: str) -> str | None:
    """Why a string read with or without `logicalType: json` as written the other way cannot be.

    Avro ignores logical types when resolving, but bus parses a json string on reading: plain text
    is not JSON, and JSON read as plain text is no longer the value that was written.
    """
    r_json, w_json = _is_json_text(reader_node), _is_json_text(writer_node)
    if r_json == w_json:
        return None
    said = {True: "JSON text (logicalType json)", False: "plain text (no logicalType json)"}
    return (
        f"{path}: written as {said[w_json]}, read as {said[r_json]}; keep the field's logicalType json "
        "as it was, or give the changed event a new type"
    )


def _is_json_text(node: Any) -> bool:
    """`{"type": "string", "logicalType": "json"}`, possibly wrapped in `{"type": {...}}`."""
    while isinstance(node, dict):
        if node.get("logicalType") == JSON_LOGICAL_TYPE:
            return True
        node = node.get("type")
    return False


def _nested(node: Any) -> bool:
    """`{"type": {...}}` or `{"type": "int", "logicalType": ...}`: a wrapper around another type."""
    kind = node["type"]
    return isinstance(kind, dict | list) or (isinstance(kind, str) and kind in PRIMITIVES)

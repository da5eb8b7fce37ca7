"""Avro schemas of typed events: parsing, identity and the schema book (pure but for reading files).

A schema's id is the Avro spec's CRC-64-AVRO (Rabin) fingerprint of its Parsing Canonical Form, as
the 64-bit number in 16 hex digits: the same schema gets the same id everywhere, whitespace and
docs aside.
The book maps event types to schemas: the platform's (`schemas/*.avsc`, shipped with bus) and the
user's (`schemas: {type: path}` in the manifest). A type ending in `.*` covers a family of types.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from bus.errors import ManifestError

__all__ = [
    "JSON_LOGICAL_TYPE",
    "PLATFORM_SCHEMAS",
    "Schema",
    "SchemaBook",
    "load_book",
    "load_schema",
    "parse",
    "platform_book",
]

JSON_LOGICAL_TYPE = "json"
"""`{"type": "string", "logicalType": "json"}`: any JSON value, carried as its JSON text."""

PLATFORM_SCHEMAS: Mapping[str, str] = {
    "bus.object.*": "bus.object.event.avsc",
    "bus.timer.fired": "bus.timer.fired.avsc",
    "bus.function.result": "bus.function.result.avsc",
    "bus.function.error": "bus.function.error.avsc",
}
"""Platform event type (or family) -> its schema file in the `schemas` package."""

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Schema:
    """One parsed Avro schema and its identity; build it with `parse`."""

    text: str
    """The schema as written, compact JSON (what a schema registry stores)."""
    parsed: Any
    """fastavro's parsed form, logical types kept (for validation and compatibility)."""
    wire: Any
    """fastavro's parsed form without logical types: bus reads and writes plain JSON-like values."""
    named: Mapping[str, Any]
    """Full name -> definition of every record, enum and fixed the schema declares."""
    canonical: str
    """The Parsing Canonical Form."""
    fingerprint: str
    """CRC-64-AVRO of the canonical form, 16 hex digits (`"int"`: 7275d51a3f395c8f): the id sans registry."""
    converts: bool
    """True when decoded values need converting to JSON (bytes, fixed or JSON-text fields)."""

    def resolve(self, node: Any) -> Any:
        """The definition a schema node stands for (a name becomes its record, enum or fixed)."""
        if isinstance(node, str) and node not in PRIMITIVES:
            return self.named[node]
        return node


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaBook:
    """Event type -> schema, and schema id -> schema, for the platform's and the user's types."""

    types: Mapping[str, Schema] = field(default_factory=dict)
    """Event type (or `family.*`) -> its current schema."""
    ids: Mapping[str, Schema] = field(default_factory=dict)
    """Fingerprint -> schema, for every schema the book has held (writers may be older)."""

    def for_type(self, event_type: str) -> Schema | None:
        """The schema of an event type: an exact entry, else the longest `family.*` covering it."""
        exact = self.types.get(event_type)
        if exact is not None:
            return exact
        best: tuple[int, Schema] | None = None
        for name, schema in self.types.items():
            covers = name.endswith(".*") and event_type.startswith(name[:-1])
            if covers and (best is None or len(name) > best[0]):
                best = (len(name), schema)
        return best[1] if best else None

    def by_id(self, schema_id: str) -> Schema | None:
        """The schema with this fingerprint, or None when the book never held it."""
        return self.ids.get(schema_id.lower())

    def with_types(self, types: Mapping[str, Schema]) -> SchemaBook:
        """A book with these types set; the schemas they replace stay findable by id."""
        ids = dict(self.ids)
        ids.update((schema.fingerprint, schema) for schema in types.values())
        return SchemaBook(types={**self.types, **types}, ids=ids)


def parse(
    source: str | bytes | Mapping[str, Any] | list[Any], *, where: str = "schema", check_defaults: bool = True
) -> Schema:
    """Parse an Avro schema (JSON text or its decoded value); ManifestError(`where`, ...) if invalid.

    `check_defaults=False` reads a schema that is registered already (an older bus may have
    registered a default that is now refused): readers still need it to decode what it wrote.
    """
    if isinstance(source, str | bytes):
        try:
            raw = orjson.loads(source)
        except orjson.JSONDecodeError as exc:
            raise ManifestError(
                where, f"is not valid JSON ({exc}); an Avro schema is a JSON document"
            ) from None
    else:
        raw = copy.deepcopy(source)
    try:
        parsed = parse_schema(copy.deepcopy(raw))
        wire = parse_schema(_without_logical_types(copy.deepcopy(raw)))
        canonical = to_parsing_canonical_form(parsed)
    except Exception as exc:  # fastavro raises many types (SchemaParseException, KeyError, ...)
        if check_defaults:
            _explain_default_error(raw, where)
        reason = str(exc) or type(exc).__name__
        raise ManifestError(where, f"is not a valid Avro schema: {reason}") from None
    named = dict(_named_types(parsed))
    _check_json_logical(parsed, where)
    if check_defaults:
        _check_defaults(parsed, named, where)
    return Schema(
        text=orjson.dumps(raw).decode(),
        parsed=parsed,
        wire=wire,
        named=named,
        canonical=canonical,
        fingerprint=_rabin(canonical),
        converts=_converts(parsed),
    )


def load_schema(path: Path, *, where: str) -> Schema:
    """Read and parse one `.avsc` file; ManifestError(`where`, ...) naming what is wrong."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(where, f"schema file {str(path)!r} does not exist; check the path") from None
    except OSError as exc:
        raise ManifestError(where, f"schema file {str(path)!r} cannot be read: {exc.strerror}") from None
    return parse(text, where=where)


_PLATFORM_DIR = Path(__file__).resolve().parent.parent / "schemas"
"""The `schemas` package installed beside `bus` (the repository's `schemas/`, or site-packages'),
found by path: `import schemas` would find a user's own `schemas/` folder first when a process
runs in it (`python -m` puts the working directory first on `sys.path`)."""


def platform_book() -> SchemaBook:
    """The book of the platform's own event types (`bus.object.*`, `bus.timer.fired`, ...)."""
    types: dict[str, Schema] = {}
    for event_type, filename in PLATFORM_SCHEMAS.items():
        text = (_PLATFORM_DIR / filename).read_bytes()
        types[event_type] = parse(text, where=f"schemas/{filename}")
    return SchemaBook().with_types(types)


def load_book(declared: Mapping[str, str | Mapping[str, Any] | list[Any]], base_dir: Path) -> SchemaBook:
    """The platform book plus the manifest's `schemas: {type: schema or its path from `base_dir`}`."""
    types: dict[str, Schema] = {}
    for event_type, path in declared.items():
        where = f"schemas.{event_type}"
        if not event_type or event_type.startswith("bus."):
            raise ManifestError(where, "bus.* types carry the platform's schemas; declare your own type name")
        if not isinstance(path, str):
            types[event_type] = parse(path, where=where)
        else:
            types[event_type] = load_schema(base_dir / path, where=where)
    return platform_book().with_types(types)


def _rabin(canonical: str) -> str:
    """CRC-64-AVRO as a 64-bit number in hex, as the spec's test data and Java print it.

    fastavro (like the `avro` package) spells out the fingerprint's little-endian bytes instead.
    """
    little_endian = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return f"{int.from_bytes(little_endian, 'little'):016x}"


def _without_logical_types(node: Any) -> Any:
    """A copy of an already valid schema with every `logicalType` dropped."""
    if isinstance(node, list):
        return [_without_logical_types(branch) for branch in node]
    if not isinstance(node, dict):
        return node
    out = {key: value for key, value in node.items() if key != "logicalType"}
    kind = node.get("type")
    if kind in ("record", "error"):
        out["fields"] = [{**f, "type": _without_logical_types(f["type"])} for f in node["fields"]]
    elif kind == "array":
        out["items"] = _without_logical_types(node["items"])
    elif kind == "map":
        out["values"] = _without_logical_types(node["values"])
    elif isinstance(kind, dict | list):
        out["type"] = _without_logical_types(kind)
    return out


def _walk(node: Any, seen: set[str] | None = None) -> Iterator[Any]:
    """Every schema node once (named types are not entered twice)."""
    seen = set() if seen is None else seen
    if isinstance(node, list):
        yield node
        for branch in node:
            yield from _walk(branch, seen)
        return
    if not isinstance(node, dict):
        yield node
        return
    kind = node.get("type")
    if kind in NAMED:
        if node["name"] in seen:
            return
        seen.add(node["name"])
    yield node
    if kind in ("record", "error"):
        for f in node["fields"]:
            yield from _walk(f["type"], seen)
    elif kind == "array":
        yield from _walk(node["items"], seen)
    elif kind == "map":
        yield from _walk(node["values"], seen)
    elif isinstance(kind, dict | list):
        yield from _walk(kind, seen)


def _named_types(parsed: Any) -> Iterator[tuple[str, Any]]:
    for node in _walk(parsed):
        if isinstance(node, dict) and node.get("type") in NAMED:
            yield node["name"], node


def _check_json_logical(parsed: Any, where: str) -> None:
    for node in _walk(parsed):
        if (
            isinstance(node, dict)
            and node.get("logicalType") == JSON_LOGICAL_TYPE
            and node["type"] != "string"
        ):
            raise ManifestError(where, f'logicalType "json" needs "type": "string", got {node["type"]!r}')
        if isinstance(node, list):
            for branch in node:
                if isinstance(branch, dict) and branch.get("logicalType") == JSON_LOGICAL_TYPE:
                    raise ManifestError(
                        where,
                        'a {"logicalType": "json"} string cannot be a union branch: a JSON value already '
                        "covers null and every other type; use it on its own",
                    )


def _converts(parsed: Any) -> bool:
    for node in _walk(parsed):
        name = node.get("type") if isinstance(node, dict) else node
        if isinstance(name, str) and name in ("bytes", "fixed"):
            return True
        if isinstance(node, dict) and node.get("logicalType") == JSON_LOGICAL_TYPE:
            return True
    return False


_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _check_defaults(
    parsed: Any, named: Mapping[str, Any], where: str, defaults: _Defaults | None = None
) -> None:
    """ManifestError naming the field whose default is not a value of its type.

    fastavro checks defaults loosely (a union's against any branch, `"1.5"` for a double), but
    Avro readers fill in a missing field from its default, so a wrong one fails only later, when
    data written without the field is read. `defaults`: (record, field) -> default, when `parsed`
    was parsed without them.
    """
    for node in _walk(parsed):
        if not (isinstance(node, dict) and node.get("type") in ("record", "error")):
            continue
        prefix = "" if node is parsed else f"{node['name'].rsplit('.', 1)[-1]}."
        for f in node["fields"]:
            key = (node["name"], f["name"])
            if defaults is not None and key in defaults:
                value = defaults[key]
            elif defaults is None and "default" in f:
                value = f["default"]
            else:
                continue
            label = f"field {prefix}{f['name']}"
            problem = _default_problem(f["type"], value, named)
            if problem is None:
                continue
            kind = named.get(f["type"], f["type"]) if isinstance(f["type"], str) else f["type"]
            if isinstance(kind, list) and any(_default_problem(b, value, named) is None for b in kind):
                first = orjson.dumps(_type_name(kind[0])).decode()
                raise ManifestError(
                    where,
                    f"{label}: the default {_shown(value)} is not a value of the union's first type, "
                    f"{first}: Avro reads a union's default as its first type; put the default's type "
                    f"first (e.g. {_reordered(kind, value, named)}) or change the default",
                )
            raise ManifestError(where, f"{label}: the default is not a value of its type: {problem}")


_Defaults = Mapping[tuple[str, str], Any]


def _explain_default_error(raw: Any, where: str) -> None:
    """When fastavro refused `raw` for a default alone: the ManifestError naming the field."""
    defaults: dict[tuple[str, str], Any] = {}
    try:
        parsed = parse_schema(_without_defaults(raw, "", defaults))
    except Exception:
        return
    _check_defaults(parsed, dict(_named_types(parsed)), where, defaults)


def _field_without_default(f: Any, namespace: str, defaults: dict[tuple[str, str], Any]) -> Any:
    if not isinstance(f, dict):
        return f
    return {
        k: _without_defaults(v, namespace, defaults) if k == "type" else v
        for k, v in f.items()
        if k != "default"
    }


def _without_defaults(node: Any, namespace: str, defaults: dict[tuple[str, str], Any]) -> Any:
    """A copy of a raw schema without field defaults, collecting them by (record full name, field)."""
    if isinstance(node, list):
        return [_without_defaults(branch, namespace, defaults) for branch in node]
    if not isinstance(node, dict):
        return node
    out = dict(node)
    kind = node.get("type")
    if kind in NAMED and isinstance(node.get("name"), str):
        name = node["name"]
        namespace = node.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
        full = name if "." in name or not namespace else f"{namespace}.{name}"
        if kind in ("record", "error") and isinstance(node.get("fields"), list):
            fields = []
            for f in node["fields"]:
                if isinstance(f, dict) and "default" in f:
                    defaults[(full, str(f.get("name")))] = f["default"]
                fields.append(_field_without_default(f, namespace, defaults))
            out["fields"] = fields
    for key in ("items", "values"):
        if key in node:
            out[key] = _without_defaults(node[key], namespace, defaults)
    if isinstance(kind, dict | list):
        out["type"] = _without_defaults(kind, namespace, defaults)
    return out


def _default_problem(node: Any, value: Any, named: Mapping[str, Any], at: str = "") -> str | None:  # noqa: PLR0911, PLR0912 - one answer per Avro type
    """Why `value` (a default as JSON) is not a value of `node`; `at` is where inside the default."""
    node = named.get(node, node) if isinstance(node, str) else node
    if isinstance(node, list):  # a union's default is a value of its first type
        return _default_problem(node[0], value, named, at)
    kind = node["type"] if isinstance(node, dict) else node
    if isinstance(kind, dict | list):
        return _default_problem(kind, value, named, at)
    here = f"{at}: " if at else ""
    if isinstance(node, dict) and node.get("logicalType") == JSON_LOGICAL_TYPE:
        try:
            orjson.loads(value if isinstance(value, str) else b"\xff")
        except orjson.JSONDecodeError:
            return (
                f"{here}must be JSON text (a json field's default is its value written as JSON, e.g. "
                f'"null", "{{}}" or "\\"text\\""), got {_shown(value)}'
            )
        return None
    if kind in ("record", "error"):
        if not isinstance(value, dict):
            return f"{here}expected an object for record {node['name']}, got {_shown(value)}"
        fields = {f["name"]: f for f in node["fields"]}
        for name in value:
            if name not in fields:
                return f"{at}.{name}: is not a field of {node['name']}"
        for name, f in fields.items():
            if name in value:
                problem = _default_problem(f["type"], value[name], named, f"{at}.{name}")
                if problem is not None:
                    return problem
            elif "default" not in f:
                return f"{at}.{name}: is missing, and the field has no default of its own"
        return None
    if kind == "array":
        if not isinstance(value, list):
            return f"{here}expected an array, got {_shown(value)}"
        problems = (_default_problem(node["items"], v, named, f"{at}[{i}]") for i, v in enumerate(value))
        return next((problem for problem in problems if problem is not None), None)
    if kind == "map":
        if not isinstance(value, dict):
            return f"{here}expected an object (a map), got {_shown(value)}"
        problems = (_default_problem(node["values"], v, named, f"{at}[{k!r}]") for k, v in value.items())
        return next((problem for problem in problems if problem is not None), None)
    if kind == "enum":
        if value in node["symbols"]:
            return None
        return f"{here}expected one of {', '.join(node['symbols'])}, got {_shown(value)}"
    if kind == "fixed":
        size = node["size"]
        if _latin1(value) is not None and len(value) == size:
            return None
        return f"{here}expected {size} bytes as a string of code points 0-255, got {_shown(value)}"
    return _primitive_problem(kind, value, here)


def _primitive_problem(kind: str, value: Any, here: str) -> str | None:
    """Why `value` is not a JSON-encoded Avro `kind` (bytes: a string of code points 0-255)."""
    if kind == "null":
        fits = value is None
    elif kind == "boolean":
        fits = isinstance(value, bool)
    elif kind in _INT_RANGE:
        low, high = _INT_RANGE[kind]
        fits = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    elif kind in ("float", "double"):
        fits = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "bytes":
        fits = _latin1(value) is not None
    else:
        fits = isinstance(value, str)
    if fits:
        return None
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{here}expected {article} {kind}, got {_shown(value)}"


def _latin1(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return None


def _type_name(node: Any) -> Any:
    if isinstance(node, dict):
        return node["name"] if node.get("type") in NAMED else node["type"]
    return node


def _reordered(branches: list[Any], value: Any, named: Mapping[str, Any]) -> str:
    """The union's type names with the first one the default fits moved to the front."""
    names = [_type_name(branch) for branch in branches]
    fitting = next((i for i, b in enumerate(branches) if _default_problem(b, value, named) is None), 0)
    shown = [
        orjson.dumps(name).decode() for name in [names[fitting], *names[:fitting], *names[fitting + 1 :]]
    ]
    return f"[{', '.join(shown)}]"


def _shown(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

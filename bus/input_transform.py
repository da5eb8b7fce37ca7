"""Per-target input: EventBridge's input transformer and constant input, compiled once (pure).

A rule target may replace the `data` its function receives. `compile_transformer` takes
`{input_paths: {name: JSONPath}, input_template: text}` and `compile_constant` takes a fixed JSON
value (EventBridge's "Constant (JSON text)"); both validate everything when the manifest is parsed
and raise `ManifestError` naming the manifest path. `InputTransform.apply(event, rule_name)` then
builds the new `data` from the event in the CloudEvents JSON format, without parsing any text.

Templates follow EventBridge, with these reserved variables: `<bus.event>` (the whole event, like
`aws.events.event.json`), `<bus.event.attributes>` (the event without `data` and `data_base64`,
like `aws.events.event`) and `<bus.rule.name>` (like `aws.events.rule-name`). A template that is
JSON once its placeholders are filled gives JSON data: an unquoted `<name>` becomes the value
itself (`null` when the path is missing), a `<name>` inside a JSON string becomes its text (nothing
when missing; objects and arrays as compact JSON). Any other template is text and gives a string.
Whether a template is JSON is decided here, once, not per event. See docs/decisions/input-transform.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from bus.errors import ManifestError

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_PATHS",
    "MAX_TEMPLATE_BYTES",
    "RESERVED_VARIABLES",
    "InputTransform",
    "compile_constant",
    "compile_transformer",
]

MAX_PATHS = 100
"""Most `input_paths` entries (EventBridge's limit)."""
MAX_TEMPLATE_BYTES = 8192
"""Longest `input_template`, in UTF-8 bytes (EventBridge: 8,192 characters)."""
MAX_INPUT_BYTES = 8192
"""Longest constant `input`, as compact JSON in UTF-8 bytes (EventBridge: 8,192 characters)."""
RESERVED_VARIABLES: Final = ("bus.event", "bus.event.attributes", "bus.rule.name")
"""Placeholders that need no `input_paths` entry; variable names cannot clash (they have no dots)."""

_MAX_PATH_CHARS = 256  # EventBridge's limit on one InputPathsMap value
_MAX_DEPTH = 64  # as bus.events.MAX_JSON_DEPTH: deeper templates and constants are refused
_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}\Z")
_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.-]+)>")
_PATH_NAME = re.compile(r"[A-Za-z0-9_/-]+")
_PATH_INDEX = re.compile(r"\[(\d+)\]")
_PATH_HINT = "write it like $.data.key, $.data['odd key'] or $.data.items[0]"
_DATA_KEYS = frozenset({"data", "data_base64"})
_TRANSFORMER_KEYS = {"input_paths", "input_template"}


class _Missing:
    """A path that leads nowhere in the event."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class _JsonPath:
    """A compiled JSONPath of the safe subset: names and array indexes from the root."""

    text: str
    steps: tuple[str | int, ...]

    def find(self, event: Mapping[str, Any]) -> Any:
        node: Any = event
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(node, list | tuple) or step >= len(node):
                    return _MISSING
                node = node[step]
            elif isinstance(node, Mapping) and step in node:
                node = node[step]
            else:
                return _MISSING
        return node


@dataclass(frozen=True, slots=True)
class _Variable:
    """One placeholder's source: a reserved name, or an `input_paths` name with its path."""

    name: str
    path: _JsonPath | None = None

    def resolve(self, event: Mapping[str, Any], rule_name: str) -> Any:
        if self.path is not None:
            return self.path.find(event)
        if self.name == "bus.rule.name":
            return rule_name
        if self.name == "bus.event":
            return event if isinstance(event, dict) else dict(event)
        return {key: value for key, value in event.items() if key not in _DATA_KEYS}


@dataclass(frozen=True, slots=True)
class _Literal:
    value: str | int | float | bool | None

    def render(self, values: Sequence[Any]) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class _Slot:
    """An unquoted placeholder: the value itself, `null` when its path is missing."""

    index: int

    def render(self, values: Sequence[Any]) -> Any:
        value = values[self.index]
        return None if value is _MISSING else value


@dataclass(frozen=True, slots=True)
class _Text:
    """A string with placeholders in it: literal parts and variable indexes."""

    parts: tuple[str | int, ...]

    def render(self, values: Sequence[Any]) -> str:
        return "".join([part if isinstance(part, str) else _as_text(values[part]) for part in self.parts])


@dataclass(frozen=True, slots=True)
class _Array:
    items: tuple[_Node, ...]

    def render(self, values: Sequence[Any]) -> list[Any]:
        return [item.render(values) for item in self.items]


@dataclass(frozen=True, slots=True)
class _Object:
    members: tuple[tuple[str, _Node], ...]

    def render(self, values: Sequence[Any]) -> dict[str, Any]:
        return {key: node.render(values) for key, node in self.members}


_Node = _Literal | _Slot | _Text | _Array | _Object


@dataclass(frozen=True, slots=True)
class InputTransform:
    """How one target's `data` is built from the event; compiled, so `apply` only assembles values."""

    kind: Literal["json", "text", "constant"]
    """json: a JSON template; text: a text template (data is a string); constant: a fixed `input`."""
    body: _Node
    """The data to build, with the template's placeholders as slots."""
    variables: tuple[_Variable, ...] = ()
    """The variables the template uses, each once, in order of first use."""

    def apply(self, event: Mapping[str, Any], rule_name: str) -> Any:
        """The new `data` for an event (CloudEvents JSON format) that matched rule `rule_name`.

        The result is built fresh but shares the values it takes from `event`: treat both as read-only.
        """
        return self.body.render([variable.resolve(event, rule_name) for variable in self.variables])


def compile_transformer(spec: Any, path: str) -> InputTransform:
    """Compile and validate an `input_transformer` found at manifest path `path`."""
    if not isinstance(spec, Mapping):
        raise ManifestError(
            path, f"must be a mapping with input_template (and input_paths), got {type(spec).__name__}"
        )
    for key in spec:
        if key not in _TRANSFORMER_KEYS:
            raise ManifestError(f"{path}.{key}", "unknown key (known: input_paths, input_template)")
    paths = _input_paths(spec.get("input_paths", {}), f"{path}.input_paths")
    if "input_template" not in spec:
        raise ManifestError(f"{path}.input_template", "is required, e.g. input_template: '{\"key\": <key>}'")
    return _template(spec["input_template"], paths, f"{path}.input_template")


def compile_constant(value: Any, path: str) -> InputTransform:
    """Compile a constant `input` (any JSON value, written as YAML) found at manifest path `path`."""
    body = _constant(value, path, 0)
    size = len(orjson.dumps(body.render([])))
    if size > MAX_INPUT_BYTES:
        raise ManifestError(
            path, f"is {size} bytes as JSON; the limit is {MAX_INPUT_BYTES}: pass large data another way"
        )
    return InputTransform(kind="constant", body=body)


# --- input paths ---------------------------------------------------------------------------------


def _input_paths(spec: Any, path: str) -> dict[str, _JsonPath]:
    if not isinstance(spec, Mapping):
        raise ManifestError(path, f"must be a mapping of names to JSONPaths, got {type(spec).__name__}")
    if len(spec) > MAX_PATHS:
        raise ManifestError(path, f"has {len(spec)} entries; the limit is {MAX_PATHS}")
    compiled: dict[str, _JsonPath] = {}
    for name, text in spec.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ManifestError(
                f"{path}.{name}",
                f"variable names use letters, digits, _ and - (at most 256), got {name!r}",
            )
        compiled[name] = _json_path(text, f"{path}.{name}")
    return compiled


def _json_path(text: Any, path: str) -> _JsonPath:
    if not isinstance(text, str):
        raise ManifestError(path, f"must be a JSONPath string; {_PATH_HINT}, got {text!r}")
    if len(text) > _MAX_PATH_CHARS:
        raise ManifestError(path, f"is {len(text)} characters long; the limit is {_MAX_PATH_CHARS}")
    if not text.startswith("$"):
        raise ManifestError(path, f"{text!r} must start at the event root $; {_PATH_HINT}")
    steps: list[str | int] = []
    at = 1
    while at < len(text):
        char = text[at]
        if char == "." and (name := _PATH_NAME.match(text, at + 1)):
            steps.append(name.group())
            at = name.end()
        elif char == "[" and (index := _PATH_INDEX.match(text, at)):
            steps.append(int(index.group(1)))
            at = index.end()
        elif char == "[" and text[at + 1 : at + 2] in ("'", '"'):
            name_text, at = _quoted_name(text, at + 1, path)
            steps.append(name_text)
        else:
            raise ManifestError(path, _path_problem(text, at))
    return _JsonPath(text=text, steps=tuple(steps))


def _quoted_name(text: str, at: int, path: str) -> tuple[str, int]:
    """The name in `['...']` or `["..."]` whose quote is at `at`, and the index after its `]`."""
    quote = text[at]
    name: list[str] = []
    at += 1
    while at < len(text):
        char = text[at]
        if char == "\\" and text[at + 1 : at + 2] in (quote, "\\"):
            name.append(text[at + 1])
            at += 2
        elif char == quote:
            if text[at + 1 : at + 2] != "]":
                break
            if not name:
                raise ManifestError(path, f"{text!r} names an empty key; {_PATH_HINT}")
            return "".join(name), at + 2
        else:
            name.append(char)
            at += 1
    raise ManifestError(path, f"{text!r} has an unterminated [{quote}...{quote}]; {_PATH_HINT}")


def _path_problem(text: str, at: int) -> str:
    rest = text[at:]
    if "*" in rest[:3]:
        return f"{text!r}: wildcards are not supported; name each field, {_PATH_HINT}"
    if rest.startswith(".."):
        return f"{text!r}: recursive descent (..) is not supported; {_PATH_HINT}"
    if rest.startswith("["):
        return f"{text!r}: brackets hold an array index like [0] or a quoted name like ['key']; {_PATH_HINT}"
    return f"{text!r} is not a supported JSONPath (unexpected {rest[0]!r} at {at + 1}); {_PATH_HINT}"


# --- templates -----------------------------------------------------------------------------------


def _template(template: Any, paths: Mapping[str, _JsonPath], path: str) -> InputTransform:
    if not isinstance(template, str):
        raise ManifestError(path, f"must be a string, got {type(template).__name__}")
    if not template.strip():
        raise ManifestError(path, "must not be empty; write the text or JSON the function should get")
    size = len(template.encode("utf-8"))
    if size > MAX_TEMPLATE_BYTES:
        raise ManifestError(
            path,
            f"is {size} bytes; the limit is {MAX_TEMPLATE_BYTES}: move large constants into the function",
        )
    variables: dict[str, _Variable] = {}
    indexes: dict[str, int] = {}
    pieces: list[_Piece] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in indexes:
            variables[name] = _variable(name, paths, path)
            indexes[name] = len(indexes)
        if match.start() > last:
            pieces.append(_Piece(last, template[last : match.start()]))
        pieces.append(_Piece(match.start(), match.group(), indexes[name]))
        last = match.end()
    if last < len(template):
        pieces.append(_Piece(last, template[last:]))
    used = tuple(variables.values())
    body = _json_template(template, pieces, path)
    if body is None:
        parts = tuple(piece.text if piece.index is None else piece.index for piece in pieces)
        return InputTransform(kind="text", body=_Text(parts), variables=used)
    return InputTransform(kind="json", body=body, variables=used)


@dataclass(frozen=True, slots=True)
class _Piece:
    """A run of template text: a literal, or a placeholder of variable `index`."""

    offset: int
    text: str
    index: int | None = None


def _variable(name: str, paths: Mapping[str, _JsonPath], path: str) -> _Variable:
    if name in paths:
        return _Variable(name, paths[name])
    if name in RESERVED_VARIABLES:
        return _Variable(name)
    names = [*paths, *RESERVED_VARIABLES]
    defined = ", ".join(f"<{known}>" for known in names[:12]) + (", ..." if len(names) > 12 else "")
    raise ManifestError(
        path,
        f"placeholder <{name}> is not defined in input_paths; add it there "
        f"(e.g. {name}: $.data.{name}) or use one of {defined}",
    )


def _json_template(template: str, pieces: list[_Piece], path: str) -> _Node | None:
    """The template compiled as JSON; None when it is text (it neither parses nor looks like JSON).

    Placeholders become markers (a JSON string where a value stands, bare text inside a string),
    the result is parsed once, and the markers in the parsed tree become slots.
    """
    # The markers carry a digest of the template, so no template can spell one out by itself.
    tag = "\ue000" + hashlib.sha256(template.encode("utf-8")).hexdigest()[:16]
    in_string = iter(_string_states(template, [piece.offset for piece in pieces if piece.index is not None]))
    rendered: list[str] = []
    starts: list[int] = []  # where each piece starts in the rendered text
    at = 0
    for piece in pieces:
        text = piece.text
        if piece.index is not None:
            quoted = next(in_string)
            text = f"{tag}{'s' if quoted else 'v'}{piece.index}\ue001"
            text = text if quoted else f'"{text}"'
        starts.append(at)
        rendered.append(text)
        at += len(text)
    starts.append(at)
    try:
        parsed = json.loads("".join(rendered), object_pairs_hook=_Pairs, parse_constant=_not_json)
    except RecursionError as exc:
        raise ManifestError(path, f"nests deeper than {_MAX_DEPTH} levels") from exc
    except ValueError as exc:  # json.JSONDecodeError, or _not_json
        if template.lstrip()[0] in '{["':
            reason = str(exc)
            if isinstance(exc, json.JSONDecodeError):
                reason = f"{exc.msg} at character {_template_offset(pieces, starts, exc.pos) + 1}"
            raise ManifestError(
                path,
                f"looks like JSON but is not, once placeholders are filled ({reason}); "
                'an unquoted <name> stands for a JSON value, "<name>" for text in a string',
            ) from exc
        return None
    return _tree(parsed, re.compile(re.escape(tag) + r"([sv])(\d+)\ue001"), path, 0)


class _Pairs(list[tuple[str, Any]]):
    """A parsed JSON object, kept as its pairs so that duplicate keys can be refused."""


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _string_states(template: str, offsets: list[int]) -> list[bool]:
    """For each offset (ascending), whether it lies inside a JSON string literal of the template."""
    states: list[bool] = []
    in_string = False
    at = 0
    for offset in offsets:
        while at < offset:
            char = template[at]
            if in_string and char == "\\":
                at += 2
                continue
            if char == '"':
                in_string = not in_string
            at += 1
        states.append(in_string)
    return states


def _template_offset(pieces: list[_Piece], starts: list[int], rendered_at: int) -> int:
    """Where in the template a position of the rendered text comes from (`starts` ends with its length)."""
    for piece, start, end in zip(reversed(pieces), reversed(starts[:-1]), reversed(starts[1:]), strict=True):
        if start <= rendered_at < end:
            return piece.offset + (rendered_at - start if piece.index is None else 0)
    return len(pieces[-1].text) + pieces[-1].offset if pieces and rendered_at > 0 else 0


def _tree(value: Any, markers: re.Pattern[str], path: str, depth: int) -> _Node:
    if depth > _MAX_DEPTH:
        raise ManifestError(path, f"nests deeper than {_MAX_DEPTH} levels")
    if isinstance(value, _Pairs):
        members: dict[str, _Node] = {}
        for key, item in value:
            if markers.search(key):
                raise ManifestError(
                    path, "a placeholder cannot be an object key (as in EventBridge); use it as a value"
                )
            if key in members:
                raise ManifestError(path, f"key {key!r} appears twice in one object")
            members[key] = _tree(item, markers, path, depth + 1)
        return _Object(tuple(members.items()))
    if isinstance(value, list):
        return _Array(tuple(_tree(item, markers, path, depth + 1) for item in value))
    if isinstance(value, str):
        split = markers.split(value)
        if len(split) == 1:
            return _Literal(value)
        if split[1] == "v":  # a value marker is always a whole JSON string
            return _Slot(int(split[2]))
        parts: list[str | int] = []
        for at, part in enumerate(split):
            if at % 3 == 0 and part:
                parts.append(part)
            elif at % 3 == 2:
                parts.append(int(part))
        return _Text(tuple(parts))
    return _Literal(value)


# --- constants -----------------------------------------------------------------------------------


def _constant(value: Any, path: str, depth: int) -> _Node:
    if depth > _MAX_DEPTH:
        raise ManifestError(path, f"nests deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, str | bool):
        return _Literal(value)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise ManifestError(path, f"{value} is too large for a JSON number on bus (64 bits)")
        return _Literal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(path, f"{value} is not a JSON number; quote it to send text")
        return _Literal(value)
    if isinstance(value, list):
        return _Array(tuple(_constant(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)))
    if isinstance(value, Mapping):
        members: list[tuple[str, _Node]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestError(f"{path}.{key}", f"JSON object keys are strings; quote {key!r}")
            members.append((key, _constant(item, f"{path}.{key}", depth + 1)))
        return _Object(tuple(members))
    raise ManifestError(
        path,
        f"must be JSON (text, number, boolean, null, list or mapping), got {type(value).__name__}; quote it",
    )


def _as_text(value: Any) -> str:
    """A value as it reads inside a string: text as is, other JSON compact, nothing when missing."""
    if isinstance(value, str):
        return value
    if value is _MISSING:
        return ""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson refuses big integers and non-string keys; the stdlib does not
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)

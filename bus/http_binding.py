"""CloudEvents HTTP binding: the one place an HTTP request becomes events and back (pure).

Modes: binary (`ce-*` headers, body = data), structured (`application/cloudevents+json`,
the body wins over any `ce-*` headers) and batch (`application/cloudevents-batch+json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import orjson

from bus.errors import InvalidEvent
from bus.events import (
    CONTEXT_ATTRIBUTES,
    STRUCTURED_CONTENT_TYPE,
    CloudEvent,
    Extension,
    data_from_bytes,
    data_to_bytes,
    from_json_dict,
    parse_json,
    to_json_dict,
)

__all__ = [
    "BATCH_CONTENT_TYPE",
    "STRUCTURED_CONTENT_TYPE",
    "from_http",
    "to_http_binary",
    "to_http_structured",
]

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
_PREFIX = "ce-"
# Header value characters the HTTP binding percent-encodes: space, '"', '%' and non-printables.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def from_http(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """Decode a request into its events; `headers` keys must be lower-case."""
    content_type = headers.get("content-type")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == STRUCTURED_CONTENT_TYPE:
        return [from_json_dict(parse_json(body, strict=True), strict=True)]
    if media == BATCH_CONTENT_TYPE:
        docs = parse_json(body, strict=True)
        if not isinstance(docs, list):
            raise InvalidEvent("body", "a batch must be a JSON array of CloudEvents")
        events = []
        for index, doc in enumerate(docs):
            try:
                events.append(from_json_dict(doc, strict=True))
            except InvalidEvent as exc:
                raise InvalidEvent(f"[{index}].{exc.field}", exc.reason) from exc
        return events
    return [_from_binary(headers, content_type, body)]


def _from_binary(headers: Mapping[str, str], content_type: str | None, body: bytes) -> CloudEvent:
    attributes: dict[str, Any] = {}
    extensions: dict[str, Extension] = {}
    for name, raw in headers.items():
        if not name.startswith(_PREFIX):
            continue
        attr = name[len(_PREFIX) :]
        if not raw.isascii():  # HTTP servers read header bytes as latin-1: UTF-8 would be mojibake
            raise InvalidEvent(
                name,
                "header value has non-ASCII characters; percent-encode them as UTF-8 "
                "(e.g. caf%C3%A9 for café), as the CloudEvents HTTP binding requires",
            )
        try:
            value = unquote(raw, errors="strict")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(name, "header is not percent-encoded UTF-8") from exc
        if attr in CONTEXT_ATTRIBUTES and attr != "datacontenttype":
            attributes[attr] = value
        else:
            extensions[attr] = value
    if "specversion" not in attributes:
        raise InvalidEvent(
            "ce-specversion",
            "header missing: send a binary CloudEvent (ce-* headers) or use content-type "
            f"{STRUCTURED_CONTENT_TYPE}",
        )
    for name in ("id", "source", "type"):
        if name not in attributes:
            raise InvalidEvent(_PREFIX + name, "required header is missing")
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return CloudEvent.create(
        **attributes, extensions=extensions, data=data_from_bytes(content_type, body or None, strict=True)
    )


def to_http_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Encode an event as binary-mode HTTP headers and body."""
    headers: dict[str, str] = {}
    for name, value in to_json_dict(event).items():
        if name in ("data", "data_base64", "datacontenttype"):
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        headers[_PREFIX + name] = quote(text, safe=_SAFE)
    if event.datacontenttype is not None:
        headers["content-type"] = event.datacontenttype
    elif event.data is not None and not isinstance(event.data, bytes):
        headers["content-type"] = "application/json"
    return headers, data_to_bytes(event) or b""


def to_http_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Encode an event as a structured-mode HTTP body."""
    return {"content-type": STRUCTURED_CONTENT_TYPE}, orjson.dumps(to_json_dict(event))

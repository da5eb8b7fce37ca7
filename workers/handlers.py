"""Loading user handlers (`module:callable`) and the context they receive."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from bus.clock import now_rfc3339
from bus.errors import HandlerLoadError
from bus.events import CloudEvent, Extension, to_json_dict
from bus.naming import function_source

__all__ = ["Context", "Handler", "load_handler", "new_context"]

Handler = Callable[..., Any]

_EMIT_IDS = uuid.UUID("0b7e4a52-3c1d-4f7a-9a0e-5d2c8e6f1b34")


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What a handler knows about its invocation (the second argument, `ctx`)."""

    function: str
    """Name of the function being invoked."""
    attempt: int
    """1 for the first attempt."""
    deadline: float
    """time.monotonic() value after which the invocation counts as timed out."""
    idempotency_key: str
    """The input event's id: stable across retries, for the handler's own side effects."""
    logger: logging.Logger
    prefix: str = "bus"
    """The deployment's topic prefix: the default source of emitted events names it."""
    cause_source: str = ""
    """The input event's source: with its id (`idempotency_key`), what names it uniquely."""
    emitted: list[bytes] = field(default_factory=list)
    """Events emitted so far by this invocation, in the CloudEvents JSON format, in order."""

    def emit(
        self,
        type: str,
        data: Any = None,
        *,
        source: str | None = None,
        subject: str | None = None,
        partitionkey: str | None = None,
        extensions: Mapping[str, Extension] | None = None,
    ) -> str:
        """Emit an event onto the bus once this invocation succeeds; returns its id.

        The id derives from the function, the input event's source and id and the emit's position
        in this invocation, so a re-run that emits the same events in the same order emits the
        same ids, and inputs of two sources with one id emit different ones.
        Raises InvalidEvent for a bad attribute and TypeError for data that is not JSON.
        """
        sequence = len(self.emitted)
        merged: dict[str, Extension] = dict(extensions or {})
        merged["causationid"] = self.idempotency_key
        if partitionkey is not None:
            merged["partitionkey"] = partitionkey
        event = CloudEvent.create(
            id=str(
                uuid.uuid5(
                    _EMIT_IDS,
                    f"{self.function}\x00{self.cause_source}\x00{self.idempotency_key}\x00{sequence}",
                )
            ),
            source=source if source is not None else function_source(self.prefix, self.function),
            type=type,
            time=now_rfc3339(),
            subject=subject,
            datacontenttype=None if data is None else _content_type(data),
            extensions=merged,
            data=data,
        )
        try:
            encoded = orjson.dumps(to_json_dict(event))
        except TypeError as exc:  # orjson.JSONEncodeError
            raise TypeError(f"ctx.emit({type!r}): data is not JSON ({exc})") from exc
        self.emitted.append(encoded)
        return event.id


_set = object.__setattr__


def new_context(  # noqa: PLR0917 - the fields positional: keywords cost about a call each
    function: str,
    attempt: int,
    deadline: float,
    idempotency_key: str,
    logger: logging.Logger,
    prefix: str,
    cause_source: str,
) -> Context:
    """`Context(...)` in about half the time (the handler host makes one per invocation): the
    frozen dataclass's own `__init__` looks `object.__setattr__` up again for every field.

    A field added to `Context` must be set here too: a unit test compares every field with
    `Context(...)`'s (tests/unit/test_handlers.py)."""
    ctx = object.__new__(Context)
    _set(ctx, "function", function)
    _set(ctx, "attempt", attempt)
    _set(ctx, "deadline", deadline)
    _set(ctx, "idempotency_key", idempotency_key)
    _set(ctx, "logger", logger)
    _set(ctx, "prefix", prefix)
    _set(ctx, "cause_source", cause_source)
    _set(ctx, "emitted", [])
    return ctx


def _content_type(data: Any) -> str:
    return "application/octet-stream" if isinstance(data, bytes | bytearray) else "application/json"


def load_handler(spec: str, *, base_dir: str) -> Handler:
    """Import `module:callable` with `base_dir` on sys.path; raise HandlerLoadError naming the fix."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise HandlerLoadError(f"handler {spec!r} must be 'module:callable'")
    if base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerLoadError(f"handler {spec!r}: cannot import {module_name!r} ({exc!r})") from exc
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise HandlerLoadError(f"handler {spec!r}: {module_name!r} has no attribute {attr!r}")
    if not callable(target):
        raise HandlerLoadError(f"handler {spec!r} is not callable")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return target  # type: ignore[no-any-return]  # callable without introspectable signature
    try:
        # Binding, not counting parameters: `(event, ctx, retries=3)` and `(*args)` are fine,
        # `(event, ctx, *, required)` is not.
        signature.bind(None, None)
    except TypeError as exc:
        raise HandlerLoadError(f"handler {spec!r} must be callable as handler(event, ctx): {exc}") from exc
    return target  # type: ignore[no-any-return]  # checked callable above

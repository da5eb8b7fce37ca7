"""Loading user handlers (`module:callable`) and the context they receive."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bus.errors import HandlerLoadError

__all__ = ["Context", "Handler", "load_handler"]

Handler = Callable[..., Any]


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

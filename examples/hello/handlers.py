"""The example function: greets whoever the event names."""

from typing import Any


def greet(event: Any, ctx: Any) -> dict[str, str]:
    """Return a greeting for `data.name`; the return value becomes the result event's data."""
    name = (event.data or {}).get("name", "world")
    return {"greeting": f"hello, {name}"}

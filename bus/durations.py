"""Durations as the manifest writes them: `500ms`, `30s`, `1m`, `2h` (pure)."""

from __future__ import annotations

import re
from typing import Any

from bus.errors import ManifestError

__all__ = ["parse_duration"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, path: str) -> float:
    """Seconds from `30s`, `500ms`, `1m`, `2h` or a plain number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str) and (match := _DURATION.match(value.strip())):
        return float(match.group(1)) * _UNITS[match.group(2)]
    raise ManifestError(path, f"{value!r} is not a duration like 500ms, 30s, 1m or 2h")

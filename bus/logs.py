"""Structured logs: one JSON line per notable decision, on stderr."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["RepeatFilter", "configure", "log_event"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure(level: str = "INFO") -> None:
    """Send every log record to stderr as one JSON line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one decision as `event` with its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


class RepeatFilter(logging.Filter):
    """Lets one record of each kind through per `window` seconds; the next one that passes says how
    many were held back (`suppressed`).

    Records are of one kind when their messages differ only in numbers: librdkafka logs every
    failed reconnect to a broker that is down ("... failed: Connection refused (after 0ms ...)"),
    hundreds of lines a minute per client, which buried the one line saying what is wrong.
    """

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}
        """Kind -> (when one last passed, records held back since)."""

    def filter(self, record: logging.LogRecord) -> bool:
        kind = _DIGITS.sub("#", record.getMessage())
        now = self._clock()
        with self._lock:
            passed, held = self._kinds.get(kind, (float("-inf"), 0))
            if now - passed < self._window:
                self._kinds[kind] = (passed, held + 1)
                return False
            if len(self._kinds) >= _MAX_KINDS:
                self._kinds.clear()
            self._kinds[kind] = (now, 0)
        if held:
            fields = getattr(record, "fields", None)
            record.fields = {**(fields if isinstance(fields, dict) else {}), "suppressed": held}
        return True


_DIGITS = re.compile(r"\d+")
_MAX_KINDS = 1_000
"""Kinds remembered at most (then forgotten at once): a bound, whatever a client logs."""

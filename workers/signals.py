"""What a handler can raise to steer its event, besides an ordinary exception (pure).

`raise Retry(after=30)` tries the event again after 30 s (an attempt, like any failure);
`raise DeadLetter("reason")` sends it to the DLQ at once, without further attempts.
"""

from __future__ import annotations

import math

__all__ = ["DeadLetter", "Retry"]


class Retry(Exception):
    """Try this event again after `after` seconds (None: the function's backoff for the attempt).

    The platform waits a week at most, however long `after` is.
    """

    def __init__(self, after: float | None = None, reason: str = "") -> None:
        if after is not None and not (
            isinstance(after, int | float)
            and not isinstance(after, bool)
            and math.isfinite(after)
            and after >= 0
        ):
            raise ValueError(
                f"Retry(after=...) must be a finite number of seconds >= 0, got {after!r}; "
                "leave it out to use the function's backoff"
            )
        super().__init__(reason or (f"retry after {after:g}s" if after is not None else "retry requested"))
        self.after = after
        self.reason = reason


class DeadLetter(Exception):
    """Give up on this event now: it goes to the DLQ (and its error to the failure destination)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

"""Per-key token buckets for `POST /events` (pure: time is passed in; RELIABILITY S8).

Each key has a bucket of `burst` tokens that refills at `rate` tokens per second; an event costs one
token and a batch of N events costs N, all or nothing. A refused request debits nothing and learns
`retry_after`, the seconds until its `cost` tokens are there (rounded up to the millisecond; an HTTP
`Retry-After` rounds it up again to whole seconds).

A cost above `burst` can never be paid: it is refused with `retry_after = math.inf`, and the gateway
answers 413 (the batch is larger than the key's burst, split it) rather than a 429 that no wait cures.

Memory is bounded by `max_keys`: past it the least recently used key is forgotten, and comes back
with a full bucket. Keys are authenticated principals, so only a client holding more than `max_keys`
live credentials could use this to refill one of them early. A clock that steps back refills
nothing; the bucket waits until time passes its last update again.

For one asyncio process: no locks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from bus.errors import ConfigError

__all__ = ["Decision", "RateLimiter"]

_SLACK = 1e-6
"""Seconds of float rounding forgiven: a unix time near 2e9 resolves to about 2.4e-7 s, so without it
a client waiting exactly `retry_after` could fall a millionth of a token short and be refused again."""
_MAX_SLACK_TOKENS = 0.5
"""Most tokens that slack may be worth: at absurd rates a microsecond must not pay for whole events."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may pass now, and if not, when to retry."""

    allowed: bool
    """True when the tokens were taken."""
    retry_after: float
    """Seconds until the request could pass (0.0 when allowed; `math.inf` when cost > burst)."""


_ALLOWED = Decision(allowed=True, retry_after=0.0)


class RateLimiter:
    """Token buckets by key, the least recently used forgotten beyond `max_keys`."""

    __slots__ = ("_buckets", "max_keys")

    def __init__(self, max_keys: int = 100_000) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError(f"rate limiter max_keys must be an integer >= 1, got {max_keys!r}")
        self.max_keys = max_keys
        """Most keys remembered; memory stays bounded however many keys are seen."""
        # key -> [tokens, last update]; in least-recently-used-first order.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        """How many keys have a bucket."""
        return len(self._buckets)

    def take(self, key: str, *, rate: float, burst: int, cost: int = 1, now: float) -> Decision:
        """Take `cost` tokens from `key`'s bucket (`burst` big, refilled at `rate` per second) at `now`."""
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            raise ConfigError(
                f"rate limit for {key!r}: rate must be a positive number per second, got {rate!r}"
            )
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"rate limit for {key!r}: burst must be an integer >= 1, got {burst!r}")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            raise ValueError(f"rate limit for {key!r}: cost must be an integer >= 0, got {cost!r}")
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = [float(burst), now]
        else:
            self._buckets.move_to_end(key)
            tokens, updated = bucket
            # max(): time that went backwards is not counted, and not counted twice when it returns.
            bucket[0] = min(float(burst), tokens + max(0.0, now - updated) * rate)
            bucket[1] = max(updated, now)
        if cost > burst:
            return Decision(allowed=False, retry_after=math.inf)
        if bucket[0] + min(rate * _SLACK, _MAX_SLACK_TOKENS) >= cost:
            bucket[0] = max(0.0, bucket[0] - cost)
            return _ALLOWED
        # Waiting from `now` counts only once the clock is past the bucket's last update again.
        wait = (cost - bucket[0]) / rate + (bucket[1] - now)
        return Decision(allowed=False, retry_after=max(0.001, math.ceil(wait * 1000) / 1000))

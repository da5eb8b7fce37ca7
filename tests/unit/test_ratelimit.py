"""Per-key token buckets for `POST /events` (RELIABILITY S8; SPEC §4, §8)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from bus.errors import ConfigError
from bus.ratelimit import Decision, RateLimiter

T0 = 1_700_000_000.0


def drain(limiter: RateLimiter, key: str, *, rate: float, burst: int, now: float) -> None:
    """Take every token `key` has at `now`."""
    for _ in range(burst):
        assert limiter.take(key, rate=rate, burst=burst, now=now).allowed


def test_decision_is_a_frozen_slotted_value() -> None:
    """A decision cannot be changed after take returned it."""
    decision = Decision(allowed=True, retry_after=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.allowed = False  # type: ignore[misc]
    assert not hasattr(decision, "__dict__")


def test_a_new_key_starts_with_a_full_bucket() -> None:
    """A key seen for the first time may send `burst` events at once, and not one more."""
    limiter = RateLimiter()
    drain(limiter, "k", rate=1.0, burst=5, now=T0)
    decision = limiter.take("k", rate=1.0, burst=5, now=T0)
    assert decision == Decision(allowed=False, retry_after=1.0)


@pytest.mark.parametrize(
    ("rate", "cost", "retry_after"),
    [
        (10.0, 1, 0.1),
        (1.0, 1, 1.0),
        (3.0, 1, 0.334),
        (0.5, 1, 2.0),
        (10.0, 5, 0.5),
        (7.0, 10, 1.429),
        (1000.0, 1, 0.001),
        (1e9, 1, 0.001),
    ],
)
def test_retry_after_is_the_time_until_the_cost_is_there(rate: float, cost: int, retry_after: float) -> None:
    """Refused, a request learns the seconds until `cost` tokens are back, rounded up to the ms."""
    limiter = RateLimiter()
    burst = 10
    drain(limiter, "k", rate=rate, burst=burst, now=T0)
    assert limiter.take("k", rate=rate, burst=burst, cost=cost, now=T0) == Decision(
        allowed=False, retry_after=retry_after
    )


@pytest.mark.parametrize(("rate", "cost"), [(3.0, 1), (7.0, 10), (0.3, 2), (10.0, 1), (1e6, 3)])
def test_waiting_retry_after_is_always_enough(rate: float, cost: int) -> None:
    """A client that waits exactly `retry_after` is let through (rounding never makes it wait twice)."""
    limiter = RateLimiter()
    drain(limiter, "k", rate=rate, burst=10, now=T0)
    refused = limiter.take("k", rate=rate, burst=10, cost=cost, now=T0)
    assert not refused.allowed
    assert limiter.take("k", rate=rate, burst=10, cost=cost, now=T0 + refused.retry_after).allowed


def test_a_refused_request_debits_nothing() -> None:
    """Refusals do not drain the bucket: hammering while limited does not push the retry time back."""
    limiter = RateLimiter()
    drain(limiter, "k", rate=10.0, burst=10, now=T0)
    for step in range(50):
        now = T0 + step * 0.001
        decision = limiter.take("k", rate=10.0, burst=10, now=now)
        assert not decision.allowed
        assert decision.retry_after == pytest.approx(0.1 - step * 0.001, abs=0.0011)
    assert limiter.take("k", rate=10.0, burst=10, now=T0 + 0.1).allowed


def test_a_batch_costs_one_token_per_event_all_or_nothing() -> None:
    """A batch of N events takes N tokens at once, or none when fewer are left."""
    limiter = RateLimiter()
    assert limiter.take("k", rate=1.0, burst=10, cost=7, now=T0).allowed
    refused = limiter.take("k", rate=1.0, burst=10, cost=4, now=T0)
    assert refused == Decision(allowed=False, retry_after=1.0)
    assert limiter.take("k", rate=1.0, burst=10, cost=3, now=T0).allowed
    assert not limiter.take("k", rate=1.0, burst=10, now=T0).allowed


def test_a_batch_larger_than_the_burst_can_never_pass() -> None:
    """cost > burst is refused with retry_after = inf (the gateway answers 413), and debits nothing."""
    limiter = RateLimiter()
    decision = limiter.take("k", rate=100.0, burst=10, cost=11, now=T0)
    assert not decision.allowed
    assert math.isinf(decision.retry_after)
    assert limiter.take("k", rate=100.0, burst=10, cost=10, now=T0).allowed


def test_an_empty_batch_is_free() -> None:
    """cost 0 passes even on an empty bucket."""
    limiter = RateLimiter()
    drain(limiter, "k", rate=1.0, burst=2, now=T0)
    assert limiter.take("k", rate=1.0, burst=2, cost=0, now=T0) == Decision(allowed=True, retry_after=0.0)


def test_tokens_refill_over_time_up_to_the_burst() -> None:
    """Tokens come back at `rate` per second and never beyond `burst`, however long the key idles."""
    limiter = RateLimiter()
    drain(limiter, "k", rate=2.0, burst=4, now=T0)
    assert limiter.take("k", rate=2.0, burst=4, cost=2, now=T0 + 1.0).allowed
    assert not limiter.take("k", rate=2.0, burst=4, now=T0 + 1.0).allowed
    drain(limiter, "k", rate=2.0, burst=4, now=T0 + 3600)
    assert not limiter.take("k", rate=2.0, burst=4, now=T0 + 3600).allowed


def test_one_client_bursting_ten_times_its_limit_is_refused_and_others_are_not() -> None:
    """S8: a key sending 10x its rate for 10 s gets about its rate through, the rest refused with a
    retry_after of at most one token's time, while a well-behaved key sharing the limiter is never refused."""
    limiter = RateLimiter()
    rate, burst = 10.0, 10
    loud = {"allowed": 0, "refused": 0}
    quiet_refused = 0
    for step in range(1000):  # 100 requests/s for 10 s, 10x the limit
        now = T0 + step * 0.01
        decision = limiter.take("loud", rate=rate, burst=burst, now=now)
        if decision.allowed:
            loud["allowed"] += 1
        else:
            loud["refused"] += 1
            assert 0 < decision.retry_after <= 0.1
        if step % 20 == 0:  # 5 requests/s, half the limit
            quiet_refused += not limiter.take("quiet", rate=rate, burst=burst, now=now).allowed
    assert burst + 99 <= loud["allowed"] <= burst + 101  # the burst, then 10/s for ~10 s
    assert loud["refused"] == 1000 - loud["allowed"]
    assert quiet_refused == 0


def test_keys_have_separate_buckets_with_their_own_limits() -> None:
    """Each key is limited by the rate and burst passed for it, independently of the others."""
    limiter = RateLimiter()
    drain(limiter, "a", rate=1.0, burst=1, now=T0)
    assert not limiter.take("a", rate=1.0, burst=1, now=T0).allowed
    drain(limiter, "b", rate=1.0, burst=100, now=T0)
    assert len(limiter) == 2


def test_a_clock_going_backwards_creates_no_tokens() -> None:
    """Stepping the clock back and forth refills nothing: only time past the last update counts."""
    limiter = RateLimiter()
    drain(limiter, "k", rate=10.0, burst=10, now=T0)
    back = limiter.take("k", rate=10.0, burst=10, now=T0 - 60)
    assert not back.allowed
    assert back.retry_after == pytest.approx(60.1)
    assert not limiter.take("k", rate=10.0, burst=10, now=T0).allowed
    assert not limiter.take("k", rate=10.0, burst=10, now=T0 - 3600).allowed
    assert limiter.take("k", rate=10.0, burst=10, now=T0 + 0.1).allowed
    assert not limiter.take("k", rate=10.0, burst=10, now=T0 + 0.1).allowed


def test_lowering_the_burst_caps_the_tokens_at_once() -> None:
    """A key whose burst is lowered (configuration reloaded) keeps no more than the new burst."""
    limiter = RateLimiter()
    assert limiter.take("k", rate=1.0, burst=100, now=T0).allowed
    drain(limiter, "k", rate=1.0, burst=3, now=T0)
    assert not limiter.take("k", rate=1.0, burst=3, now=T0).allowed


def test_memory_is_bounded_by_evicting_the_least_recently_used_key() -> None:
    """Beyond max_keys the least recently used key is forgotten; it comes back with a full bucket."""
    limiter = RateLimiter(max_keys=3)
    for key in ("a", "b", "c"):
        drain(limiter, key, rate=1.0, burst=2, now=T0)
    assert not limiter.take("a", rate=1.0, burst=2, now=T0).allowed  # a is now the most recent
    drain(limiter, "d", rate=1.0, burst=2, now=T0)  # evicts b, the least recently used
    assert len(limiter) == 3
    assert not limiter.take("a", rate=1.0, burst=2, now=T0).allowed  # a kept its empty bucket
    drain(limiter, "b", rate=1.0, burst=2, now=T0)  # b is back, full; evicts c
    assert len(limiter) == 3
    drain(limiter, "c", rate=1.0, burst=2, now=T0)


def test_a_flood_of_keys_stays_within_max_keys() -> None:
    """However many distinct keys are seen, at most max_keys buckets are kept."""
    limiter = RateLimiter(max_keys=100)
    for index in range(10_000):
        limiter.take(f"key-{index}", rate=1.0, burst=1, now=T0 + index)
    assert len(limiter) == 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.0},
        {"rate": -1.0},
        {"rate": math.inf},
        {"rate": math.nan},
        {"rate": True},
        {"burst": 0},
        {"burst": 1.5},
        {"burst": True},
    ],
)
def test_meaningless_limits_are_a_config_error(kwargs: dict[str, Any]) -> None:
    """A rate that is not a positive finite number or a burst that is not an integer >= 1 is refused."""
    args: dict[str, Any] = {"rate": 1.0, "burst": 1, **kwargs}
    with pytest.raises(ConfigError):
        RateLimiter().take("k", now=T0, **args)


@pytest.mark.parametrize("cost", [-1, 1.5, True])
def test_cost_must_be_a_whole_number_of_events(cost: Any) -> None:
    """A negative or fractional cost is a programming error."""
    with pytest.raises(ValueError, match="cost"):
        RateLimiter().take("k", rate=1.0, burst=1, cost=cost, now=T0)


@pytest.mark.parametrize("max_keys", [0, -1, 1.5, True])
def test_max_keys_must_be_a_positive_integer(max_keys: Any) -> None:
    """A limiter that could remember no key is refused at construction."""
    with pytest.raises(ConfigError):
        RateLimiter(max_keys=max_keys)

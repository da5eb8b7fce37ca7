"""The user's test helper (workers.testing): a handler's outcomes without a broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bus.events import CloudEvent
from bus.kafka_binding import from_record, to_record
from bus.manifest import RetryPolicy
from bus.settings import KafkaSettings
from workers.handlers import Context
from workers.signals import DeadLetter, Retry
from workers.testing import TestInvocation, invoke, run


def greet(event: CloudEvent, ctx: Context) -> dict[str, Any]:
    ctx.emit("greeting.sent", {"to": event.data["name"]})
    return {"greeting": f"hello {event.data['name']}", "attempt": ctx.attempt}


def test_a_dict_is_enough_for_an_event() -> None:
    """A dict with a type and data is filled in (specversion, id, source) and invoked."""
    call = invoke(greet, {"type": "user.joined", "data": {"name": "ada"}})
    assert call.outcome == "ok"
    assert call.value == {"greeting": "hello ada", "attempt": 1}
    assert call.error is None


def test_the_result_event_is_the_platforms() -> None:
    """`result` is the bus.function.result event the platform would publish, caused by the input."""
    event = CloudEvent.create(id="in-1", source="shop", type="user.joined", data={"name": "ada"})
    call = invoke(greet, event, function="greeter", attempt=2)
    assert call.result is not None
    assert (call.result.type, call.result.source) == ("bus.function.result", "bus://bus/functions/greeter")
    assert call.result.extensions["causationid"] == "in-1"
    assert call.result.data == {"greeting": "hello ada", "attempt": 2}


def test_emitted_events_are_cloudevents() -> None:
    """Events the handler emitted are listed as CloudEvents with the platform's ids and lineage."""
    event = CloudEvent.create(id="in-1", source="shop", type="user.joined", data={"name": "ada"})
    first, again = invoke(greet, event), invoke(greet, event)
    assert [e.type for e in first.emitted] == ["greeting.sent"]
    assert first.emitted[0].data == {"to": "ada"}
    assert first.emitted[0].extensions["causationid"] == "in-1"
    assert first.emitted[0].id == again.emitted[0].id


def test_failures_and_signals_are_described() -> None:
    """An exception, DeadLetter and Retry come back as outcomes with the error's type and message."""

    def broken(event: CloudEvent, ctx: Context) -> None:
        raise KeyError("sku")

    def poison(event: CloudEvent, ctx: Context) -> None:
        raise DeadLetter("not an order")

    def busy(event: CloudEvent, ctx: Context) -> None:
        raise Retry(after=30)

    failed = invoke(broken, {"type": "t"})
    assert failed.outcome == "failed"
    assert failed.error is not None
    assert str(failed.error) == "KeyError: 'sku'"
    dead = invoke(poison, {"type": "t"})
    assert (dead.outcome, dead.error and dead.error.message) == ("dead_letter", "not an order")
    retry = invoke(busy, {"type": "t"})
    assert (retry.outcome, retry.retry_after) == ("retry", 30)


def test_a_result_that_is_not_json_fails() -> None:
    """Returning something JSON cannot hold fails as the platform would."""
    call = invoke(lambda event, ctx: {1, 2}, {"type": "t"})
    assert call.outcome == "failed"
    assert call.error is not None
    assert (call.error.type, call.error.cause) == ("ResultNotSerializable", "result")


def test_async_handlers_work() -> None:
    """An async handler is awaited to its result."""

    async def double(event: CloudEvent, ctx: Context) -> int:
        await asyncio.sleep(0)
        return int(event.data) * 2

    assert invoke(double, {"type": "t", "data": 21}).value == 42


def test_async_handlers_work_inside_a_running_loop() -> None:
    """Called from code already inside an event loop, an async handler runs on a loop of its own."""

    async def echo(event: CloudEvent, ctx: Context) -> Any:
        return event.data

    async def from_async_code() -> TestInvocation:
        return invoke(echo, {"type": "t", "data": "x"})

    assert asyncio.run(from_async_code()).value == "x"


def test_timeouts_are_reported() -> None:
    """An async handler is cut at the timeout; a sync one that ran past it is reported timed out."""

    async def stuck(event: CloudEvent, ctx: Context) -> None:
        await asyncio.sleep(10)

    def slow(event: CloudEvent, ctx: Context) -> str:
        time.sleep(0.1)
        return "done"

    for handler in (stuck, slow):
        call = invoke(handler, {"type": "t"}, timeout=0.05)
        assert call.error is not None
        assert (call.outcome, call.error.type, call.error.cause) == ("failed", "TimeoutError", "timeout")


def test_run_retries_until_success() -> None:
    """run() tries again after a failure, with the attempt number rising, and stops at success."""

    def flaky(event: CloudEvent, ctx: Context) -> int:
        if ctx.attempt < 2:
            raise ConnectionError("db down")
        return ctx.attempt

    outcome = run(flaky, {"type": "t"})
    assert outcome.outcome == "ok"
    assert [a.outcome for a in outcome.attempts] == ["failed", "ok"]
    assert outcome.delays == [1.0]
    assert outcome.last.value == 2


def test_run_dead_letters_after_the_last_attempt() -> None:
    """A handler that always fails is dead-lettered after the policy's attempts, each delay counted."""

    def down(event: CloudEvent, ctx: Context) -> None:
        raise ConnectionError("db down")

    outcome = run(down, {"type": "t"}, retry=RetryPolicy(attempts=4, backoff=(1.0, 5.0)))
    assert outcome.outcome == "dead_letter"
    assert [a.attempt for a in outcome.attempts] == [1, 2, 3, 4]
    assert outcome.delays == [1.0, 5.0, 5.0]


@pytest.mark.parametrize(
    ("handler", "attempts"),
    [
        (lambda event, ctx: (_ for _ in ()).throw(DeadLetter("bad")), 1),
        (lambda event, ctx: object(), 1),
    ],
    ids=["dead-letter", "result-not-json"],
)
def test_run_stops_at_once_when_no_retry_can_help(handler: Any, attempts: int) -> None:
    """DeadLetter, and a result that is not JSON, end the run at the first attempt."""
    outcome = run(handler, {"type": "t"})
    assert (outcome.outcome, len(outcome.attempts), outcome.delays) == ("dead_letter", attempts, [])


def test_run_honours_retry_after() -> None:
    """Retry(after=...) replaces the policy's delay; the run still ends after the last attempt."""

    def later(event: CloudEvent, ctx: Context) -> None:
        raise Retry(after=42)

    outcome = run(later, {"type": "t"})
    assert (outcome.outcome, outcome.delays) == ("dead_letter", [42, 42])
    assert [a.outcome for a in outcome.attempts] == ["retry", "retry", "retry"]


def test_the_same_event_is_retried() -> None:
    """Every attempt of a run sees the same event id, as retries on the platform do."""
    seen: list[str] = []

    def record(event: CloudEvent, ctx: Context) -> None:
        seen.append(ctx.idempotency_key)
        raise ValueError("again")

    run(record, {"type": "t"})
    assert len(seen) == 3
    assert len(set(seen)) == 1


def test_a_result_too_large_for_a_record_fails_for_good() -> None:
    """A result over the platform's record limit fails with cause "result" and is not retried."""
    big = "x" * KafkaSettings().max_record_bytes
    call = invoke(lambda event, ctx: big, {"type": "t"})
    assert call.error is not None
    assert (call.outcome, call.error.type, call.error.cause) == ("failed", "ValueError", "result")
    assert call.error.message.startswith("result is ")
    assert len(run(lambda event, ctx: big, {"type": "t"}).attempts) == 1


def test_an_emitted_event_too_large_for_a_record_fails() -> None:
    """An emitted event over the record limit fails the invocation, whatever the result's size."""

    def chatty(event: CloudEvent, ctx: Context) -> str:
        ctx.emit("big.thing", {"blob": "x" * 2_000})
        return "small"

    call = invoke(chatty, {"type": "t"}, max_record_bytes=1_000)
    assert call.error is not None
    assert (call.outcome, call.error.cause) == ("failed", "result")
    assert call.error.message == "an emitted event is over the 1000-byte record limit"
    assert [e.type for e in call.emitted] == ["big.thing"]
    assert invoke(chatty, {"type": "t"}).outcome == "ok"


@pytest.mark.parametrize("after", [float("inf"), float("nan"), -1.0])
def test_a_retry_delay_that_is_not_a_finite_number_fails_at_the_raise(after: float) -> None:
    """Retry(after=inf, nan or a negative number) is a ValueError in the handler, as on the platform."""

    def endless(event: CloudEvent, ctx: Context) -> None:
        raise Retry(after=after)

    call = invoke(endless, {"type": "t"})
    assert call.error is not None
    assert (call.outcome, call.error.type) == ("failed", "ValueError")
    assert "must be a finite number of seconds" in call.error.message


def test_run_caps_retry_after_at_a_week() -> None:
    """A Retry(after=...) longer than a week counts a week, as the platform waits no longer."""

    def much_later(event: CloudEvent, ctx: Context) -> None:
        raise Retry(after=30 * 24 * 3600)

    outcome = run(much_later, {"type": "t"}, retry=RetryPolicy(attempts=2))
    assert outcome.delays == [7 * 24 * 3600]
    assert outcome.attempts[0].retry_after == 30 * 24 * 3600


@pytest.mark.parametrize("data", [{"a": 1}, "hello", [1, 2], 5])
def test_the_handler_sees_the_event_as_the_platform_gives_it(data: Any) -> None:
    """Through the binary-mode record the router writes: JSON data gets its content type there."""
    seen: list[CloudEvent] = []
    invoke(lambda event, ctx: seen.append(event), {"type": "t", "source": "s", "id": "1", "data": data})
    record = to_record(CloudEvent.create(type="t", source="s", id="1", data=data))
    on_platform = from_record(record.key, record.value, record.headers)
    assert seen == [on_platform]
    assert seen[0].datacontenttype == "application/json"

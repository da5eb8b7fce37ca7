"""One invocation as data (workers.invocation): what a handler's return or raise becomes."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import orjson
import pytest

from bus.errors import InvalidEvent
from bus.events import CloudEvent
from workers.handlers import Context
from workers.invocation import Outcome, crashed, describe, is_async, run_async, run_sync, timed_out
from workers.signals import DeadLetter, Retry

EVENT = CloudEvent.create(id="in-1", source="test", type="t", data={"n": 1})


def context(*, timeout: float = 5.0, function: str = "fn", event_id: str = "in-1") -> Context:
    return Context(
        function=function,
        attempt=1,
        deadline=time.monotonic() + timeout,
        idempotency_key=event_id,
        logger=logging.getLogger("test"),
    )


def sync(handler: Any, **kw: Any) -> Outcome:
    return run_sync(handler, EVENT, context(), id=7, **kw)


def test_a_return_value_is_its_json() -> None:
    """A returned value is carried as its JSON encoding, with the invocation's id and a duration."""
    outcome = sync(lambda event, ctx: {"got": event.data})
    assert (outcome.id, outcome.kind, outcome.value) == (7, "ok", b'{"got":{"n":1}}')
    assert outcome.duration >= 0


def test_none_is_json_null() -> None:
    """A handler returning None succeeds with the value null."""
    assert sync(lambda event, ctx: None).value == b"null"


@pytest.mark.parametrize("value", [{1, 2}, object(), {1: "non-string key"}, 2**70])
def test_a_value_json_cannot_hold_fails_as_not_serializable(value: Any) -> None:
    """Sets, objects, non-string keys and huge ints fail with cause "result" (no retry fixes them)."""
    outcome = sync(lambda event, ctx: value)
    assert (outcome.kind, outcome.error_type, outcome.cause) == ("failed", "ResultNotSerializable", "result")
    assert outcome.message.startswith("the return value is not JSON")


def test_an_exception_fails_with_type_message_and_traceback() -> None:
    """An exception becomes a failed outcome naming its type and message, with the traceback."""

    def boom(event: CloudEvent, ctx: Context) -> None:
        raise ValueError("no stock")

    outcome = sync(boom)
    assert (outcome.kind, outcome.error_type, outcome.message, outcome.cause) == (
        "failed",
        "ValueError",
        "no stock",
        "exception",
    )
    assert "in boom" in outcome.traceback


def test_retry_asks_for_another_attempt_with_its_delay() -> None:
    """Retry(after=...) is kind "retry" carrying the delay; Retry() leaves it to the policy."""

    def later(event: CloudEvent, ctx: Context) -> None:
        raise Retry(after=2.5)

    def whenever(event: CloudEvent, ctx: Context) -> None:
        raise Retry()

    assert (sync(later).kind, sync(later).retry_after) == ("retry", 2.5)
    assert (sync(whenever).kind, sync(whenever).retry_after) == ("retry", None)


@pytest.mark.parametrize("after", [float("inf"), float("-inf"), float("nan"), -0.5, "10", True])
def test_retry_refuses_a_delay_that_is_not_a_finite_number(after: Any) -> None:
    """Retry(after=...) must be a finite number of seconds >= 0; the error says how to get the backoff."""
    with pytest.raises(ValueError, match=r"finite number of seconds >= 0.*leave it out"):
        Retry(after=after)


async def _in_task_group(*signals: BaseException) -> None:
    async def raising(exc: BaseException) -> None:
        raise exc

    async with asyncio.TaskGroup() as group:
        for exc in signals:
            group.create_task(raising(exc))


@pytest.mark.parametrize(
    ("signals", "kind", "after"),
    [
        ((Retry(after=1.0), Retry(after=3.0)), "retry", 3.0),
        ((Retry(after=1.0), DeadLetter("bad")), "dead_letter", None),
        ((Retry(after=1.0), ValueError("boom")), "failed", None),
    ],
)
def test_signals_raised_in_a_task_group_keep_their_meaning(
    signals: tuple[BaseException, ...], kind: str, after: float | None
) -> None:
    """asyncio.TaskGroup wraps its tasks' exceptions in a group: signals alone are still signals."""

    async def handler(event: CloudEvent, ctx: Context) -> None:
        await _in_task_group(*signals)

    outcome = asyncio.run(run_async(handler, EVENT, context(), id=7))
    assert (outcome.kind, outcome.retry_after) == (kind, after)


def test_dead_letter_gives_up_with_its_reason() -> None:
    """DeadLetter(reason) is kind "dead_letter" whose message is the reason."""

    def poison(event: CloudEvent, ctx: Context) -> None:
        raise DeadLetter("unknown customer")

    outcome = sync(poison)
    assert (outcome.kind, outcome.message, outcome.error_type) == (
        "dead_letter",
        "unknown customer",
        "DeadLetter",
    )


def test_system_exit_from_a_handler_is_a_failure() -> None:
    """sys.exit in a handler fails the invocation instead of stopping anything."""

    def leave(event: CloudEvent, ctx: Context) -> None:
        raise SystemExit(3)

    assert (sync(leave).kind, sync(leave).error_type) == ("failed", "SystemExit")


def test_keyboard_interrupt_is_not_swallowed() -> None:
    """Ctrl-C still stops the caller: KeyboardInterrupt passes through."""

    def interrupted(event: CloudEvent, ctx: Context) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(interrupted)


def test_an_exception_whose_str_raises_is_still_described() -> None:
    """A broken __str__ gives a placeholder message instead of crashing the host."""

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe(Broken())[:2] == ("Broken", "<unprintable Broken>")


def test_text_that_is_not_utf8_is_escaped() -> None:
    """Lone surrogates in an exception's message and a DeadLetter reason come out escaped, as UTF-8."""

    def lost(event: CloudEvent, ctx: Context) -> None:
        raise FileNotFoundError("no such file: caf\udce9")

    def poison(event: CloudEvent, ctx: Context) -> None:
        raise DeadLetter("bad name caf\udce9")

    failed, dead = sync(lost), sync(poison)
    assert failed.message == "no such file: caf\\udce9"
    assert "FileNotFoundError: no such file: caf\\udce9" in failed.traceback
    assert dead.message == "bad name caf\\udce9"
    for text in (failed.message, failed.traceback, dead.message, dead.traceback):
        text.encode()


def test_memory_error_names_the_limit() -> None:
    """A MemoryError has cause "memory" and, under a limit, a message naming it."""

    def hungry(event: CloudEvent, ctx: Context) -> None:
        raise MemoryError

    outcome = sync(hungry, memory_mb=256)
    assert (outcome.error_type, outcome.cause, outcome.message) == (
        "MemoryError",
        "memory",
        "memory limit of 256 MiB exceeded",
    )


def test_emit_ids_depend_on_function_input_and_order() -> None:
    """Emitted ids are uuid5 of function, input id and position: equal on a re-run, distinct otherwise."""

    def twice(ctx: Context) -> list[str]:
        return [ctx.emit("a.b"), ctx.emit("a.b")]

    first, again = twice(context()), twice(context())
    assert first == again
    assert len(set(first)) == 2
    assert twice(context(function="other")) != first
    assert twice(context(event_id="in-2")) != first
    uuid.UUID(first[0])


def test_emitted_events_carry_lineage_and_defaults() -> None:
    """An emitted event has the function's source, causationid = the input id, and the given attributes."""
    ctx = context()
    ctx.emit("order.shipped", {"id": 1}, subject="o-1", partitionkey="c-9", extensions={"tenant": "acme"})
    ctx.emit("raw.bytes", b"\x00\x01", source="urn:custom")
    shipped, raw = (orjson.loads(doc) for doc in ctx.emitted)
    assert shipped["source"] == "bus://bus/functions/fn"
    assert (shipped["causationid"], shipped["partitionkey"], shipped["tenant"]) == ("in-1", "c-9", "acme")
    assert (shipped["subject"], shipped["data"], shipped["datacontenttype"]) == (
        "o-1",
        {"id": 1},
        "application/json",
    )
    assert (raw["source"], raw["data_base64"]) == ("urn:custom", "AAE=")


def test_emit_refuses_what_is_not_an_event() -> None:
    """A bad attribute raises InvalidEvent and data that is not JSON a TypeError, in the handler."""
    ctx = context()
    with pytest.raises(InvalidEvent, match="type"):
        ctx.emit("")
    with pytest.raises(TypeError, match=r"ctx.emit\('a.b'\): data is not JSON"):
        ctx.emit("a.b", {1, 2})
    assert ctx.emitted == []


def test_emitted_events_come_with_any_outcome() -> None:
    """What a handler emitted before failing is in its outcome; the runtime decides what to publish."""

    def half(event: CloudEvent, ctx: Context) -> None:
        ctx.emit("step.one")
        raise ValueError("step two")

    outcome = sync(half)
    assert outcome.kind == "failed"
    assert orjson.loads(outcome.emitted[0])["type"] == "step.one"


def test_async_handlers_are_recognised() -> None:
    """async def functions and objects with an async __call__ are async; plain functions are not."""

    async def coroutine(event: CloudEvent, ctx: Context) -> None:
        return None

    class Callable:
        async def __call__(self, event: CloudEvent, ctx: Context) -> None:
            return None

    assert is_async(coroutine)
    assert is_async(Callable())
    assert not is_async(lambda event, ctx: None)


def test_async_handler_outcomes_match_sync_ones() -> None:
    """run_async gives the same shapes as run_sync for values and signals."""

    async def value(event: CloudEvent, ctx: Context) -> Any:
        return event.data

    async def retry(event: CloudEvent, ctx: Context) -> None:
        raise Retry(after=1)

    assert asyncio.run(run_async(value, EVENT, context())).value == b'{"n":1}'
    assert asyncio.run(run_async(retry, EVENT, context())).kind == "retry"


def test_async_handler_past_its_deadline_times_out() -> None:
    """An async handler still awaiting at ctx.deadline is cancelled: TimeoutError, cause "timeout"."""

    async def slow(event: CloudEvent, ctx: Context) -> None:
        await asyncio.sleep(10)

    outcome = asyncio.run(run_async(slow, EVENT, context(timeout=0.05)))
    assert (outcome.kind, outcome.error_type, outcome.cause) == ("failed", "TimeoutError", "timeout")
    # The budget is what was left when the handler started (a loaded machine starts it later).
    assert re.fullmatch(r"did not finish within 0\.0[0-5]\d*s", outcome.message), outcome.message


def test_a_handlers_own_timeout_error_is_an_exception() -> None:
    """A TimeoutError the handler raises itself (a slow API) is an ordinary exception, not a timeout."""

    async def api(event: CloudEvent, ctx: Context) -> None:
        raise TimeoutError("upstream slow")

    outcome = asyncio.run(run_async(api, EVENT, context()))
    assert (outcome.error_type, outcome.cause, outcome.message) == (
        "TimeoutError",
        "exception",
        "upstream slow",
    )


def test_a_sync_handler_returning_a_coroutine_is_awaited() -> None:
    """A sync callable that returns an awaitable has it run to completion, within the deadline."""

    async def later() -> int:
        return 42

    assert sync(lambda event, ctx: later()).value == b"42"


def test_outcomes_decided_outside_the_handler() -> None:
    """The sandbox's own verdicts have the documented shapes."""
    assert timed_out(1, timeout=2, duration=2.5).message == "did not finish within 2s"
    assert crashed(1, message="exited").error_type == "HandlerCrashed"
    assert crashed(1, message="oom", cause="memory").error_type == "MemoryError"

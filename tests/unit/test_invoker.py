"""The worker's transform: each input becomes exactly its outcome records, whatever the handler does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from bus import naming
from bus.deadletter import dead_letter
from bus.events import CloudEvent
from bus.kafka_binding import Record, from_record, header, to_record
from bus.manifest import Destinations, Function
from workers.worker import AsyncRunner, Invoker

PREFIX = "t"
LIMIT = 10_000


@dataclass
class Message:
    """A consumed record as the loop hands it over (the InMessage protocol)."""

    record: Record
    where: tuple[str, int, int] = ("t.fn.f", 0, 7)

    def topic(self) -> str:
        return self.where[0]

    def partition(self) -> int:
        return self.where[1]

    def offset(self) -> int:
        return self.where[2]

    def key(self) -> bytes | None:
        return self.record.key

    def value(self) -> bytes | None:
        return self.record.value

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self.record.headers)

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def _message(data: Any = None) -> Message:
    event = CloudEvent.create(id="in-1", source="tests", type="demo", subject="s", data=data)
    return Message(to_record(event))


@pytest.fixture(scope="module")
def runner() -> Iterator[AsyncRunner]:
    """One event loop thread for the async handlers of this module."""
    with AsyncRunner() as running:
        yield running


def _invoke(runner: AsyncRunner, handler: Any, message: Message) -> dict[str, list[Record]]:
    function = Function(
        name="f",
        handler="x:y",
        timeout=2.0,
        destinations=Destinations(
            on_success=naming.result_topic(PREFIX, "f"), on_failure=naming.error_topic(PREFIX, "f")
        ),
    )
    invoker = Invoker(
        prefix=PREFIX, function=function, handler=handler, runner=runner, max_record_bytes=LIMIT
    )
    by_topic: dict[str, list[Record]] = {}
    for output in invoker([message]):
        by_topic.setdefault(output.topic, []).append(output.record)
    return by_topic


def _failed_with(outputs: dict[str, list[Record]], error_type: str) -> dict[str, Any]:
    """Assert the one-error-plus-one-dead-letter outcome; return the error record's data."""
    assert set(outputs) == {"t.fn.f.errors", "t.fn.f.dlq"}
    (error,) = outputs["t.fn.f.errors"]
    (dead,) = outputs["t.fn.f.dlq"]
    assert header(dead.headers, "bus_error_type") == error_type.encode()
    assert header(dead.headers, "bus_origin") == b"t.fn.f/0/7"
    data: dict[str, Any] = from_record(error.key, error.value, error.headers).data
    assert data["error_type"] == error_type
    return data


class Unprintable(Exception):
    """An exception whose message cannot be rendered."""

    def __str__(self) -> str:
        raise RuntimeError("no")


def test_a_returned_value_becomes_exactly_one_result(runner: AsyncRunner) -> None:
    """A plain return value yields one result on the success destination and nothing else."""
    outputs = _invoke(runner, lambda event, ctx: {"ok": event.data}, _message({"n": 1}))
    assert list(outputs) == ["t.fn.f.results"]
    (result,) = outputs["t.fn.f.results"]
    assert from_record(result.key, result.value, result.headers).data == {"ok": {"n": 1}}


def test_system_exit_in_a_handler_is_a_failure_not_a_crash(runner: AsyncRunner) -> None:
    """`sys.exit()` inside a handler ends as an error record and a dead letter."""

    def leave(event: Any, ctx: Any) -> None:
        raise SystemExit(3)

    assert _failed_with(_invoke(runner, leave, _message()), "SystemExit")["message"] == "3"


def test_an_exception_that_cannot_be_printed_is_still_recorded(runner: AsyncRunner) -> None:
    """An exception whose __str__ raises is recorded with a placeholder message."""

    def broken(event: Any, ctx: Any) -> None:
        raise Unprintable

    assert (
        _failed_with(_invoke(runner, broken, _message()), "Unprintable")["message"]
        == "<unprintable Unprintable>"
    )


def test_a_result_that_is_not_json_is_a_failure(runner: AsyncRunner) -> None:
    """Returning a set (not JSON) ends as ResultNotSerializable, not as a crash."""
    _failed_with(_invoke(runner, lambda event, ctx: {1, 2}, _message()), "ResultNotSerializable")


def test_a_result_over_the_record_limit_is_a_failure(runner: AsyncRunner) -> None:
    """A result larger than one record may carry ends as ResultTooLarge."""
    data = _failed_with(_invoke(runner, lambda event, ctx: "x" * LIMIT, _message()), "ResultTooLarge")
    assert str(LIMIT) in data["message"]


def test_an_error_record_drops_embedded_data_that_would_not_fit(runner: AsyncRunner) -> None:
    """When the input is too large to embed, the error record carries it without data."""

    def fail(event: Any, ctx: Any) -> None:
        raise ValueError("bad")

    data = _failed_with(_invoke(runner, fail, _message({"blob": "y" * (LIMIT - 500)})), "ValueError")
    assert data["event_truncated"] is True
    assert "data" not in data["event"]
    assert data["event"]["id"] == "in-1"


def test_an_object_with_an_async_call_is_awaited(runner: AsyncRunner) -> None:
    """A handler object whose __call__ is async has its coroutine awaited, not serialised."""

    class Handler:
        async def __call__(self, event: Any, ctx: Any) -> dict[str, bool]:
            return {"awaited": True}

    (result,) = _invoke(runner, Handler(), _message())["t.fn.f.results"]
    assert orjson.loads(result.value or b"") == {"awaited": True}


def test_an_async_handler_past_its_timeout_fails_with_timeout(runner: AsyncRunner) -> None:
    """An async handler that outlives `timeout` ends as a TimeoutError failure."""
    import asyncio

    async def hang(event: Any, ctx: Any) -> None:
        await asyncio.sleep(30)

    _failed_with(_invoke(runner, hang, _message()), "TimeoutError")


def test_a_record_that_is_not_a_cloudevent_goes_to_the_dlq_only(runner: AsyncRunner) -> None:
    """An undecodable input is dead-lettered with its reason, without calling the handler."""
    calls: list[Any] = []
    outputs = _invoke(runner, lambda event, ctx: calls.append(event), Message(Record(b"k", b"raw", ())))
    assert calls == []
    assert list(outputs) == ["t.fn.f.dlq"]
    (dead,) = outputs["t.fn.f.dlq"]
    reason = (header(dead.headers, "bus_error_message") or b"").decode()
    assert "ce_specversion" in reason
    assert dead == dead_letter(
        Record(b"k", b"raw", ()), error_type="InvalidEvent", reason=reason, origin="t.fn.f/0/7"
    )

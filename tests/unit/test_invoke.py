"""Synchronous invocation's HTTP answers and request events (bus.invoke)."""

from __future__ import annotations

import orjson
import pytest

from bus.errors import InvalidEvent
from bus.events import CloudEvent
from bus.invoke import INVOKED_TYPE, answer, invocation_event, no_reply
from bus.manifest import Destinations, Function, RetryPolicy
from gateway.settings import invoke_targets


def reply(type_: str, data: object) -> CloudEvent:
    return CloudEvent.create(id="r-1", source="bus://p/functions/f", type=type_, data=data)


def test_a_result_is_200_with_the_return_value() -> None:
    done = answer(reply("bus.function.result", {"n": 2}), "e-1")
    assert (done.status, orjson.loads(done.body)) == (200, {"n": 2})
    assert done.headers == {"bus-event-id": "e-1", "bus-reply-id": "r-1"}


def test_a_result_of_none_is_json_null() -> None:
    assert answer(reply("bus.function.result", None), "e-1").body == b"null"


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("ValueError", 500),
        ("DeadLetter", 422),
        ("Retry", 503),
        ("TimeoutError", 504),
        ("HandlerCrashed", 502),
        ("MemoryError", 502),
        ("HostProtocolError", 502),
    ],
)
def test_errors_map_to_statuses(error_type: str, status: int) -> None:
    data = {"function": "f", "error_type": error_type, "message": "boom"}
    done = answer(reply("bus.function.error", data), "e-1")
    body = orjson.loads(done.body)
    assert done.status == status
    assert body == {
        "error": "function_error",
        "reason": f"{error_type}: boom",
        "error_type": error_type,
        "message": "boom",
        "function": "f",
        "id": "e-1",
    }


def test_retry_says_when_in_retry_after() -> None:
    data = {"function": "f", "error_type": "Retry", "message": "busy", "retry_after": 2.2}
    assert answer(reply("bus.function.error", data), "e-1").headers["retry-after"] == "3"


@pytest.mark.parametrize(("policy", "header"), [(None, "1"), (10.0, "10"), (0.5, "1")])
def test_retry_without_after_still_says_when(policy: float | None, header: str) -> None:
    """`raise Retry()` names no delay: Retry-After is the function's first backoff, else 1 s."""
    data = {"function": "f", "error_type": "Retry", "message": "busy", "signal": "retry", "retry_after": None}
    done = answer(reply("bus.function.error", data), "e-1", retry_after=policy)
    assert (done.status, done.headers["retry-after"]) == (503, header)


def test_a_delay_the_handler_named_wins_over_the_policy() -> None:
    """`Retry(after=0)` means now, not the policy's backoff."""
    data = {"function": "f", "error_type": "Retry", "message": "busy", "retry_after": 0}
    assert answer(reply("bus.function.error", data), "e-1", retry_after=10.0).headers["retry-after"] == "0"


def test_invoke_targets_know_the_first_backoff() -> None:
    """The gateway learns each function's first backoff from the manifest."""
    retry = RetryPolicy(backoff=(5.0, 30.0))
    function = Function(
        name="f", handler="h:f", destinations=Destinations(on_success=None, on_failure=None), retry=retry
    )
    assert invoke_targets("p", {"f": function})["f"].retry_after == 5.0


@pytest.mark.parametrize(
    ("error_type", "signal", "status"), [("Busy", "retry", 503), ("Rejected", "dead_letter", 422)]
)
def test_a_signal_subclass_answers_as_its_signal(error_type: str, signal: str, status: int) -> None:
    """`class Busy(Retry)` is named by its own class: the record's `signal` decides the status."""
    data = {"function": "f", "error_type": error_type, "message": "m", "signal": signal, "retry_after": 30}
    done = answer(reply("bus.function.error", data), "e-1")
    assert done.status == status
    assert (done.headers.get("retry-after") == "30") is (signal == "retry")


def test_no_reply_is_504_naming_the_event() -> None:
    done = no_reply("e-1", "f", 3.0)
    body = orjson.loads(done.body)
    assert (done.status, body["error"], body["id"]) == (504, "no_reply", "e-1")
    assert "did not answer within 3 s" in body["reason"]


def test_a_plain_body_is_the_data_of_an_invoked_event() -> None:
    event = invocation_event({"content-type": "application/json"}, b'{"x": 1}', "f")
    assert (event.type, event.source, event.data) == (INVOKED_TYPE, "/functions/f/invoke", {"x": 1})
    assert invocation_event({}, b"", "f").data is None


def test_a_cloudevent_body_is_taken_as_it_is() -> None:
    body = orjson.dumps({"specversion": "1.0", "id": "a", "source": "s", "type": "t", "data": 5})
    event = invocation_event({"content-type": "application/cloudevents+json"}, body, "f")
    assert (event.id, event.type, event.data) == ("a", "t", 5)


def test_a_batch_of_two_or_bad_json_is_refused() -> None:
    one = {"specversion": "1.0", "id": "a", "source": "s", "type": "t"}
    with pytest.raises(InvalidEvent, match="one event"):
        invocation_event(
            {"content-type": "application/cloudevents-batch+json"}, orjson.dumps([one, one]), "f"
        )
    with pytest.raises(InvalidEvent):
        invocation_event({"content-type": "application/json"}, b"{nope", "f")

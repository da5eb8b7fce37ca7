"""The events a function invocation produces: results and error records (workers.outcome)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from bus.events import CloudEvent, to_json_dict
from bus.kafka_binding import from_record, to_record
from bus.naming import function_source
from workers.outcome import (
    ERROR_TYPE,
    RESULT_TYPE,
    Failure,
    error_event,
    result_event,
    result_headers,
    result_record,
)

NOW = "2026-01-31T09:30:05Z"


def cause(**overrides: Any) -> CloudEvent:
    """An input event as a function receives it."""
    base: dict[str, Any] = {
        "id": "order-42",
        "source": "/shop",
        "type": "order.placed",
        "subject": "orders/42",
        "data": {"total": 12.5},
    }
    return CloudEvent.create(**{**base, **overrides})


def result(function: str = "billing", event: CloudEvent | None = None, value: Any = None) -> CloudEvent:
    """The result event of `function` for `event` (default: cause())."""
    return result_event(prefix="bus", function=function, cause=event or cause(), value=value, time=NOW)


FAILURE = Failure(
    error_type="ValueError",
    message="total must be positive",
    traceback=(
        "Traceback (most recent call last):\n"
        '  File "handlers.py", line 3, in charge\n'
        "ValueError: total must be positive\n"
    ),
    attempts=3,
    first_attempt_time="2026-01-31T09:30:00Z",
    last_attempt_time="2026-01-31T09:30:04Z",
    topic="bus.fn.billing",
    partition=2,
    offset=1017,
)


def error(function: str = "billing", event: CloudEvent | None = None) -> CloudEvent:
    """The error event of `function` for `event` (default: cause())."""
    return error_event(prefix="bus", function=function, cause=event or cause(), failure=FAILURE, time=NOW)


def test_function_source_names_prefix_and_function() -> None:
    """Events a worker group emits come from bus://<prefix>/functions/<name>."""
    assert function_source("acme", "billing") == "bus://acme/functions/billing"


def test_result_event_carries_the_return_value_and_its_cause() -> None:
    """A result is a bus.function.result whose data is the return value and causationid the input id."""
    event = result(value={"charged": True})
    assert event.type == RESULT_TYPE == "bus.function.result"
    assert event.source == "bus://bus/functions/billing"
    assert event.extensions["causationid"] == "order-42"
    assert event.data == {"charged": True}
    assert event.datacontenttype == "application/json"
    assert event.subject == "orders/42"
    assert event.time == NOW


@pytest.mark.parametrize("value", [None, 0, "", "text", [1, 2], {"nested": {"a": None}}, False])
def test_result_event_takes_any_json_value(value: Any) -> None:
    """Whatever JSON value a handler returns becomes the result's data unchanged."""
    assert result(value=value).data == value


def test_result_id_is_deterministic() -> None:
    """The same function and input always give the same result id, so a re-publish is a duplicate."""
    assert result().id == result().id
    assert result(value=1).id == result(value=2).id, "the id depends on the input, not the output"
    uuid.UUID(result().id)  # a UUID, so any consumer can store it as one


@pytest.mark.parametrize(
    ("function", "event"),
    [
        ("shipping", cause()),
        ("billing", cause(id="order-43")),
        ("billing", cause(source="/other-shop")),
    ],
)
def test_result_id_differs_per_function_and_per_input(function: str, event: CloudEvent) -> None:
    """Another function, another input id or another input source gives another result id."""
    assert result(function, event).id != result().id


@pytest.mark.parametrize("make", [result, error])
def test_a_redriven_or_replayed_run_is_another_occurrence_with_another_id(make: Any) -> None:
    """A redrive or replay runs an event again: its result or error must not look like a duplicate
    of the first run's, yet stays deterministic within that run (a crash re-publishes the same)."""
    first = make("billing", cause())
    redriven = make("billing", cause(extensions={"redriveid": "r-1"}))
    replayed = make("billing", cause(extensions={"replayid": "replay-1"}))
    assert len({first.id, redriven.id, replayed.id}) == 3
    assert make("billing", cause(extensions={"redriveid": "r-1"})).id == redriven.id
    assert make("billing", cause(extensions={"redriveid": "r-2"})).id != redriven.id


@pytest.mark.parametrize("make", [result, error])
def test_one_event_run_by_two_flows_gives_two_occurrences_with_two_ids(make: Any) -> None:
    """Two flows running one function on one event are two runs: their results must not look
    like duplicates of each other."""
    billing = make("audit", cause(extensions={"busflow": "billing", "busflowstep": "a", "busflowrun": "o"}))
    shipping = make("audit", cause(extensions={"busflow": "shipping", "busflowstep": "a", "busflowrun": "o"}))
    assert billing.id != shipping.id


def test_the_hot_paths_result_id_is_the_result_events_id() -> None:
    """The host's result headers derive the id as result_event does, reruns included."""
    for event in (
        cause(),
        cause(extensions={"redriveid": "r-1", "replayid": "replay-1"}),
        cause(extensions={"busflow": "etl", "busflowstep": "p", "busflowrun": "r"}),
    ):
        headers = result_headers(prefix="bus", function="billing", cause=event, time=NOW)
        assert headers["ce_id"] == result("billing", event).id


def test_result_and_error_ids_differ_for_the_same_input() -> None:
    """A result and an error record of the same invocation never share an id."""
    assert result().id != error().id


@pytest.mark.parametrize(
    ("event", "key"),
    [
        (cause(extensions={"partitionkey": "customer-7"}), "customer-7"),
        (cause(), "orders/42"),
        (cause(subject=None), None),
    ],
)
@pytest.mark.parametrize("make", [result, error])
def test_outcomes_keep_the_inputs_partition_key(event: CloudEvent, key: str | None, make: Any) -> None:
    """Results and errors carry the input's partition key, so they land in the same key order."""
    outcome = make("billing", event)
    assert outcome.extensions.get("partitionkey") == key
    assert outcome.partition_key == key


def test_error_event_carries_every_field_of_the_error_record() -> None:
    """An error record names the function, the error, the attempts, the original position and event."""
    original = cause(extensions={"tags": "prod"})
    event = error(event=original)
    assert event.type == ERROR_TYPE == "bus.function.error"
    assert event.source == "bus://bus/functions/billing"
    assert event.extensions["causationid"] == "order-42"
    assert event.subject == "orders/42"
    assert event.time == NOW
    assert event.datacontenttype == "application/json"
    assert event.data == {
        "function": "billing",
        "error_type": "ValueError",
        "message": "total must be positive",
        "traceback": FAILURE.traceback,
        "attempts": 3,
        "first_attempt_time": "2026-01-31T09:30:00Z",
        "last_attempt_time": "2026-01-31T09:30:04Z",
        "topic": "bus.fn.billing",
        "partition": 2,
        "offset": 1017,
        "event": to_json_dict(original),
        "event_truncated": False,
    }


def test_error_event_embeds_binary_input_as_data_base64() -> None:
    """A binary input event is embedded in the JSON format, its data as data_base64."""
    original = cause(datacontenttype="image/png", data=b"\x89PNG")
    assert error(event=original).data["event"]["data_base64"] == "iVBORw=="


def test_error_id_is_deterministic_per_function_and_input() -> None:
    """Error ids, like result ids, are the same for the same function and input."""
    assert error().id == error().id
    assert error("shipping").id != error().id


@pytest.mark.parametrize("make", [result, error])
def test_outcomes_are_valid_events_that_survive_kafka(make: Any) -> None:
    """Result and error events are valid CloudEvents that round-trip through a Kafka record."""
    outcome = make()
    record = to_record(outcome)
    assert from_record(record.key, record.value, record.headers) == outcome


@pytest.mark.parametrize("subject", [None, "orders/7"])
@pytest.mark.parametrize("extensions", [{}, {"partitionkey": "k1"}, {"partitionkey": "k2", "region": 3}])
@pytest.mark.parametrize("value", [None, {"a": 1.5, "b": "é"}, [1, 2], "x", 0, 1e300])
def test_the_host_built_result_record_is_the_result_event_as_a_record(
    subject: str | None, extensions: dict[str, Any], value: Any
) -> None:
    """result_record(...) equals to_record(result_event(...)) for the return value's JSON."""
    cause = CloudEvent.create(
        id="in-1", source="src", type="t", subject=subject, extensions=extensions, data=1
    )
    time = "2026-01-31T09:30:00.123Z"
    slow = to_record(result_event(prefix="bus", function="f", cause=cause, value=value, time=time))
    fast = result_record(prefix="bus", function="f", cause=cause, value=orjson.dumps(value), time=time)
    assert fast == slow


def test_results_and_errors_carry_a_flows_run_on() -> None:
    """busflow, busflowrun and busflowstep go from the input to its result and error (bus.flows)."""
    flow = {"busflow": "etl", "busflowrun": "page-9", "busflowstep": "parse"}
    cause = CloudEvent.create(id="in-1", source="s", type="t", extensions=flow)
    made = result_event(prefix="p", function="f", cause=cause, value=1, time="2026-12-03T00:00:00Z")
    built = result_record(prefix="p", function="f", cause=cause, value=b"1", time="2026-12-03T00:00:00Z")
    assert from_record(built.key, built.value, built.headers) == made
    assert {k: made.extensions[k] for k in flow} == flow


def test_the_rerun_extensions_are_the_ones_redrive_and_replay_set() -> None:
    """workers.outcome names them itself (the handler host imports no Kafka tooling): they must agree."""
    from bus.dlq import REDRIVE_ID
    from bus.replay import REPLAY_ID
    from workers.outcome import RERUNS

    assert set(RERUNS) == {REDRIVE_ID, REPLAY_ID}

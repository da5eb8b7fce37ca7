"""Each outcome becomes exactly its records: result, retry, dead letter and error event (pure)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bus import naming
from bus.avro_codec import AVRO_CONTENT_TYPE, encode, schema_uri
from bus.avro_schema import SchemaBook, parse
from bus.events import CloudEvent, to_json_dict
from bus.kafka_binding import Record, from_record, header, record_size, to_record
from bus.manifest import Destinations, Function, RetryPolicy
from bus.typed_events import EdgeSchemas
from workers.invocation import Outcome
from workers.retries import Attempt, attempt_of, original
from workers.verdict import Judge, Verdict

PREFIX = "t"
NOW_MS = 1_800_000_000_000


def _function(**fields: Any) -> Function:
    defaults: dict[str, Any] = {
        "name": "f",
        "handler": "h:f",
        "destinations": Destinations(on_success="t.fn.f.results", on_failure="t.fn.f.errors"),
        "retry": RetryPolicy(attempts=3, backoff=(1.0, 10.0)),
    }
    return Function(**{**defaults, **fields})


def _judge(limit: int = 10_000, **fields: Any) -> Judge:
    return Judge(
        prefix=PREFIX,
        function=_function(**fields),
        max_record_bytes=limit,
        clock=lambda: "2026-12-03T00:00:01.000Z",
    )


EVENT = CloudEvent.create(id="in-1", source="tests", type="demo", subject="s", data={"n": 1})
RECORD = to_record(EVENT)
FIRST = Attempt(number=1, first_time="", topic="t.fn.f", partition=2, offset=7)


def _decide(outcome: Outcome, attempt: Attempt = FIRST, judge: Judge | None = None) -> Verdict:
    return (judge or _judge()).decide(
        RECORD, EVENT, attempt, outcome, started="2026-12-03T00:00:00.000Z", now_ms=NOW_MS
    )


def _failed(**fields: Any) -> Outcome:
    return Outcome(
        **{
            "id": 1,
            "kind": "failed",
            "error_type": "ValueError",
            "message": "boom",
            "cause": "exception",
            **fields,
        }
    )


def test_a_returned_value_becomes_one_result_event_caused_by_the_input() -> None:
    verdict = _decide(Outcome(id=1, kind="ok", value=b'{"x":2}'))
    assert (verdict.label, verdict.retrying) == ("ok", False)
    [send] = verdict.outputs
    result = from_record(send.record.key, send.record.value, send.record.headers)
    assert send.topic == "t.fn.f.results"
    assert (result.type, result.data, result.extensions["causationid"]) == (
        "bus.function.result",
        {"x": 2},
        "in-1",
    )


def test_no_success_destination_publishes_only_the_emitted_events() -> None:
    emitted = CloudEvent.create(id="e-1", source="bus://t/functions/f", type="next", data=[1])
    outcome = Outcome(id=1, kind="ok", value=b"null", emitted=(orjson.dumps(to_json_dict(emitted)),))
    judge = _judge(destinations=Destinations(on_success=None, on_failure=None))
    [send] = _decide(outcome, judge=judge).outputs
    assert send.topic == naming.ingress_topic(PREFIX)
    assert from_record(send.record.key, send.record.value, send.record.headers).id == "e-1"


def test_a_failure_with_attempts_left_goes_to_its_backoff_step_on_its_own_partition() -> None:
    verdict = _decide(_failed())
    assert (verdict.label, verdict.retrying) == ("retry", True)
    [send] = verdict.outputs
    assert (send.topic, send.partition) == (naming.retry_topic(PREFIX, "f", 1), 2)
    retry = attempt_of(send.topic, 2, 0, send.record.headers)
    assert (retry.number, retry.origin, retry.due_ms) == (2, "t.fn.f/2/7", NOW_MS + 1000)
    assert retry.first_time == "2026-12-03T00:00:00.000Z"
    assert original(send.record) == RECORD  # the same event, only bus's headers added
    assert header(send.record.headers, "bus_error_type") == b"ValueError"


def test_retry_after_overrides_the_backoff_and_the_second_retry_uses_the_second_step() -> None:
    second = Attempt(number=2, first_time="2026-12-03T00:00:00.000Z", topic="t.fn.f", partition=2, offset=7)
    verdict = _decide(Outcome(id=1, kind="retry", retry_after=30.0, message="later"), attempt=second)
    [send] = verdict.outputs
    assert send.topic == naming.retry_topic(PREFIX, "f", 2)
    assert attempt_of(send.topic, 2, 0, send.record.headers).due_ms == NOW_MS + 30_000


def test_the_last_attempt_writes_the_dead_letter_and_the_complete_error_record() -> None:
    last = Attempt(number=3, first_time="2026-12-03T00:00:00.000Z", topic="t.fn.f", partition=2, offset=7)
    retried = Record(RECORD.key, RECORD.value, (*RECORD.headers, ("bus_attempt", b"3")))
    verdict = Judge(
        prefix=PREFIX, function=_function(), max_record_bytes=10_000, clock=lambda: "2026-12-03T00:00:21.000Z"
    ).decide(retried, EVENT, last, _failed(traceback="tb"), started="2026-12-03T00:00:20.000Z", now_ms=NOW_MS)
    assert (verdict.label, verdict.retrying) == ("dead_letter", False)
    dlq, error = verdict.outputs
    assert dlq.topic == naming.dlq_topic(PREFIX, "f")
    assert header(dlq.record.headers, "bus_attempt") is None  # retry bookkeeping removed
    assert header(dlq.record.headers, "bus_attempts") == b"3"
    assert header(dlq.record.headers, "bus_origin") == b"t.fn.f/2/7"
    data = from_record(error.record.key, error.record.value, error.record.headers).data
    assert error.topic == "t.fn.f.errors"
    assert {
        k: data[k] for k in ("error_type", "message", "traceback", "attempts", "partition", "offset")
    } == {
        "error_type": "ValueError",
        "message": "boom",
        "traceback": "tb",
        "attempts": 3,
        "partition": 2,
        "offset": 7,
    }
    assert (data["first_attempt_time"], data["last_attempt_time"]) == (
        "2026-12-03T00:00:00.000Z",
        "2026-12-03T00:00:20.000Z",
    )
    assert data["event"]["id"] == "in-1"


@pytest.mark.parametrize(
    ("outcome", "error_type"),
    [
        (Outcome(id=1, kind="dead_letter", error_type="DeadLetter", message="bad input"), "DeadLetter"),
        (_failed(error_type="ResultNotSerializable", cause="result"), "ResultNotSerializable"),
    ],
)
def test_dead_letter_signals_and_unfixable_results_skip_the_remaining_attempts(
    outcome: Outcome, error_type: str
) -> None:
    verdict = _decide(outcome)
    assert verdict.label == "dead_letter"
    assert header(verdict.outputs[0].record.headers, "bus_error_type") == error_type.encode()


@pytest.mark.parametrize(
    ("outcome", "signal"),
    [
        (Outcome(id=1, kind="dead_letter", error_type="Rejected", message="bad input"), "dead_letter"),
        (_failed(error_type="ValueError"), None),
    ],
)
def test_the_error_record_names_the_signal_a_subclass_raised(outcome: Outcome, signal: str | None) -> None:
    """`class Rejected(DeadLetter)` is named by its own class; the record says which signal it is."""
    error = _decide(outcome, judge=_judge(retry=RetryPolicy(attempts=1, backoff=(1.0,)))).outputs[1]
    data = from_record(error.record.key, error.record.value, error.record.headers).data
    assert data["error_type"] == outcome.error_type
    assert data.get("signal") == signal


def test_a_result_over_the_record_limit_is_a_dead_letter_not_a_retry() -> None:
    verdict = _decide(Outcome(id=1, kind="ok", value=orjson.dumps("x" * 20_000)), judge=_judge(limit=8_000))
    assert verdict.label == "dead_letter"
    assert "limited to 8000" in verdict.reason


def test_one_attempt_policy_never_retries() -> None:
    verdict = _decide(_failed(), judge=_judge(retry=RetryPolicy(attempts=1, backoff=(1.0,))))
    assert verdict.label == "dead_letter"


def test_an_unreadable_record_goes_straight_to_the_dlq() -> None:
    verdict = _judge().invalid(Record(b"k", b"junk", ()), FIRST, "not a CloudEvent")
    [send] = verdict.outputs
    assert (send.topic, verdict.label) == (naming.dlq_topic(PREFIX, "f"), "invalid")
    assert header(send.record.headers, "bus_error_type") == b"InvalidEvent"


def test_a_first_attempt_ignores_garbled_retry_headers() -> None:
    attempt = attempt_of("t.fn.f.retry.1", 0, 5, [("bus_attempt", b"x"), ("bus_origin", b"nope")])
    assert (attempt.number, attempt.origin) == (1, "t.fn.f.retry.1/0/5")


def test_a_huge_exception_message_is_cut_so_the_error_event_fits_its_record() -> None:
    last = Attempt(number=3, first_time="2026-12-03T00:00:00.000Z", topic="t.fn.f", partition=2, offset=7)
    huge = _failed(message="m" * 600_000, traceback="t" * 600_000)
    verdict = _decide(huge, attempt=last, judge=_judge(limit=100_000))
    _dlq, error = verdict.outputs
    assert record_size(error.record) <= 100_000
    data = from_record(error.record.key, error.record.value, error.record.headers).data
    assert data["message"].startswith("mmm")
    assert data["message"].endswith("characters cut]")
    assert data["traceback"].endswith("ttt")


@pytest.mark.parametrize("after", [1e308, float("nan"), -5.0])
def test_retry_after_is_kept_within_a_week_and_never_negative(after: float) -> None:
    [send] = _decide(Outcome(id=1, kind="retry", retry_after=after)).outputs
    due = attempt_of(send.topic, 2, 0, send.record.headers).due_ms
    assert NOW_MS <= due <= NOW_MS + 7 * 24 * 3600 * 1000


def test_an_unreadable_event_is_retried_then_dead_lettered_without_an_error_event() -> None:
    from bus.errors import RegistryError

    judge = _judge()
    assert judge.unreadable(RECORD, FIRST, RegistryError("down"), started="2026-12-03T00:00:00.000Z").retrying
    last = Attempt(number=3, first_time="2026-12-03T00:00:00.000Z", topic="t.fn.f", partition=2, offset=7)
    verdict = judge.unreadable(RECORD, last, RegistryError("down"), started="2026-12-03T00:00:00.000Z")
    [send] = verdict.outputs
    assert (send.topic, verdict.label) == (naming.dlq_topic(PREFIX, "f"), "dead_letter")


# --- synchronous invocations (bus.invoke) -------------------------------------------------------

SYNC = EVENT.with_extensions(busreplyto="t.replies.gw-1")


def _sync(outcome: Outcome, event: CloudEvent = SYNC, judge: Judge | None = None) -> Verdict:
    return (judge or _judge()).decide(
        to_record(event), event, FIRST, outcome, started="2026-12-03T00:00:00.000Z", now_ms=NOW_MS
    )


def _events(verdict: Verdict) -> list[tuple[str, CloudEvent]]:
    return [(s.topic, from_record(s.record.key, s.record.value, s.record.headers)) for s in verdict.outputs]


def test_a_sync_result_also_goes_to_the_callers_reply_topic() -> None:
    sent = _events(_sync(Outcome(id=1, kind="ok", value=b'{"x":2}')))
    assert [topic for topic, _ in sent] == ["t.fn.f.results", "t.replies.gw-1"]
    assert all(e.data == {"x": 2} and e.extensions["causationid"] == "in-1" for _, e in sent)


def test_a_sync_result_is_replied_even_without_a_success_destination() -> None:
    judge = _judge(destinations=Destinations(on_success=None, on_failure=None))
    assert [t for t, _ in _events(_sync(Outcome(id=1, kind="ok", value=b"1"), judge=judge))] == [
        "t.replies.gw-1"
    ]


@pytest.mark.parametrize(
    ("outcome", "error_type"),
    [
        (
            Outcome(id=1, kind="failed", error_type="ValueError", message="boom", cause="exception"),
            "ValueError",
        ),
        (Outcome(id=1, kind="retry", error_type="Retry", message="busy", retry_after=7.0), "Retry"),
        (Outcome(id=1, kind="dead_letter", error_type="DeadLetter", message="no"), "DeadLetter"),
    ],
)
def test_a_sync_failure_is_replied_at_once_without_retry_or_dead_letter(
    outcome: Outcome, error_type: str
) -> None:
    verdict = _sync(outcome)
    assert (verdict.retrying, verdict.label) == (False, "replied_error")
    sent = _events(verdict)
    assert [topic for topic, _ in sent] == ["t.fn.f.errors", "t.replies.gw-1"]
    error = sent[1][1]
    assert (error.type, error.data["error_type"], error.data["attempts"]) == (
        "bus.function.error",
        error_type,
        1,
    )
    assert error.data.get("retry_after") == (7.0 if error_type == "Retry" else None)


@pytest.mark.parametrize(
    "topic", ["t.fn.other", "u.replies.gw-1", "t.replies.", "t.replies.a.b", "t.replies.gw\n", 5]
)
def test_a_reply_topic_other_than_a_gateways_of_this_prefix_is_ignored(topic: object) -> None:
    event = EVENT.with_extensions(busreplyto=topic)  # type: ignore[arg-type]
    verdict = _sync(_failed(), event=event)
    assert verdict.retrying  # an ordinary event: retried, and nothing written to that topic
    assert all(send.topic.startswith("t.fn.f.retry") for send in verdict.outputs)


def test_an_emitted_event_cannot_carry_a_reply_topic() -> None:
    """A handler emitting `busreplyto` must not make the next worker answer some caller."""
    emitted = CloudEvent.create(
        id="e-1", source="bus://t/functions/f", type="next", extensions={"busreplyto": "t.replies.gw-1"}
    )
    outcome = Outcome(id=1, kind="ok", value=b"null", emitted=(orjson.dumps(to_json_dict(emitted)),))
    [send, _] = _decide(outcome).outputs
    assert "busreplyto" not in from_record(send.record.key, send.record.value, send.record.headers).extensions


def _waiting(number: int, **headers: bytes) -> tuple[Record, Attempt]:
    """A retry record of EVENT for attempt `number`, as an earlier policy scheduled it."""
    first = "2026-12-03T00:00:00.000Z"
    extra = {
        "bus_attempt": str(number).encode(),
        "bus_due": str(NOW_MS).encode(),
        "bus_first_attempt_time": first.encode(),
        "bus_origin": b"t.fn.f/2/7",
        "bus_error_type": b"ValueError",
        "bus_error_message": b"boom 2",
        **headers,
    }
    record = Record(RECORD.key, RECORD.value, (*RECORD.headers, *extra.items()))
    return record, attempt_of("t.fn.f.retry.2", 2, 0, record.headers)


@pytest.mark.parametrize(("number", "allowed"), [(2, True), (3, True), (4, False), (9, False)])
def test_a_retry_is_allowed_up_to_the_policys_attempts(number: int, allowed: bool) -> None:
    """The policy in force judges a waiting retry: attempt 3 of 3 may run, attempt 4 may not."""
    assert _judge().allows(_waiting(number)[1]) is allowed


def test_a_retry_the_changed_policy_no_longer_allows_ends_as_its_last_attempt_would_have() -> None:
    """Attempts lowered to 2 while attempt 3 waited: the dead letter and the complete error record
    of the 2 attempts made, with the last error and the reason."""
    record, attempt = _waiting(3)
    judge = _judge(retry=RetryPolicy(attempts=2, backoff=(1.0,)))
    assert not judge.allows(attempt)
    verdict = judge.spent(record, EVENT, attempt, started="2026-12-03T00:00:30.000Z")
    assert (verdict.label, verdict.retrying, verdict.error_type) == ("dead_letter", False, "ValueError")
    assert "retry policy changed" in verdict.reason
    dlq, error = verdict.outputs
    assert dlq.topic == naming.dlq_topic(PREFIX, "f")
    assert original(dlq.record).value == RECORD.value
    assert header(dlq.record.headers, "bus_attempt") is None  # retry bookkeeping removed
    assert header(dlq.record.headers, "bus_attempts") == b"2"
    assert header(dlq.record.headers, "bus_origin") == b"t.fn.f/2/7"
    assert header(dlq.record.headers, "bus_error_type") == b"ValueError"
    assert b"retry policy changed" in (header(dlq.record.headers, "bus_error_message") or b"")
    data = from_record(error.record.key, error.record.value, error.record.headers).data
    assert error.topic == "t.fn.f.errors"
    assert {k: data[k] for k in ("error_type", "attempts", "topic", "partition", "offset")} == {
        "error_type": "ValueError",
        "attempts": 2,
        "topic": "t.fn.f",
        "partition": 2,
        "offset": 7,
    }
    assert "retry policy changed" in data["message"]
    assert "boom 2" in data["message"]
    assert (data["first_attempt_time"], data["last_attempt_time"]) == (
        "2026-12-03T00:00:00.000Z",
        "2026-12-03T00:00:30.000Z",
    )
    assert data["event"]["id"] == "in-1"


def test_a_spent_retry_without_its_last_error_still_names_why_it_ended() -> None:
    """Retry headers without the last error (written by hand): the type says the policy changed."""
    record, attempt = _waiting(4, bus_error_type=b"", bus_error_message=b"")
    verdict = _judge(retry=RetryPolicy(attempts=1, backoff=(1.0,))).spent(
        record, EVENT, attempt, started="2026-12-03T00:00:30.000Z"
    )
    assert verdict.error_type == "RetryPolicyChanged"
    assert header(verdict.outputs[0].record.headers, "bus_attempts") == b"3"


ORDER = parse(
    {
        "type": "record",
        "name": "Order",
        "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "double"}],
    }
)
TYPED = EdgeSchemas(book=SchemaBook().with_types({"order.placed": ORDER}))


def _emitting(data: Any, *, type: str = "order.placed") -> Outcome:
    emitted = CloudEvent.create(id="e-1", source="bus://t/functions/f", type=type, data=data)
    return Outcome(id=1, kind="ok", value=b"null", emitted=(orjson.dumps(to_json_dict(emitted)),))


def _typed_judge() -> Judge:
    return Judge(
        prefix=PREFIX,
        function=_function(),
        max_record_bytes=10_000,
        clock=lambda: "2026-12-03T00:00:01.000Z",
        schemas=TYPED,
    )


def test_an_emitted_event_of_a_typed_type_is_written_as_avro_as_the_gateway_writes_it() -> None:
    """ctx.emit of a typed type publishes the Avro the gateway would, its writer named in dataschema."""
    emitted, result = _decide(_emitting({"id": "o-1", "amount": 2}), judge=_typed_judge()).outputs
    assert emitted.topic == naming.ingress_topic(PREFIX)
    assert header(emitted.record.headers, "content-type") == AVRO_CONTENT_TYPE.encode()
    assert header(emitted.record.headers, "ce_dataschema") == schema_uri("order.placed", ORDER).encode()
    assert emitted.record.value == encode(ORDER, {"id": "o-1", "amount": 2.0})
    assert result.topic == "t.fn.f.results"
    plain, _ = _decide(_emitting([1], type="untyped"), judge=_typed_judge()).outputs
    assert from_record(plain.record.key, plain.record.value, plain.record.headers).data == [1]


def test_an_emitted_event_that_does_not_fit_its_schema_fails_the_invocation_at_once() -> None:
    """Nothing is published: the input is dead-lettered (a retry would emit the same) naming the field."""
    verdict = _decide(_emitting({"id": "o-1", "amount": "ten"}), judge=_typed_judge())
    assert (verdict.label, verdict.retrying) == ("dead_letter", False)
    assert verdict.error_type == "InvalidEvent"
    assert verdict.reason.startswith("emitted[0].data.amount: expected a double, got 'ten'")
    assert "ctx.emit('order.placed')" in verdict.reason
    assert [send.topic for send in verdict.outputs] == [naming.dlq_topic(PREFIX, "f"), "t.fn.f.errors"]

"""What an invocation's outcome becomes on Kafka: result, retry, dead letter, error event (pure).

The runtime produces these records in the same transaction as the input's offset, so each
outcome is published exactly once. Every decision is here and nowhere else:

- ok: the result event to the success destination, and every event the handler emitted to
  `<prefix>.ingress` (routed like any other event), those of a typed type validated and written
  as Avro as the gateway writes them; one that does not fit fails the invocation as a result
  that cannot be published does (dead-lettered at once: a retry emits the same);
- failed or `Retry` with attempts left: the record to the retry topic of its backoff step,
  due after the step's delay (or `Retry(after=...)`);
- `DeadLetter`, the last attempt, or a failure no retry can fix (a result too large, a record
  that is not a CloudEvent): the original record to the DLQ and the error event (RELIABILITY R8)
  to the failure destination;
- a retry whose attempt the policy no longer allows (its `attempts` were lowered while it
  waited): not run, it ends as its last attempt's failure would have.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from bus import naming
from bus.deadletter import dead_letter
from bus.errors import InvalidEvent
from bus.events import CloudEvent, from_json_dict
from bus.invoke import REPLY_EXTENSION
from bus.kafka_binding import Record, record_size, to_record
from bus.manifest import Function
from bus.typed_events import EdgeSchemas, typed
from workers.invocation import Outcome
from workers.outcome import Failure, error_event, result_event
from workers.retries import Attempt, last_error, original, retry_record

__all__ = ["Judge", "Send", "Verdict", "check_fits", "retry_delay"]

MAX_RETRY_AFTER = 7 * 24 * 3600.0
"""Longest `Retry(after=...)` honoured (a week); longer asks wait this long."""
MAX_MESSAGE_CHARS = 8_192
"""Longest error message an error event carries (the rest is cut, marked)."""
MAX_TRACEBACK_CHARS = 32_768
"""Longest traceback an error event carries (its end is kept: the raising frame)."""

FINAL_CAUSES = frozenset({"result"})
"""Failures that fail the same way on every attempt: dead-lettered at once."""


@dataclass(frozen=True, slots=True)
class Send:
    """A record to produce in the outcome's transaction (to `partition` when given, else by key)."""

    topic: str
    record: Record
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The records an outcome produces, and whether the event waits for a retry."""

    outputs: list[Send]
    retrying: bool
    label: str
    """ok, retry, dead_letter, invalid or replied_error (a synchronous call failed, bus.invoke): for
    metrics and the log line."""
    error_type: str = ""
    reason: str = ""


_INSTANCE = re.compile(r"[A-Za-z0-9_-]{1,100}")
"""A gateway replica's name (bus.naming.check_name): what may follow `<prefix>.replies.`."""


class Judge:
    """Turns one function's outcomes into records; holds the function's policy and topics."""

    def __init__(
        self,
        *,
        prefix: str,
        function: Function,
        max_record_bytes: int,
        clock: Callable[[], str],
        schemas: EdgeSchemas | None = None,
    ) -> None:
        """`schemas`: what emitted events of typed types are written with (None: all stay JSON)."""
        self._prefix = prefix
        self._schemas = schemas if schemas is not None else EdgeSchemas()
        self._function = function
        self._max_record_bytes = max_record_bytes
        self._clock = clock
        self._dlq = naming.dlq_topic(prefix, function.name)
        self._ingress = naming.ingress_topic(prefix)
        self._replies = naming.reply_topic(prefix, "")

    def decide(
        self,
        record: Record,
        event: CloudEvent,
        attempt: Attempt,
        outcome: Outcome,
        *,
        started: str,
        now_ms: int,
    ) -> Verdict:
        """The records for `outcome` of `attempt` at `event` (`started`: when this attempt began)."""
        first_time = attempt.first_time or started
        reply = self._reply_topic(event)
        if reply is not None:
            return self._answer(reply, event, attempt, outcome, started=started)
        if outcome.kind == "ok":
            try:
                return Verdict(self._success(event, outcome), retrying=False, label="ok")
            except (InvalidEvent, TypeError, ValueError) as exc:
                outcome = _failed(type(exc).__name__, str(exc), cause="result")
        retriable = outcome.kind != "dead_letter" and outcome.cause not in FINAL_CAUSES
        if retriable and attempt.number < self._function.retry.attempts:
            return self._retry(record, attempt, outcome, first_time=first_time, now_ms=now_ms)
        failure = _failure(outcome, attempt, first_time=first_time, started=started)
        return self._final(
            "dead_letter", event, outcome, failure, first=[self._dead_letter(record, attempt, failure)]
        )

    def allows(self, attempt: Attempt) -> bool:
        """Whether the retry policy in force allows `attempt` (it may have been changed since the
        attempt was scheduled); a retry it does not allow ends by `spent`."""
        return attempt.number <= self._function.retry.attempts

    def spent(self, record: Record, event: CloudEvent, attempt: Attempt, *, started: str) -> Verdict:
        """The dead letter and error event of a retry `allows` refuses: the attempts before it
        failed, as many as the policy now allows or more, so it ends as the last of them would
        have (with that one's error; its traceback is not kept). `started`: the time it ends."""
        error_type, message = last_error(record.headers)
        made = attempt.number - 1
        reason = (
            f"retry policy changed to {self._function.retry.attempts} attempts after {made} were made; "
            f"last error: {message or 'unknown'}"
        )
        outcome = _failed(error_type or "RetryPolicyChanged", reason, cause="exception")
        failure = _failure(outcome, attempt, first_time=attempt.first_time or started, started=started)
        failure = dataclasses.replace(failure, attempts=made)
        return self._final(
            "dead_letter", event, outcome, failure, first=[self._dead_letter(record, attempt, failure)]
        )

    def _reply_topic(self, event: CloudEvent) -> str | None:
        """The reply topic of a synchronous invocation (bus.invoke); None for other events.

        Only a gateway replica's reply topic of this prefix is honoured: the extension comes with
        the event, and results must never be written to a topic a publisher chose.
        """
        topic = event.extensions.get(REPLY_EXTENSION)
        if not isinstance(topic, str) or not topic.startswith(self._replies):
            return None
        return topic if _INSTANCE.fullmatch(topic[len(self._replies) :]) else None

    def _answer(
        self, reply: str, event: CloudEvent, attempt: Attempt, outcome: Outcome, *, started: str
    ) -> Verdict:
        """A synchronous invocation runs once: its result or error goes to the caller's reply topic
        (and to the function's destinations); the caller decides about retries, so no retry and no
        dead letter."""
        if outcome.kind == "ok":
            try:
                sends = self._success(event, outcome)
                result = self._result(event, outcome)
                check_fits(result, [], self._max_record_bytes)
                return Verdict([*sends, Send(reply, result)], retrying=False, label="ok")
            except (InvalidEvent, TypeError, ValueError) as exc:
                outcome = _failed(type(exc).__name__, str(exc), cause="result")
        failure = _failure(outcome, attempt, first_time=attempt.first_time or started, started=started)
        return self._final("replied_error", event, outcome, failure, reply=reply)

    def _final(
        self,
        label: str,
        event: CloudEvent,
        outcome: Outcome,
        failure: Failure,
        *,
        first: list[Send] | None = None,
        reply: str | None = None,
    ) -> Verdict:
        """A failure that ends here: `first` (the dead letter), then the error record to the
        failure destination and to a synchronous caller's `reply` topic."""
        outputs = list(first or [])
        targets = [t for t in (self._function.destinations.on_failure, reply) if t is not None]
        if targets:
            error = self._error_record(event, failure)
            outputs.extend(Send(target, error) for target in targets)
        return Verdict(
            outputs, retrying=False, label=label, error_type=outcome.error_type, reason=outcome.message
        )

    def _retry(
        self, record: Record, attempt: Attempt, outcome: Outcome, *, first_time: str, now_ms: int
    ) -> Verdict:
        level, delay = self._function.retry.step(attempt.number)
        after = retry_delay(outcome.retry_after, backoff=delay)
        retry = retry_record(
            record,
            attempt,
            first_time=first_time,
            due_ms=now_ms + int(after * 1000),
            error_type=outcome.error_type,
            message=outcome.message,
        )
        topic = naming.retry_topic(self._prefix, self._function.name, level)
        return Verdict(
            [Send(topic, retry, attempt.partition)],
            retrying=True,
            label="retry",
            error_type=outcome.error_type,
            reason=outcome.message,
        )

    def unreadable(self, record: Record, attempt: Attempt, exc: Exception, *, started: str) -> Verdict:
        """The event could not be read for a reason outside it (the schema store is down).

        Retried per the policy; after the last attempt only the dead letter is written: there is
        no event to build the error event from.
        """
        outcome = _failed(type(exc).__name__, str(exc), cause="exception")
        first_time = attempt.first_time or started
        if attempt.number < self._function.retry.attempts:
            now_ms = int(time.time() * 1000)
            return self._retry(record, attempt, outcome, first_time=first_time, now_ms=now_ms)
        failure = Failure(
            error_type=outcome.error_type,
            message=_cut(outcome.message, MAX_MESSAGE_CHARS),
            traceback="",
            attempts=attempt.number,
            first_attempt_time=first_time,
            last_attempt_time=started,
            topic=attempt.topic,
            partition=attempt.partition,
            offset=attempt.offset,
        )
        return Verdict(
            [self._dead_letter(record, attempt, failure)],
            retrying=False,
            label="dead_letter",
            error_type=outcome.error_type,
            reason=outcome.message,
        )

    def invalid(self, record: Record, attempt: Attempt, reason: str) -> Verdict:
        """A record that is not a readable CloudEvent: straight to the DLQ (no handler can take it)."""
        letter = dead_letter(
            original(record), error_type="InvalidEvent", reason=reason, origin=attempt.origin
        )
        return Verdict(
            [Send(self._dlq, letter)],
            retrying=False,
            label="invalid",
            error_type="InvalidEvent",
            reason=reason,
        )

    def _success(self, event: CloudEvent, outcome: Outcome) -> list[Send]:
        emitted = [
            Send(self._ingress, to_record(self._typed(index, _unreplied(from_json_dict(orjson.loads(raw))))))
            for index, raw in enumerate(outcome.emitted)
        ]
        target = self._function.destinations.on_success
        result = None if target is None else self._result(event, outcome)
        check_fits(result, [send.record for send in emitted], self._max_record_bytes)
        return emitted if target is None or result is None else [*emitted, Send(target, result)]

    def _typed(self, index: int, event: CloudEvent) -> CloudEvent:
        """An emitted event as the gateway would publish it; InvalidEvent naming the emit and field."""
        try:
            (out,) = typed([event], self._schemas)
        except InvalidEvent as exc:
            raise InvalidEvent(
                f"emitted[{index}].{exc.field}",
                f"{exc.reason} (ctx.emit({event.type!r}): emit data that fits the type's schema)",
            ) from None
        return out

    def _result(self, event: CloudEvent, outcome: Outcome) -> Record:
        """The `bus.function.result` record of an ok outcome."""
        value = orjson.loads(outcome.value) if outcome.value is not None else None
        made = result_event(
            prefix=self._prefix, function=self._function.name, cause=event, value=value, time=self._clock()
        )
        return to_record(made)

    def _dead_letter(self, record: Record, attempt: Attempt, failure: Failure) -> Send:
        extra = (
            ("bus_attempts", str(failure.attempts).encode()),
            ("bus_first_attempt_time", failure.first_attempt_time.encode()),
            ("bus_last_attempt_time", failure.last_attempt_time.encode()),
        )
        letter = dead_letter(
            original(record),
            error_type=failure.error_type,
            reason=failure.message,
            origin=attempt.origin,
            extra=extra,
        )
        return Send(self._dlq, letter)

    def _error_record(self, event: CloudEvent, failure: Failure) -> Record:
        """The error event as a record, embedding the input's data only when it fits."""
        build = functools.partial(
            error_event, prefix=self._prefix, function=self._function.name, cause=event, failure=failure
        )
        record = to_record(build(time=self._clock()))
        if record_size(record) > self._max_record_bytes:
            record = to_record(build(time=self._clock(), embed_data=False))
        if record_size(record) > self._max_record_bytes:
            # Attributes near the limit: the error event still names the event and the error.
            short = dataclasses.replace(failure, message=_cut(failure.message, 1024), traceback="")
            record = to_record(build(time=self._clock(), embed_data=False, failure=short))
        return record


def _unreplied(event: CloudEvent) -> CloudEvent:
    """An emitted event without `busreplyto`: a handler cannot make a worker answer a caller."""
    if REPLY_EXTENSION not in event.extensions:
        return event
    extensions = {k: v for k, v in event.extensions.items() if k != REPLY_EXTENSION}
    return dataclasses.replace(event, extensions=extensions)


def _failure(outcome: Outcome, attempt: Attempt, *, first_time: str, started: str) -> Failure:
    """What the error record says of a failed last attempt (messages cut to fit)."""
    return Failure(
        error_type=outcome.error_type[:200],
        message=_cut(outcome.message, MAX_MESSAGE_CHARS),
        traceback=_cut(outcome.traceback, MAX_TRACEBACK_CHARS, keep_end=True),
        attempts=attempt.number,
        first_attempt_time=first_time,
        last_attempt_time=started,
        topic=attempt.topic,
        partition=attempt.partition,
        offset=attempt.offset,
        retry_after=outcome.retry_after if outcome.kind == "retry" else None,
        signal=outcome.kind if outcome.kind in _SIGNALS else None,
    )


_SIGNALS = frozenset({"retry", "dead_letter"})
"""Outcome kinds of the handler's signals (workers.signals), named in the error record."""


def retry_delay(after: float | None, *, backoff: float) -> float:
    """Seconds before the next attempt: `Retry(after=...)` within [0, a week], else the backoff step."""
    if after is None or math.isnan(after):
        return backoff
    return min(max(after, 0.0), MAX_RETRY_AFTER)


def check_fits(result: Record | None, emitted: Iterable[Record], limit: int) -> None:
    """Raise ValueError when the result or an emitted event is too large for one record."""
    if result is not None and (size := record_size(result)) > limit:
        raise ValueError(f"result is {size} bytes; records are limited to {limit}")
    if any(record_size(record) > limit for record in emitted):
        raise ValueError(f"an emitted event is over the {limit}-byte record limit")


def _cut(text: str, limit: int, *, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    marker = f" [... {len(text) - limit} characters cut]"
    return marker + text[-limit:] if keep_end else text[:limit] + marker


def _failed(error_type: str, message: str, *, cause: str) -> Outcome:
    return Outcome(id=-1, kind="failed", error_type=error_type, message=message, cause=cause)

"""`bus dlq list|redrive`: browse dead letters and re-publish them, a function's or the router's.

A dead letter (bus.deadletter) is the original record plus `bus_*` headers saying why and where
it failed. Redriving one produces the original record (key, value and headers, the `bus_*` ones
removed) with two extensions added:

- `redriveid` (header `ce_redriveid`): the run's id, a UUID shared by every event it re-publishes;
- `redriveorigin` (header `ce_redriveorigin`): `dlq/<offset>` (a function's DLQ) or
  `router.dlq/<offset>` (the router's), the dead letter's position.

A function's dead letters go back to its topic `<prefix>.fn.<name>`, where the worker takes them
as fresh first attempts; the router's go back to the ingress topic, where the router routes them
again by the rules applied now (a `Queue` says which). A router dead letter that failed for one
target only (header `bus_target`: the event's other targets received it) goes to that target
alone, routed by the rules applied now (`Targets`), or stays when they no longer send it there.

At most once per dead letter: each re-published event is committed in one Kafka transaction with
a marker on the queue's compacted marker topic (`<prefix>.fn.<name>.dlq.redriven`,
`<prefix>.router.dlq.redriven`; key: the DLQ offset as text), and a dead letter with a marker is
skipped (docs/decisions/dlq-redrive.md). Records that are not CloudEvents are listed but never
redriven: they would be dead-lettered again; nor are dead letters stored without their value, nor
the router's that it did not read from ingress (flow-step results, join parts).

This module is the pure core (the queues, the view of a dead letter, markers, the redrive plan,
the records to produce); bus.kafka.dead_letters reads and redrives, and bus.cli_dlq composes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from bus import naming, replay
from bus.avro_store import TypedReader
from bus.deadletter import TARGET, VALUE_DROPPED
from bus.errors import InvalidEvent
from bus.events import CloudEvent, to_json_dict
from bus.kafka_binding import Record, from_record, header, record_size, with_extensions
from bus.manifest import Function, Manifest
from bus.patterns import Pattern
from bus.topology import TopicSpec, function_topics, ingress_topics

__all__ = [
    "DEAD_LETTER_PREFIX",
    "NOT_A_CLOUDEVENT",
    "REDRIVE_ID",
    "REDRIVE_ORIGIN",
    "DeadLetterView",
    "Queue",
    "RedrivePlan",
    "Redriven",
    "Targets",
    "Verdict",
    "decide",
    "function_queue",
    "identity",
    "marker_record",
    "marker_topic",
    "markers_from",
    "original_record",
    "plan_redrive",
    "position",
    "redrive_record",
    "redrive_summary",
    "redriven_record",
    "router_queue",
    "transactions",
]

REDRIVE_ID = "redriveid"
"""Extension naming the redrive run that re-published an event."""
REDRIVE_ORIGIN = "redriveorigin"
"""Extension saying which dead letter an event came from: `dlq/<offset>` or `router.dlq/<offset>`."""
DEAD_LETTER_PREFIX = "bus_"
"""Headers the platform adds to dead letters (error, origin, attempts); removed on redrive."""
NOT_A_CLOUDEVENT = "<not a CloudEvent>"
"""What `bus dlq list` shows as the type of a record that is not a CloudEvent."""

READ_TIMEOUT = 60.0
"""Seconds to read a DLQ or its marker topic to the end before giving up."""
INIT_TIMEOUT = 30.0
"""Seconds `init_transactions` may take: the first transaction of a broker creates its state topic."""
TRANSACTION_LETTERS = 500
"""Most dead letters redriven in one transaction (each is two records: event and marker)."""
TRANSACTION_BYTES = 8_000_000
"""Bytes of records after which a transaction is closed (the next letter starts another)."""
EXTENSION_BYTES = 200
"""Room kept under the record limit for the redrive extensions when checking a target's record."""

_SPACE = re.compile(r"\s+")


def position(partition: int, offset: int) -> str:
    """A dead letter's position as text: its offset (bus's DLQs have one partition), else `<p>:<offset>`."""
    return str(offset) if partition == 0 else f"{partition}:{offset}"


def marker_topic(prefix: str, function: str) -> TopicSpec:
    """The compacted one-partition topic of a function's redrive markers."""
    return _markers(naming.dlq_redriven_topic(prefix, function))


def _markers(name: str) -> TopicSpec:
    return TopicSpec(name, 1, {"cleanup.policy": "compact"})


# The queues ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Queue:
    """A dead-letter topic `bus dlq` browses, and where and how its redrive re-publishes."""

    function: str | None
    """The function whose DLQ it is; None for the router's."""
    source: str
    """The dead-letter topic."""
    target: str
    """Where a redrive re-publishes: the function's topic, or the ingress topic (the router's)."""
    markers: TopicSpec
    """The compacted topic of redrive markers; also names the redrive's transactional id."""
    origin: str
    """What `redriveorigin` says before the position: `dlq`, or `router.dlq`."""
    topics: tuple[TopicSpec, ...]
    """The topics a redrive creates when missing: the target's and the markers."""
    redrives_from: str | None = None
    """Only dead letters read from this topic (their `bus_origin`) are redriven; None: all. The
    router's DLQ also holds flow-step results and join parts, which ingress would route as new events."""


def function_queue(prefix: str, function: Function) -> Queue:
    """A function's DLQ: redriven events go back to the function's topic as first attempts."""
    markers = marker_topic(prefix, function.name)
    return Queue(
        function=function.name,
        source=naming.dlq_topic(prefix, function.name),
        target=naming.function_topic(prefix, function.name),
        markers=markers,
        origin="dlq",
        topics=(*function_topics(prefix, function), markers),
    )


def router_queue(prefix: str) -> Queue:
    """The router's DLQ: redriven events go back to ingress, so the rules applied now decide again."""
    markers = _markers(naming.router_dlq_redriven_topic(prefix))
    ingress = naming.ingress_topic(prefix)
    return Queue(
        function=None,
        source=naming.router_dlq_topic(prefix),
        target=ingress,
        markers=markers,
        origin="router.dlq",
        topics=(*(spec for spec in ingress_topics(prefix) if spec.name == ingress), markers),
        redrives_from=ingress,
    )


# Markers -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Redriven:
    """A redrive marker: which run re-published a dead letter, and when."""

    redrive_id: str | None
    """The run's `redriveid` (None when the marker's value is unreadable)."""
    time: str | None
    """RFC 3339 time of the redrive."""
    event_id: str | None = None
    """Id of the event re-published: with `dead_lettered_ms`, tells the letter from one at the same
    offset of a DLQ deleted and created again."""
    dead_lettered_ms: int | None = None
    """Timestamp of the dead letter's record, milliseconds since the epoch."""

    def encode(self) -> bytes:
        """The marker's record value (JSON)."""
        return orjson.dumps(
            {
                "redrive_id": self.redrive_id,
                "time": self.time,
                "event_id": self.event_id,
                "dead_lettered_ms": self.dead_lettered_ms,
            }
        )

    @classmethod
    def decode(cls, value: bytes) -> Redriven:
        """A marker from its value; one that cannot be read still marks its letter (at most once)."""
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            return cls(redrive_id=None, time=None)

        def text(name: str) -> str | None:
            found = doc.get(name)
            return found if isinstance(found, str) else None

        stamp = doc.get("dead_lettered_ms")
        return cls(
            redrive_id=text("redrive_id"),
            time=text("time"),
            event_id=text("event_id"),
            dead_lettered_ms=stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else None,
        )

    def marks(self, event_id: str | None, timestamp_ms: int) -> bool:
        """True when this marker is about the dead letter with this event id and record timestamp."""
        if self.event_id is not None and self.event_id != event_id:
            return False
        return self.dead_lettered_ms is None or self.dead_lettered_ms == timestamp_ms


def markers_from(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, Redriven]:
    """Position -> marker from the marker topic's (key, value) records in order; a tombstone un-marks."""
    markers: dict[str, Redriven] = {}
    for key, value in records:
        if key is None:
            continue
        name = key.decode("utf-8", "replace")
        if value is None:
            markers.pop(name, None)
        else:
            markers[name] = Redriven.decode(value)
    return markers


# The view of a dead letter ---------------------------------------------------------------------------


def identity(event: CloudEvent) -> CloudEvent:
    return event


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterView:
    """One dead letter as `bus dlq` shows and redrives it."""

    partition: int
    offset: int
    timestamp_ms: int
    """The DLQ record's timestamp: when it was dead-lettered (milliseconds since the epoch)."""
    record: Record
    """The record as stored in the DLQ (with its `bus_*` headers)."""
    error_type: str | None
    error_message: str | None
    origin: str | None
    """Where the original was read: `topic/partition/offset`."""
    attempts: int | None
    first_attempt_time: str | None
    last_attempt_time: str | None
    event: Mapping[str, Any] | None
    """The original event in the CloudEvents JSON format; None when the record is not a CloudEvent."""
    invalid: str | None
    """Why the record is not a CloudEvent (None when it is one)."""
    value_dropped: int | None = None
    """Bytes of the original value its writer dropped (over the record limit); None when it is kept."""
    target: str | None = None
    """The one target the router failed to deliver it to (`bus_target`; its other targets received
    it); None when nothing was delivered, and for a function's dead letters."""
    redriven: Redriven | None
    """The marker of the redrive that re-published it, if any."""

    @classmethod
    def from_record(
        cls,
        record: Record,
        *,
        partition: int,
        offset: int,
        timestamp_ms: int,
        marker: Redriven | None = None,
        read: Callable[[CloudEvent], CloudEvent] = identity,
    ) -> DeadLetterView:
        """Decode a DLQ record; `marker` is the one stored at its position; `read` decodes typed data.

        Typed data that cannot be read is shown undecoded (data_base64): the event stays redrivable.
        """
        headers = record.headers
        event: dict[str, Any] | None = None
        invalid: str | None = None
        try:
            decoded = from_record(record.key, record.value, headers)
        except InvalidEvent as exc:
            invalid = str(exc)
        else:
            with contextlib.suppress(InvalidEvent):  # typed data unreadable here: shown as data_base64
                decoded = read(decoded)
            event = to_json_dict(decoded)
        attempts_text = _text(header(headers, "bus_attempts"))
        dropped_text = _text(header(headers, VALUE_DROPPED))
        event_id = event["id"] if event is not None else None
        return cls(
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            record=record,
            error_type=_text(header(headers, "bus_error_type")),
            error_message=_text(header(headers, "bus_error_message")),
            origin=_text(header(headers, "bus_origin")),
            attempts=int(attempts_text) if attempts_text and attempts_text.isdecimal() else None,
            first_attempt_time=_text(header(headers, "bus_first_attempt_time")),
            last_attempt_time=_text(header(headers, "bus_last_attempt_time")),
            event=event,
            invalid=invalid,
            value_dropped=int(dropped_text) if dropped_text and dropped_text.isdecimal() else None,
            target=_text(header(headers, TARGET)),
            redriven=marker if marker is not None and marker.marks(event_id, timestamp_ms) else None,
        )

    @property
    def position(self) -> str:
        """The dead letter's position (the marker key)."""
        return position(self.partition, self.offset)

    @property
    def origin_topic(self) -> str | None:
        """The topic the original was read from (`bus_origin` is `topic/partition/offset`)."""
        return None if self.origin is None else self.origin.rsplit("/", 2)[0]

    @property
    def id(self) -> str | None:
        """The event id, or None for a record that is not a CloudEvent."""
        return None if self.event is None else str(self.event["id"])

    @property
    def type(self) -> str:
        """The event type, or `<not a CloudEvent>`."""
        return NOT_A_CLOUDEVENT if self.event is None else str(self.event["type"])

    @property
    def time(self) -> str:
        """When it was dead-lettered, RFC 3339 UTC ('-' when the record has no timestamp)."""
        return replay.rfc3339_ms(self.timestamp_ms) if self.timestamp_ms >= 0 else "-"

    def summary_line(self, width: int = 80) -> str:
        """The error message on one line, at most `width` characters."""
        text = _SPACE.sub(" ", self.error_message or "").strip()
        return text if len(text) <= width else text[: width - 1] + "…"

    def to_json(self) -> dict[str, Any]:
        """The JSON document `bus dlq list --json` prints for it."""
        doc: dict[str, Any] = {
            "offset": self.offset,
            "partition": self.partition,
            "time": self.time,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "origin": self.origin,
            "target": self.target,
            "attempts": self.attempts,
            "first_attempt_time": self.first_attempt_time,
            "last_attempt_time": self.last_attempt_time,
            "key": _text(self.record.key),
            "id": self.id,
            "type": None if self.event is None else self.type,
            "event": self.event,
            "redriven": None
            if self.redriven is None
            else {"redrive_id": self.redriven.redrive_id, "time": self.redriven.time},
        }
        if self.value_dropped is not None:
            doc["value_dropped"] = self.value_dropped
        if self.invalid is not None:
            doc["invalid"] = self.invalid
            doc["raw"] = _text(self.record.value)
        return doc


# What a redrive does --------------------------------------------------------------------------------


class Verdict(StrEnum):
    """What a redrive does with one dead letter."""

    REDRIVE = "redrive"
    ALREADY_REDRIVEN = "already_redriven"
    NOT_A_CLOUDEVENT = "not_a_cloudevent"
    VALUE_DROPPED = "value_dropped"
    OTHER_ORIGIN = "other_origin"
    UNMATCHED = "unmatched"
    UNROUTED = "unrouted"
    """A dead letter for one target that the rules applied now no longer send there."""
    STILL_FAILING = "still_failing"
    """A dead letter for one target whose record for it still cannot be made (its input
    transformer fails, it is over the record limit)."""


def decide(letter: DeadLetterView, pattern: Pattern | None, *, source: str | None = None) -> Verdict:
    """Redrive a CloudEvent the filter matches (any, without a filter) unless a redrive re-published it.

    Never one stored without its value, nor, with `source` (`Queue.redrives_from`), one read from
    another topic.
    """
    if letter.event is None:
        return Verdict.NOT_A_CLOUDEVENT
    if letter.value_dropped is not None:
        return Verdict.VALUE_DROPPED
    if source is not None and letter.origin_topic != source:
        return Verdict.OTHER_ORIGIN
    if pattern is not None and not pattern.matches(letter.event):
        return Verdict.UNMATCHED
    if letter.redriven is not None:
        return Verdict.ALREADY_REDRIVEN
    return Verdict.REDRIVE


@dataclass(frozen=True, slots=True, kw_only=True)
class Targets:
    """The router's targets as the rules applied now decide them: where a dead letter for one target
    goes back. Routes as `bus replay --function` does (bus.replay), for that target only."""

    manifest: Manifest
    """The manifest in force: its rules, functions and prefix."""
    reader: TypedReader
    """Decodes typed data for the rules that look at it or reshape it."""
    max_record_bytes: int
    """Largest record produced: a target's record over it (less `EXTENSION_BYTES`) still fails."""

    def topic(self, target: str) -> str:
        """The target's topic."""
        return naming.function_topic(self.manifest.prefix, target)

    def records(self, original: Record, target: str) -> list[Record]:
        """What the router would write to `target` for `original` by the rules in force (none: it would
        not send it there). Raises InvalidEvent when they cannot be made (typed data, transformer)."""
        event, rules = replay.matching(original, replay.ingress_rules(self.manifest, target), self.reader)
        return replay.function_records(original, event, rules, target)

    def fits(self, record: Record) -> bool:
        """True when `record`, with the redrive extensions, is within the record limit."""
        return record_size(record) <= self.max_record_bytes - EXTENSION_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class RedrivePlan:
    """The dead letters one redrive re-publishes, oldest first, and why the others stay."""

    selected: tuple[DeadLetterView, ...]
    routed: Mapping[str, tuple[str, tuple[Record, ...]]] = dataclasses.field(default_factory=dict)
    """Position -> target topic and records, for the selected dead letters for one target; the others
    go to the queue's target."""
    scanned: int
    """Dead letters read."""
    matched: int
    """CloudEvents the filter selects (all of them without a filter), redriven before or not."""
    skipped_already: int
    """Matched dead letters a previous redrive re-published."""
    skipped_invalid: int
    """Records that are not CloudEvents (never redriven)."""
    skipped_dropped: int
    """Dead letters stored without their value (never redriven)."""
    skipped_origin: int
    """Dead letters read from another topic than the queue redrives from (never redriven)."""
    skipped_max: int
    """Matched dead letters left for a later run by `--max`."""
    skipped_unrouted: int = 0
    """Dead letters for one target that the rules in force no longer send there."""
    skipped_failing: int = 0
    """Dead letters for one target whose record for it still fails (transformer, size)."""


def plan_redrive(
    letters: Iterable[DeadLetterView],
    pattern: Pattern | None,
    *,
    max_count: int | None = None,
    source: str | None = None,
    targets: Targets | None = None,
) -> RedrivePlan:
    """Decide each letter (oldest first); select at most `max_count` of those to redrive.

    With `targets`, a letter for one target is routed to it by the rules in force (`UNROUTED` when
    they no longer send it there, `STILL_FAILING` when its record for it cannot be made).
    """
    selected: list[DeadLetterView] = []
    routed: dict[str, tuple[str, tuple[Record, ...]]] = {}
    verdicts: dict[Verdict, int] = dict.fromkeys(Verdict, 0)
    scanned = skipped_max = 0
    for letter in letters:
        scanned += 1
        verdict = decide(letter, pattern, source=source)
        records: list[Record] | None = None
        if verdict is Verdict.REDRIVE and targets is not None and letter.target is not None:
            try:
                records = targets.records(original_record(letter), letter.target)
            except InvalidEvent:
                verdict = Verdict.STILL_FAILING
            else:
                if not records:
                    verdict = Verdict.UNROUTED
                elif not all(map(targets.fits, records)):
                    verdict = Verdict.STILL_FAILING
        verdicts[verdict] += 1
        if verdict is Verdict.REDRIVE:
            if max_count is not None and len(selected) >= max_count:
                skipped_max += 1
            else:
                selected.append(letter)
                if records is not None and targets is not None and letter.target is not None:
                    routed[letter.position] = (targets.topic(letter.target), tuple(records))
    return RedrivePlan(
        selected=tuple(selected),
        routed=routed,
        scanned=scanned,
        matched=sum(
            verdicts[v]
            for v in (Verdict.REDRIVE, Verdict.ALREADY_REDRIVEN, Verdict.UNROUTED, Verdict.STILL_FAILING)
        ),
        skipped_already=verdicts[Verdict.ALREADY_REDRIVEN],
        skipped_invalid=verdicts[Verdict.NOT_A_CLOUDEVENT],
        skipped_dropped=verdicts[Verdict.VALUE_DROPPED],
        skipped_origin=verdicts[Verdict.OTHER_ORIGIN],
        skipped_max=skipped_max,
        skipped_unrouted=verdicts[Verdict.UNROUTED],
        skipped_failing=verdicts[Verdict.STILL_FAILING],
    )


def original_record(letter: DeadLetterView) -> Record:
    """The record as it was before it failed: the dead letter without its `bus_*` headers."""
    original = letter.record
    kept = tuple((name, value) for name, value in original.headers if not name.startswith(DEAD_LETTER_PREFIX))
    return Record(original.key, original.value, kept)


def redrive_record(letter: DeadLetterView, redrive_id: str, origin: str = "dlq") -> Record:
    """The event to re-publish: the original record without `bus_*` headers, plus the redrive extensions.

    `origin` is the queue's (`Queue.origin`). The key is kept (the producer partitions by it, so
    per-key order holds); the partition is not.
    """
    return redriven_record(original_record(letter), letter, redrive_id, origin)


def redriven_record(record: Record, letter: DeadLetterView, redrive_id: str, origin: str = "dlq") -> Record:
    """`record` (re-published for `letter`) with the redrive extensions."""
    return with_extensions(record, {REDRIVE_ID: redrive_id, REDRIVE_ORIGIN: f"{origin}/{letter.position}"})


def marker_record(letter: DeadLetterView, redrive_id: str, time: str) -> Record:
    """The marker saying `letter` was redriven by run `redrive_id` at `time`."""
    marker = Redriven(
        redrive_id=redrive_id, time=time, event_id=letter.id, dead_lettered_ms=letter.timestamp_ms
    )
    return Record(letter.position.encode(), marker.encode(), ())


def transactions(
    selected: Sequence[DeadLetterView],
    *,
    redrive_id: str,
    time: str,
    target: str,
    markers: str,
    origin: str = "dlq",
    routed: Mapping[str, tuple[str, Sequence[Record]]] | None = None,
    max_letters: int = TRANSACTION_LETTERS,
    max_bytes: int = TRANSACTION_BYTES,
) -> Iterator[list[tuple[str, Record]]]:
    """The records to produce, one list per transaction: each letter's events and marker share one.

    A letter in `routed` (`RedrivePlan.routed`) goes as its records to its topic, any other as its
    original record to `target`.
    """
    batch: list[tuple[str, Record]] = []
    size = letters = 0
    for letter in selected:
        found = (routed or {}).get(letter.position)
        if found is None:
            events = [(target, redrive_record(letter, redrive_id, origin))]
        else:
            topic, records = found
            events = [(topic, redriven_record(record, letter, redrive_id, origin)) for record in records]
        grow = sum(record_size(event) for _, event in events)
        if batch and (letters >= max_letters or size + grow > max_bytes):
            yield batch
            batch, size, letters = [], 0, 0
        batch += [*events, (markers, marker_record(letter, redrive_id, time))]
        size += grow
        letters += 1
    if batch:
        yield batch


def redrive_summary(
    plan: RedrivePlan,
    *,
    function: str | None,
    redrive_id: str,
    source: str,
    target: str,
    dry_run: bool,
    redriven: int,
) -> dict[str, Any]:
    """The one-line JSON `bus dlq redrive` prints (`function` is null for the router's DLQ)."""
    return {
        "function": function,
        "redrive_id": redrive_id,
        "source": source,
        "target": target,
        "dry_run": dry_run,
        "scanned": plan.scanned,
        "matched": plan.matched,
        "selected": len(plan.selected),
        "to_targets": len(plan.routed),
        "redriven": redriven,
        "skipped_already": plan.skipped_already,
        "skipped_invalid": plan.skipped_invalid,
        "skipped_dropped": plan.skipped_dropped,
        "skipped_origin": plan.skipped_origin,
        "skipped_max": plan.skipped_max,
        "skipped_unrouted": plan.skipped_unrouted,
        "skipped_failing": plan.skipped_failing,
    }

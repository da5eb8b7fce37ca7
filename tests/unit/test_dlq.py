"""`bus dlq`'s core: the view of a dead letter, markers, the redrive plan and the records produced."""

from __future__ import annotations

from typing import Any

import orjson

from bus import naming
from bus.avro_store import TypedReader
from bus.deadletter import TARGET, dead_letter
from bus.dlq import (
    NOT_A_CLOUDEVENT,
    REDRIVE_ID,
    REDRIVE_ORIGIN,
    DeadLetterView,
    Redriven,
    Targets,
    Verdict,
    decide,
    function_queue,
    marker_record,
    marker_topic,
    markers_from,
    plan_redrive,
    position,
    redrive_record,
    redrive_summary,
    router_queue,
    transactions,
)
from bus.errors import InvalidEvent
from bus.events import CloudEvent
from bus.kafka_binding import Record, from_record, header, to_record, with_extensions
from bus.manifest import parse
from bus.patterns import compile
from bus.topology import INGRESS_PARTITIONS, function_topics

STAMP = 1_780_000_000_000


def _event(n: int, kind: str = "order.placed") -> CloudEvent:
    return CloudEvent.create(id=f"e{n}", source="tests/dlq", type=kind, subject=f"k{n}", data={"n": n})


def _letter(
    n: int = 0,
    *,
    kind: str = "order.placed",
    structured: bool = False,
    extra: tuple[tuple[str, bytes], ...] = (),
    marker: Redriven | None = None,
    origin: str | None = None,
) -> DeadLetterView:
    original = to_record(_event(n, kind), structured=structured)
    original = Record(original.key, original.value, (("traceparent", b"00-abc-01"), *original.headers))
    origin = origin or f"p.fn.a/0/{n}"
    stored = dead_letter(original, error_type="ValueError", reason=f"boom {n}", origin=origin)
    stored = Record(stored.key, stored.value, (*stored.headers, *extra))
    return DeadLetterView.from_record(stored, partition=0, offset=n, timestamp_ms=STAMP + n, marker=marker)


def _not_an_event(offset: int = 9) -> DeadLetterView:
    stored = dead_letter(
        Record(b"k", b"\x00junk", ()), error_type="InvalidEvent", reason="no", origin="x/0/1"
    )
    return DeadLetterView.from_record(stored, partition=0, offset=offset, timestamp_ms=STAMP)


def _marker(n: int, **changes: object) -> Redriven:
    fields: dict[str, object] = {
        "redrive_id": "r1",
        "time": "2026-01-31T09:30:00.000Z",
        "event_id": f"e{n}",
        "dead_lettered_ms": STAMP + n,
    }
    fields.update(changes)
    return Redriven(**fields)  # type: ignore[arg-type]  # the test varies the fields' values


# The view of a dead letter


def test_a_dead_letter_shows_its_error_origin_and_event() -> None:
    """The `bus_*` headers give the error and origin; the rest decodes as the original event."""
    letter = _letter(3)
    assert (letter.error_type, letter.error_message, letter.origin) == ("ValueError", "boom 3", "p.fn.a/0/3")
    assert (letter.id, letter.type, letter.position) == ("e3", "order.placed", "3")
    assert letter.event is not None
    assert letter.event["data"] == {"n": 3}
    assert letter.time == "2026-05-28T20:26:40.003Z"
    assert (letter.attempts, letter.first_attempt_time, letter.redriven, letter.invalid) == (
        None,
        None,
        None,
        None,
    )


def test_attempt_headers_are_shown_when_present() -> None:
    """`bus_attempts` (decimal) and the attempt times of the worker runtime are read when it adds them."""
    letter = _letter(
        extra=(
            ("bus_attempts", b"3"),
            ("bus_first_attempt_time", b"2026-01-31T09:30:00Z"),
            ("bus_last_attempt_time", b"2026-01-31T09:31:00Z"),
        )
    )
    assert letter.attempts == 3
    assert letter.first_attempt_time == "2026-01-31T09:30:00Z"
    assert letter.last_attempt_time == "2026-01-31T09:31:00Z"
    assert _letter(extra=(("bus_attempts", b"three"),)).attempts is None


def test_a_structured_mode_dead_letter_decodes_too() -> None:
    """A record in structured mode (the JSON event as its value) is a CloudEvent like any other."""
    letter = _letter(1, structured=True)
    assert (letter.id, letter.type) == ("e1", "order.placed")


def test_a_record_that_is_not_a_cloudevent_is_shown_with_why() -> None:
    """Such a record has no event; its type reads `<not a CloudEvent>` and --json carries the raw value."""
    letter = _not_an_event()
    assert letter.event is None
    assert letter.id is None
    assert letter.type == NOT_A_CLOUDEVENT
    assert letter.invalid is not None
    assert "ce_specversion" in letter.invalid
    doc = letter.to_json()
    assert (doc["id"], doc["type"], doc["event"]) == (None, None, None)
    assert doc["raw"] == "\x00junk"


def test_typed_data_that_cannot_be_read_is_shown_undecoded() -> None:
    """When the typed reader refuses the data, the event is still listed (and redrivable), as it came."""

    def refuse(event: CloudEvent) -> CloudEvent:
        raise InvalidEvent("dataschema", "unknown schema")

    stored = dead_letter(to_record(_event(1)), error_type="E", reason="r", origin="o")
    letter = DeadLetterView.from_record(stored, partition=0, offset=1, timestamp_ms=STAMP, read=refuse)
    assert letter.id == "e1"
    assert letter.invalid is None


def test_the_json_form_has_every_field_and_the_full_event() -> None:
    """`bus dlq list --json` prints offset, time, error, origin, attempts, key, the event and the marker."""
    doc = _letter(2, marker=_marker(2)).to_json()
    assert doc["offset"] == 2
    assert doc["key"] == "k2"
    assert doc["event"]["id"] == "e2"
    assert doc["event"]["data"] == {"n": 2}
    assert doc["redriven"] == {"redrive_id": "r1", "time": "2026-01-31T09:30:00.000Z"}
    assert "invalid" not in doc
    assert orjson.loads(orjson.dumps(doc)) == doc


def test_the_message_is_shown_on_one_line_and_truncated() -> None:
    """Whitespace runs (newlines of a traceback) become one space; a long message ends with an ellipsis."""
    stored = dead_letter(
        to_record(_event(1)), error_type="E", reason="first\n  second\tthird " * 20, origin="o"
    )
    letter = DeadLetterView.from_record(stored, partition=0, offset=0, timestamp_ms=STAMP)
    line = letter.summary_line(40)
    assert "\n" not in line
    assert len(line) == 40
    assert line.startswith("first second third first")
    assert line.endswith("…")


def test_positions_are_offsets_on_partition_zero() -> None:
    """bus's DLQs have one partition: the offset alone names a letter; other partitions are spelt out."""
    assert position(0, 17) == "17"
    assert position(2, 17) == "2:17"


# Markers


def test_a_marker_round_trips_through_its_record_value() -> None:
    """The marker value is small JSON: redrive id, time, and what identifies the letter."""
    marker = _marker(4)
    assert Redriven.decode(marker.encode()) == marker


def test_markers_are_the_latest_record_per_key_and_a_tombstone_unmarks() -> None:
    """The compacted marker topic read in order: the last value per key counts; a tombstone removes it."""
    found = markers_from(
        [(b"0", _marker(0).encode()), (b"1", _marker(1).encode()), (b"0", None), (None, b"{}"), (b"2", b"?")]
    )
    assert set(found) == {"1", "2"}
    assert found["2"] == Redriven(redrive_id=None, time=None)  # unreadable: still marked, at most once


def test_a_marker_marks_only_the_letter_it_was_written_for() -> None:
    """A DLQ deleted and created again restarts its offsets: another event's marker there does not count."""
    assert _letter(5, marker=_marker(5)).redriven is not None
    assert _letter(5, marker=_marker(5, event_id="other")).redriven is None
    assert _letter(5, marker=_marker(5, dead_lettered_ms=1)).redriven is None
    assert _letter(5, marker=Redriven(redrive_id=None, time=None)).redriven is not None


def test_the_marker_record_is_keyed_by_the_dlq_offset() -> None:
    """Key: the offset as text; value: the run, the time, the event id and the letter's timestamp."""
    record = marker_record(_letter(7), "r9", "2026-01-31T09:30:00.000Z")
    assert record.key == b"7"
    assert record.value is not None
    assert orjson.loads(record.value) == {
        "redrive_id": "r9",
        "time": "2026-01-31T09:30:00.000Z",
        "event_id": "e7",
        "dead_lettered_ms": STAMP + 7,
    }


def test_the_marker_topic_is_compacted_with_one_partition() -> None:
    """`<prefix>.fn.<name>.dlq.redriven`, compacted, one partition."""
    spec = marker_topic("acme", "thumb")
    assert spec.name == naming.dlq_redriven_topic("acme", "thumb") == "acme.fn.thumb.dlq.redriven"
    assert (spec.partitions, dict(spec.config)) == (1, {"cleanup.policy": "compact"})


# The queues


def test_a_function_queue_redrives_its_dlq_to_the_function_topic() -> None:
    """A function's DLQ goes back to `<prefix>.fn.<name>`, marked on its own marker topic."""
    function = parse({"prefix": "acme", "functions": {"thumb": {"handler": "h:f"}}}).functions["thumb"]
    queue = function_queue("acme", function)
    assert (queue.function, queue.source, queue.target, queue.origin) == (
        "thumb",
        "acme.fn.thumb.dlq",
        "acme.fn.thumb",
        "dlq",
    )
    assert queue.markers == marker_topic("acme", "thumb")
    assert queue.topics == (*function_topics("acme", function), queue.markers)


def test_the_router_queue_redrives_its_dlq_to_ingress() -> None:
    """The router's DLQ goes back to `<prefix>.ingress`, so the rules applied now decide again."""
    queue = router_queue("acme")
    assert (queue.function, queue.source, queue.target, queue.origin) == (
        None,
        naming.router_dlq_topic("acme"),
        naming.ingress_topic("acme"),
        "router.dlq",
    )
    assert queue.markers.name == naming.router_dlq_redriven_topic("acme") == "acme.router.dlq.redriven"
    assert (queue.markers.partitions, dict(queue.markers.config)) == (1, {"cleanup.policy": "compact"})
    assert [(spec.name, spec.partitions) for spec in queue.topics] == [
        ("acme.ingress", INGRESS_PARTITIONS),
        ("acme.router.dlq.redriven", 1),
    ]


def test_a_router_dead_letter_shows_its_error_type_reason_and_origin() -> None:
    """The router writes the same shape without attempts: the error type and reason are what is shown."""
    reason = "target topic 'p.fn.gone' does not exist; `bus apply` creates it again"
    stored = dead_letter(
        to_record(_event(2)), error_type="UnknownTarget", reason=reason, origin="p.ingress/4/9"
    )
    letter = DeadLetterView.from_record(stored, partition=0, offset=0, timestamp_ms=STAMP)
    assert (letter.error_type, letter.error_message, letter.origin) == (
        "UnknownTarget",
        reason,
        "p.ingress/4/9",
    )
    assert (letter.attempts, letter.id, letter.type) == (None, "e2", "order.placed")


# Redrive records


def test_a_redriven_event_is_the_original_without_dead_letter_headers() -> None:
    """Key and event kept, `bus_*` headers gone, other headers kept, `redriveid`/`redriveorigin` added."""
    letter = _letter(3, extra=(("bus_attempts", b"3"),))
    record = redrive_record(letter, "run-1")
    assert record.key == b"k3"
    assert not [name for name, _ in record.headers if name.startswith("bus_")]
    assert header(record.headers, "traceparent") == b"00-abc-01"
    event = from_record(record.key, record.value, record.headers)
    assert event.extensions == {REDRIVE_ID: "run-1", REDRIVE_ORIGIN: "dlq/3"}
    assert (event.id, event.type, event.data) == ("e3", "order.placed", {"n": 3})


def test_a_structured_event_gets_the_extensions_in_its_json() -> None:
    """In structured mode decoders read the JSON value, so the extensions go there."""
    record = redrive_record(_letter(2, structured=True), "run-2")
    event = from_record(record.key, record.value, record.headers)
    assert event.extensions == {REDRIVE_ID: "run-2", REDRIVE_ORIGIN: "dlq/2"}


def test_a_letter_redriven_before_gets_the_new_run_s_extensions() -> None:
    """An event redriven, failed again and redriven again carries only the latest run's id."""
    original = with_extensions(to_record(_event(1)), {REDRIVE_ID: "old", REDRIVE_ORIGIN: "dlq/0"})
    stored = dead_letter(original, error_type="E", reason="r", origin="o")
    letter = DeadLetterView.from_record(stored, partition=0, offset=4, timestamp_ms=STAMP)
    record = redrive_record(letter, "new")
    assert [v for k, v in record.headers if k == "ce_" + REDRIVE_ID] == [b"new"]
    assert header(record.headers, "ce_" + REDRIVE_ORIGIN) == b"dlq/4"


def test_a_router_redrive_names_the_router_dlq_as_origin() -> None:
    """From the router's DLQ: original headers, the run's id, and `redriveorigin` `router.dlq/<offset>`."""
    letter = _letter(3)
    record = redrive_record(letter, "run-1", router_queue("p").origin)
    assert not [name for name, _ in record.headers if name.startswith("bus_")]
    assert header(record.headers, "traceparent") == b"00-abc-01"
    event = from_record(record.key, record.value, record.headers)
    assert event.extensions == {REDRIVE_ID: "run-1", REDRIVE_ORIGIN: "router.dlq/3"}


def test_each_event_commits_with_its_marker() -> None:
    """Transactions hold whole letters (event then marker), at most `max_letters` of them."""
    letters = [_letter(n) for n in range(5)]
    batches = list(
        transactions(letters, redrive_id="r", time="t", target="p.fn.a", markers="m", max_letters=2)
    )
    assert [len(batch) for batch in batches] == [4, 4, 2]
    flat = [item for batch in batches for item in batch]
    assert [topic for topic, _ in flat] == ["p.fn.a", "m"] * 5
    assert [record.key for topic, record in flat if topic == "m"] == [b"0", b"1", b"2", b"3", b"4"]


def test_transactions_carry_the_queue_s_origin() -> None:
    """Each event of a router redrive says `router.dlq/<offset>`."""
    (batch,) = transactions(
        [_letter(1)], redrive_id="r", time="t", target="p.ingress", markers="m", origin="router.dlq"
    )
    (topic, event), _ = batch
    assert topic == "p.ingress"
    assert header(event.headers, "ce_" + REDRIVE_ORIGIN) == b"router.dlq/1"


def test_transactions_close_when_they_grow_past_the_byte_budget() -> None:
    """A transaction stays under `max_bytes` of events, but always takes at least one letter."""
    letters = [_letter(n) for n in range(3)]
    batches = list(transactions(letters, redrive_id="r", time="t", target="t", markers="m", max_bytes=1))
    assert [len(batch) for batch in batches] == [2, 2, 2]


# Deciding


def test_the_verdicts() -> None:
    """Not a CloudEvent, not matched, already redriven, or redriven: in that order."""
    pattern = compile({"type": ["order.placed"]})
    assert decide(_not_an_event(), None) is Verdict.NOT_A_CLOUDEVENT
    assert decide(_letter(1, kind="user.created"), pattern) is Verdict.UNMATCHED
    assert decide(_letter(1, marker=_marker(1)), pattern) is Verdict.ALREADY_REDRIVEN
    assert decide(_letter(1), pattern) is Verdict.REDRIVE
    assert decide(_letter(1, kind="user.created"), None) is Verdict.REDRIVE


def test_a_letter_stored_without_its_value_is_never_redriven() -> None:
    """The router drops the value of a dead letter that would be over the record limit: re-publishing
    the rest would lose the data, so it stays, counted apart."""
    original = to_record(_event(1))
    bare = Record(original.key, None, original.headers)
    stored = dead_letter(
        bare,
        error_type="TooLarge",
        reason="r",
        origin="p.ingress/0/1",
        extra=(("bus_value_dropped", b"900"),),
    )
    letter = DeadLetterView.from_record(stored, partition=0, offset=1, timestamp_ms=STAMP)
    assert letter.value_dropped == 900
    assert letter.to_json()["value_dropped"] == 900
    assert decide(letter, None) is Verdict.VALUE_DROPPED
    plan = plan_redrive([letter, _letter(2)], None)
    assert ([chosen.offset for chosen in plan.selected], plan.skipped_dropped) == ([2], 1)


def test_the_router_queue_redrives_only_what_came_from_ingress() -> None:
    """The router DLQ also holds flow-step results and join parts; ingress would route them as new events."""
    source = router_queue("p").redrives_from
    assert source == "p.ingress"
    from_ingress = _letter(1, origin="p.ingress/3/17")
    from_results = _letter(2, origin="p.fn.a.results/0/4")
    from_joins = _letter(3, origin="p.flows.joins/1/0")
    assert from_ingress.origin_topic == "p.ingress"
    assert decide(from_ingress, None, source=source) is Verdict.REDRIVE
    assert decide(from_results, None, source=source) is Verdict.OTHER_ORIGIN
    assert decide(from_joins, None) is Verdict.REDRIVE, "a function's queue takes every origin"
    plan = plan_redrive([from_ingress, from_results, from_joins], None, source=source)
    assert ([chosen.offset for chosen in plan.selected], plan.skipped_origin, plan.matched) == ([1], 2, 1)


def test_the_plan_counts_what_stays_and_why() -> None:
    """Matched counts the filter's events, redriven before or not; the others are skipped with a reason."""
    letters = [
        _letter(0),
        _letter(1, kind="user.created"),
        _letter(2, marker=_marker(2)),
        _letter(3, kind="user.created", marker=_marker(3)),
        _not_an_event(4),
        _letter(5),
    ]
    plan = plan_redrive(letters, compile({"type": ["order.placed"]}))
    assert [letter.offset for letter in plan.selected] == [0, 5]
    assert (plan.scanned, plan.matched, plan.skipped_already, plan.skipped_invalid) == (6, 3, 1, 1)
    everything = plan_redrive(letters, None)
    assert [letter.offset for letter in everything.selected] == [0, 1, 5]
    assert (everything.matched, everything.skipped_already) == (5, 2)


def test_max_takes_the_oldest_and_counts_the_rest() -> None:
    """`--max N` redrives the N oldest selected letters; the others wait for a later run."""
    plan = plan_redrive([_letter(n) for n in range(5)], None, max_count=2)
    assert [letter.offset for letter in plan.selected] == [0, 1]
    assert plan.skipped_max == 3


def test_the_summary_line() -> None:
    """The redrive summary names the run, the topics and every count."""
    plan = plan_redrive([_letter(0), _not_an_event(1)], None)
    summary = redrive_summary(
        plan, function="a", redrive_id="r", source="p.fn.a.dlq", target="p.fn.a", dry_run=True, redriven=0
    )
    assert summary == {
        "function": "a",
        "redrive_id": "r",
        "source": "p.fn.a.dlq",
        "target": "p.fn.a",
        "dry_run": True,
        "scanned": 2,
        "matched": 1,
        "selected": 1,
        "to_targets": 0,
        "redriven": 0,
        "skipped_already": 0,
        "skipped_invalid": 1,
        "skipped_dropped": 0,
        "skipped_origin": 0,
        "skipped_max": 0,
        "skipped_unrouted": 0,
        "skipped_failing": 0,
    }


def test_the_router_s_summary_has_no_function() -> None:
    """For the router's DLQ `function` is null; `source` and `target` name the topics."""
    plan = plan_redrive([_letter(0)], None)
    summary = redrive_summary(
        plan,
        function=None,
        redrive_id="r",
        source="p.router.dlq",
        target="p.ingress",
        dry_run=False,
        redriven=1,
    )
    assert (summary["function"], summary["source"], summary["target"]) == (None, "p.router.dlq", "p.ingress")


# Router dead letters for one target


ROUTER_MANIFEST: dict[str, Any] = {
    "prefix": "p",
    "functions": {name: {"handler": "h:f"} for name in ("a", "b")},
    "rules": [
        {"name": "orders", "pattern": {"type": ["order.placed"]}, "targets": ["a", "b"]},
        {"name": "eu", "pattern": {"subject": ["k1"]}, "targets": ["b"]},
    ],
}


def _targets(manifest: dict[str, Any] | None = None, max_record_bytes: int = 1_000_000) -> Targets:
    return Targets(
        manifest=parse(manifest or ROUTER_MANIFEST),
        reader=TypedReader(),
        max_record_bytes=max_record_bytes,
    )


def _for_target(n: int, target: str | None, *, kind: str = "order.placed") -> DeadLetterView:
    """A router dead letter of event n read from ingress, for `target` only (None: the whole event)."""
    named = () if target is None else ((TARGET, target.encode()),)
    original = to_record(_event(n, kind))
    original = Record(original.key, original.value, (("traceparent", b"00-abc-01"), *original.headers))
    stored = dead_letter(
        original, error_type="UnknownTarget", reason="gone", origin=f"p.ingress/0/{n}", extra=named
    )
    return DeadLetterView.from_record(stored, partition=0, offset=n, timestamp_ms=STAMP + n)


def test_a_router_dead_letter_for_one_target_shows_it() -> None:
    """`bus_target` names the one target the router could not deliver to; --json has it, null otherwise."""
    letter = _for_target(1, "b")
    assert letter.target == "b"
    assert letter.to_json()["target"] == "b"
    assert _for_target(1, None).to_json()["target"] is None


def test_a_dead_letter_for_one_target_is_routed_to_that_target_only() -> None:
    """Its records are what the router writes to that target now, by the rules applied now: the other
    targets already have it; a letter without a target goes to the queue's target (ingress)."""
    plan = plan_redrive(
        [_for_target(0, "b"), _for_target(1, None)], None, source="p.ingress", targets=_targets()
    )
    assert [letter.offset for letter in plan.selected] == [0, 1]
    topic, records = plan.routed["0"]
    assert topic == "p.fn.b"
    (record,) = records
    assert not [name for name, _ in record.headers if name.startswith("bus_")]
    assert header(record.headers, "traceparent") == b"00-abc-01"
    assert from_record(record.key, record.value, record.headers).extensions == {"matchedrules": "orders"}
    assert "1" not in plan.routed

    (batch,) = transactions(
        plan.selected,
        redrive_id="r",
        time="t",
        target="p.ingress",
        markers="p.router.dlq.redriven",
        origin="router.dlq",
        routed=plan.routed,
    )
    assert [topic for topic, _ in batch] == [
        "p.fn.b",
        "p.router.dlq.redriven",
        "p.ingress",
        "p.router.dlq.redriven",
    ]
    event = from_record(batch[0][1].key, batch[0][1].value, batch[0][1].headers)
    assert event.extensions == {"matchedrules": "orders", REDRIVE_ID: "r", REDRIVE_ORIGIN: "router.dlq/0"}
    summary = redrive_summary(
        plan, function=None, redrive_id="r", source="s", target="p.ingress", dry_run=True, redriven=0
    )
    assert (summary["selected"], summary["to_targets"]) == (2, 1)


def test_a_dead_letter_whose_target_the_rules_no_longer_name_stays() -> None:
    """The rules in force decide: when none sends the event to the target, it is `skipped_unrouted`,
    not sent, and counted as matched; a target no longer declared is unrouted too."""
    rules_now = {**ROUTER_MANIFEST, "rules": [{"name": "o", "pattern": {"type": ["x"]}, "targets": ["b"]}]}
    letters = [_for_target(0, "b"), _for_target(1, "gone")]
    plan = plan_redrive(letters, None, source="p.ingress", targets=_targets(rules_now))
    assert (plan.selected, plan.skipped_unrouted, plan.matched) == ((), 2, 2)
    assert decide(letters[0], None) is Verdict.REDRIVE, "the verdict on its own does not route"


def test_a_dead_letter_whose_target_record_is_still_too_big_stays() -> None:
    """A record for the target over the limit (with room for the redrive extensions) is `skipped_failing`."""
    plan = plan_redrive([_for_target(0, "b")], None, targets=_targets(max_record_bytes=300))
    assert (plan.selected, plan.skipped_failing) == ((), 1)


def test_every_rule_sending_the_event_to_the_target_is_named() -> None:
    """`matchedrules` lists the rules applied now that send it to the target, as the router would."""
    plan = plan_redrive([_for_target(1, "b")], None, targets=_targets())
    (record,) = plan.routed["1"][1]
    assert header(record.headers, "ce_matchedrules") == b"orders,eu"


def test_a_transaction_counts_letters_not_records() -> None:
    """`max_letters` bounds dead letters per transaction, whatever the number of records each has."""
    plan = plan_redrive([_for_target(n, "b") for n in range(3)], None, targets=_targets())
    batches = list(
        transactions(
            plan.selected,
            redrive_id="r",
            time="t",
            target="i",
            markers="m",
            routed=plan.routed,
            max_letters=2,
        )
    )
    assert [len(batch) for batch in batches] == [4, 2]

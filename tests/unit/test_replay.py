"""`bus replay`'s core: times, rates, pacing, selection and the loop over records (bus.replay)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import yaml

from bus.avro_store import TypedReader
from bus.errors import ConfigError
from bus.events import STRUCTURED_CONTENT_TYPE, CloudEvent
from bus.kafka.window import Span
from bus.kafka_binding import Record, from_record, header, to_record
from bus.manifest import parse as parse_manifest
from bus.patterns import compile
from bus.replay import (
    REPLAY_ID,
    REPLAY_ORIGIN,
    Plan,
    Tally,
    TokenBucket,
    mark,
    parse_rate,
    parse_time,
    plan,
    replay,
    replay_id,
    replay_sources,
)
from bus.routing import Rule

NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)
BASE_MS = int(NOW.timestamp() * 1000)


# Times and rates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T09:30:00Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31t09:30:00z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31 09:30:00Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        ("2026-01-31T10:30:00.250+01:00", datetime(2026, 1, 31, 9, 30, 0, 250_000, tzinfo=UTC)),
        ("2026-01-31T09:30:00.123456789Z", datetime(2026, 1, 31, 9, 30, 0, 123_456, tzinfo=UTC)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("1h30m", NOW - timedelta(minutes=90)),
        ("1d", NOW - timedelta(days=1)),
        ("45s", NOW - timedelta(seconds=45)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("500ms", NOW - timedelta(milliseconds=500)),
        ("now", NOW),
        (" 2h ", NOW - timedelta(hours=2)),
    ],
)
def test_times_are_rfc3339_with_a_zone_or_a_duration_ago(text: str, expected: datetime) -> None:
    """`--from`/`--to` take RFC 3339 with a zone, a duration before now, or `now`."""
    assert parse_time(text, now=NOW, flag="--from") == expected


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2h ago", "-2h", "2", "h", "2026-01-31", "2026-13-01T00:00:00Z"]
)
def test_times_that_are_neither_are_refused_naming_the_flag(text: str) -> None:
    """Anything else is a ConfigError that names the flag and the value."""
    with pytest.raises(ConfigError, match="--from") as caught:
        parse_time(text, now=NOW, flag="--from")
    assert repr(text) in str(caught.value)


def test_a_time_without_a_zone_is_refused_with_the_fix() -> None:
    """A local time is ambiguous: the error says to add a zone and shows how."""
    with pytest.raises(ConfigError, match=r"no time zone.*2026-01-31T09:30:00Z"):
        parse_time("2026-01-31T09:30:00", now=NOW, flag="--to")


@pytest.mark.parametrize(("text", "rate"), [("100", 100.0), ("100/s", 100.0), ("0.5", 0.5), (" 2/s ", 2.0)])
def test_rates_are_events_per_second(text: str, rate: float) -> None:
    """`--rate` takes N or N/s."""
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0", "-1", "fast", "10/m", "", "1e9999"])
def test_rates_that_are_not_positive_numbers_are_refused(text: str) -> None:
    """A rate of zero, a negative one or another unit is a ConfigError naming --rate."""
    with pytest.raises(ConfigError, match="--rate"):
        parse_rate(text)


def test_replay_ids_carry_the_utc_start_time() -> None:
    """A replay id says when the replay started, in UTC, plus a token that tells apart two at once."""
    berlin = NOW.astimezone(timezone(timedelta(hours=1)))
    assert replay_id(berlin, "ab12cd34") == "replay-20260131T120000Z-ab12cd34"


# The token bucket


def test_a_bucket_lets_a_burst_through_then_spaces_tokens_at_the_rate() -> None:
    """A full bucket of 3 at 10/s: three tokens now, then one every 0.1 s."""
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0) == pytest.approx(0.1)
    assert bucket.reserve(0.0) == pytest.approx(0.2)


def test_a_caller_that_waits_as_told_keeps_exactly_to_the_rate() -> None:
    """Waiting what reserve() answers gives N tokens in (N - burst) / rate seconds, no more, no less."""
    bucket = TokenBucket(rate=50, burst=1)
    now = 0.0
    for _ in range(101):
        now += bucket.reserve(now)
    assert now == pytest.approx(100 / 50)


def test_an_idle_bucket_refills_up_to_its_burst_only() -> None:
    """After a long pause the bucket holds `burst` tokens, not the whole idle time's worth."""
    bucket = TokenBucket(rate=10, burst=2)
    bucket.reserve(0.0)
    bucket.reserve(0.0)
    assert [bucket.reserve(100.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.reserve(100.0) == pytest.approx(0.1)


def test_a_clock_stepping_back_refills_nothing() -> None:
    """Time that goes backwards is not counted; the wait still runs from the bucket's last update."""
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.reserve(10.0) == 0.0
    assert bucket.reserve(5.0) == pytest.approx(6.0)


def test_per_second_buckets_burst_a_tenth_of_a_second_and_at_least_one_event() -> None:
    """The default burst: rate / 10, never below one event."""
    assert TokenBucket.per_second(1000).burst == 100
    assert TokenBucket.per_second(2).burst == 1


# Plans and marks


def rule(name: str, targets: list[str], pattern: dict[str, Any]) -> Rule:
    """A rule with a compiled pattern."""
    return Rule(name=name, pattern=compile(pattern), targets=tuple(targets))


RULES = (
    rule("orders", ["a", "b"], {"type": ["order.placed"]}),
    rule("big", ["a"], {"type": ["order.placed"], "data": {"total": [{"numeric": [">", 100]}]}}),
    rule("audit", ["b"], {"type": [{"prefix": ""}]}),
)


def make_plan(function: str = "a", *, end: datetime | None = None, dry_run: bool = False) -> Plan:
    """A plan over RULES for functions a, b and c, the window starting at NOW."""
    return plan(
        function=function,
        prefix="p",
        rules=RULES,
        functions={"c", "a", "b"},
        start=NOW,
        end=end,
        replay_id="replay-1",
        dry_run=dry_run,
    )


def test_a_plan_keeps_only_the_rules_that_target_the_function() -> None:
    """Rules for other functions play no part: `audit` matches everything, but only for b."""
    chosen = make_plan("a")
    assert [r.name for r in chosen.rules] == ["orders", "big"]
    assert chosen.source == "p.ingress"
    assert chosen.target == "p.fn.a"
    assert chosen.with_data, "`big` looks at data, so values are decoded"
    assert not make_plan("b").with_data, "b's rules name attributes only"


def test_an_unknown_function_is_refused_naming_it_and_the_known_ones() -> None:
    """One line: the function asked for and every function the rules know."""
    with pytest.raises(ConfigError) as caught:
        make_plan("zz")
    assert str(caught.value) == "unknown function 'zz'; known functions: a, b, c"


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    """--to before --from is a ConfigError naming both flags."""
    with pytest.raises(ConfigError, match=r"--from .* is after --to"):
        make_plan(end=NOW - timedelta(seconds=1))


def test_the_window_is_inclusive_at_both_ends_to_the_millisecond() -> None:
    """Records stamped exactly at --from and at --to are inside; a millisecond either side is not."""
    window = make_plan(end=NOW + timedelta(seconds=5))
    assert window.contains(BASE_MS)
    assert window.contains(BASE_MS + 5000)
    assert not window.contains(BASE_MS - 1)
    assert not window.contains(BASE_MS + 5001)
    assert make_plan().contains(BASE_MS + 10**9), "no --to: no upper bound by time"


def event(n: int, type_: str = "order.placed", **data: Any) -> CloudEvent:
    """A JSON event with id `e<n>` and key `k<n>`."""
    return CloudEvent.create(
        id=f"e{n}", source="tests/replay", type=type_, subject=f"k{n}", data=data or {"n": n}
    )


def test_a_mark_adds_the_two_extensions_and_keeps_everything_else() -> None:
    """Same key, value and headers, in order, plus ce_replayid and ce_replayorigin."""
    original = to_record(event(1))
    marked = mark(original, "replay-1", "p.ingress/0/7")
    assert marked.key == original.key
    assert marked.value == original.value
    assert marked.headers[: len(original.headers)] == original.headers
    decoded = from_record(marked.key, marked.value, marked.headers)
    assert decoded.extensions[REPLAY_ID] == "replay-1"
    assert decoded.extensions[REPLAY_ORIGIN] == "p.ingress/0/7"


def test_a_mark_replaces_an_earlier_replays_marks() -> None:
    """Replaying a replayed record leaves one replayid: the new one."""
    twice = mark(mark(to_record(event(1)), "replay-1", "x/0/1"), "replay-2", "x/0/2")
    assert [v for k, v in twice.headers if k == "ce_replayid"] == [b"replay-2"]


def test_a_structured_record_is_marked_inside_its_json_too() -> None:
    """Decoders ignore ce_* headers in structured mode, so the extensions also go into the JSON."""
    marked = mark(to_record(event(1), structured=True), "replay-1", "p.ingress/2/3")
    assert header(marked.headers, "content-type") == STRUCTURED_CONTENT_TYPE.encode()
    assert orjson.loads(marked.value or b"")["replayid"] == "replay-1"
    decoded = from_record(marked.key, marked.value, marked.headers)
    assert decoded.extensions[REPLAY_ORIGIN] == "p.ingress/2/3"
    assert decoded.id == "e1"


# The loop


@dataclass(frozen=True)
class Item:
    """A record read from the ingress topic."""

    partition: int
    offset: int
    timestamp_ms: int
    record: Record


class Sink:
    """Records what would be produced; `wait` only advances a fake clock."""

    def __init__(self, clock: list[float]) -> None:
        self.sent: list[tuple[str, Record]] = []
        self.waited = 0.0
        self._clock = clock

    def send(self, topic: str, record: Record) -> None:
        self.sent.append((topic, record))

    def wait(self, seconds: float) -> None:
        self.waited += seconds
        self._clock[0] += seconds


def items() -> list[Item]:
    """Ingress records on two partitions, one second apart from NOW: a mix of matches and not."""
    records = [
        to_record(event(0)),  # orders -> a
        to_record(event(1, "user.created")),  # audit only -> b
        Record(b"raw", b"not a cloudevent", ()),  # undecodable
        to_record(event(3, total=500)),  # orders + big -> a
        to_record(event(4, "order.placed", total=5)),  # orders -> a
    ]
    return [Item(n % 2, n // 2, BASE_MS + n * 1000, r) for n, r in enumerate(records)]


def run(chosen: Plan, given: list[Item], **options: Any) -> tuple[Tally, Sink | None]:
    """Replay `given` with `chosen` into a fake sink (None for a dry run)."""
    clock = [0.0]
    sink = None if chosen.dry_run else Sink(clock)
    tally = Tally(chosen, {0: Span(0, 3), 1: Span(0, 2)})
    replay(given, chosen, tally, reader=TypedReader(), sink=sink, clock=lambda: clock[0], **options)
    return tally, sink


def test_only_records_the_functions_rules_match_are_sent_marked_to_its_topic() -> None:
    """Events 0, 3 and 4 match a's rules; each goes once to p.fn.a with its origin."""
    tally, sink = run(make_plan("a"), items())
    assert sink is not None
    assert [topic for topic, _ in sink.sent] == ["p.fn.a"] * 3
    origins = [header(record.headers, "ce_replayorigin") for _, record in sink.sent]
    assert origins == [b"p.ingress/0/0", b"p.ingress/1/1", b"p.ingress/0/2"]
    assert [header(record.headers, "ce_id") for _, record in sink.sent] == [b"e0", b"e3", b"e4"]
    summary = tally.summary(None)
    assert (summary["scanned"], summary["matched"], summary["skipped_undecodable"]) == (5, 3, 1)
    assert summary["matched_by_rule"] == {"orders": 3, "big": 1}
    assert summary["undecodable"][0]["partition"] == 0
    assert summary["undecodable"][0]["offset"] == 1
    assert "ce_specversion" in summary["undecodable"][0]["reason"]
    assert summary["first_event_time"] == "2026-01-31T12:00:00.000Z"
    assert summary["last_event_time"] == "2026-01-31T12:00:04.000Z"


def test_a_dry_run_counts_per_partition_and_sends_nothing() -> None:
    """Without a sink the matches are counted by partition, with their first and last times."""
    tally, sink = run(make_plan("a", dry_run=True), items())
    assert sink is None
    summary = tally.summary(None)
    assert summary["dry_run"] is True
    assert summary["matched"] == 3
    assert summary["replayed"] == 0
    assert summary["partitions"] == [
        {"partition": 0, "start": 0, "end": 3, "next": 3, "scanned": 3, "matched": 2},
        {"partition": 1, "start": 0, "end": 2, "next": 2, "scanned": 2, "matched": 1},
    ]


def test_records_stamped_before_the_window_are_skipped_and_counted() -> None:
    """A record that a skewed producer clock stamped before --from is not replayed."""
    early = Item(0, 0, BASE_MS - 1, to_record(event(9)))
    tally, sink = run(make_plan("a"), [early, *items()[:1]])
    assert sink is not None
    assert len(sink.sent) == 1
    assert tally.skipped_outside_window == 1


def test_a_typed_event_that_cannot_be_read_is_skipped_not_fatal() -> None:
    """An application/avro record whose schema is unknown is undecodable when rules look at data."""
    broken = Record(
        b"k",
        b"\x00garbage",
        (
            ("ce_specversion", b"1.0"),
            ("ce_id", b"x"),
            ("ce_source", b"s"),
            ("ce_type", b"order.placed"),
            ("content-type", b"application/avro"),
        ),
    )
    tally, sink = run(make_plan("a"), [Item(0, 0, BASE_MS, broken), *items()[:1]])
    assert sink is not None
    assert len(sink.sent) == 1
    assert tally.skipped_undecodable == 1


def test_the_rate_paces_sends_by_waiting_on_the_sink() -> None:
    """At 2 events/s with a burst of one, three sends take one second of waiting (served by the sink)."""
    _, sink = run(make_plan("a"), items(), bucket=TokenBucket(rate=2, burst=1))
    assert sink is not None
    assert len(sink.sent) == 3
    assert sink.waited == pytest.approx(1.0)


def test_a_stop_ends_the_loop_and_marks_the_tally_interrupted() -> None:
    """Once stop() is true no further record is read; the summary says it was interrupted."""
    calls = iter([False, False, True])
    tally, sink = run(make_plan("a"), items(), stop=lambda: next(calls, True))
    assert sink is not None
    assert tally.scanned == 2
    assert tally.summary(None)["interrupted"] is True


def test_a_flow_step_replays_from_the_results_of_the_step_it_follows() -> None:
    """Ordinary rules and start steps read the ingress; later steps what they follow; joins are refused."""
    parsed = parse_manifest(
        yaml.safe_load(
            """
prefix: p
functions:
  crawl: {handler: 'm:f'}
  parse: {handler: 'm:f', destinations: {on_success: parsed}}
  store: {handler: 'm:f'}
  stats: {handler: 'm:f'}
rules: [{name: direct, pattern: {type: [x]}, targets: [store]}]
flows:
  f:
    start: {type: [go]}
    steps:
      crawl: {function: crawl}
      parse: {function: parse, after: crawl}
      store: {function: store, after: parse}
      both: {function: stats, after: [crawl, parse]}
"""
        )
    )
    assert {t: [r.name for r in rules] for t, rules in replay_sources(parsed, "crawl").items()} == {
        "p.ingress": ["flow.f.crawl"]
    }
    assert {t: [r.name for r in rules] for t, rules in replay_sources(parsed, "parse").items()} == {
        "p.fn.crawl.results": ["flow.f.parse"]
    }
    assert {t: [r.name for r in rules] for t, rules in replay_sources(parsed, "store").items()} == {
        "p.ingress": ["direct"],
        "parsed": ["flow.f.store"],
    }
    with pytest.raises(ConfigError, match=r"runs as the join f\.both"):
        replay_sources(parsed, "stats")
    assert replay_sources(parsed, "nope") == {"p.ingress": ()}
    idle = parse_manifest({"prefix": "p", "functions": {"idle": {"handler": "m:f"}}})
    with pytest.raises(ConfigError, match=r"no rule targets function 'idle': a replay would send it nothing"):
        replay_sources(idle, "idle")

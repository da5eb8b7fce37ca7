"""`bus replay`: re-drive already-ingested events through the current rules to one function.

Like an EventBridge archive replay, from Kafka's own retention of `<prefix>.ingress` (and, for a
flow step that follows another, of that step's results topic; one source after the other, with a
summary line each): each record in the time window is decoded as the router decodes it and
matched against the rules that target the function; when one matches, the original record
(key, value, headers) is produced to the function's topic with two extensions added (CloudEvents
extension names: a-z0-9, at most 20):

- `replayid` (header `ce_replayid`): the replay's id, `replay-<UTC time>-<8 hex digits>`, shared
  by every event one replay re-drives;
- `replayorigin` (header `ce_replayorigin`): where the event was read, `<topic>/<partition>/<offset>`.

Nothing else is touched: the reader joins no consumer group and commits nothing, and no other
function's topic is written. The window is `[from, to]` by record timestamp, never past each
partition's end as of the start (a replay does not chase new events). Delivery is at least once:
running an interrupted or failed replay again re-drives what the first run delivered, under a
new `replayid`.

Pure core (times, rates, pacing, selection, marking, the tally, the loop over records with its
I/O passed in) plus `command`, the composition root of `bus replay`.
"""

from __future__ import annotations

import math
import re
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson

from bus import naming
from bus.avro_schema import load_book
from bus.avro_store import TypedReader
from bus.errors import ConfigError, InvalidEvent, PublishError
from bus.events import to_json_dict
from bus.fanout import deliveries, needs_data, routed_record
from bus.kafka.admin import ensure_topics
from bus.kafka.control_store import manifest_in_force
from bus.kafka.schema_store import open_store
from bus.kafka.sync_producer import Deliveries, SyncProducer
from bus.kafka.window import Span, WindowReader
from bus.kafka_binding import Record, from_record, with_extensions
from bus.manifest import Manifest
from bus.routing import Rule, matching_rules
from bus.settings import KafkaSettings, load_kafka
from bus.stack import STOP_SIGNALS
from bus.topology import function_topics

__all__ = [
    "REPLAY_ID",
    "REPLAY_ORIGIN",
    "Plan",
    "Tally",
    "TokenBucket",
    "command",
    "function_records",
    "ingress_rules",
    "mark",
    "matching",
    "parse_rate",
    "parse_time",
    "plan",
    "replay",
    "replay_id",
    "replay_sources",
    "selecting_rules",
]

REPLAY_ID = "replayid"
"""Extension naming the replay that re-drove an event."""
REPLAY_ORIGIN = "replayorigin"
"""Extension saying where a replayed event was read: `<topic>/<partition>/<offset>`."""

_UNDECODABLE_SAMPLES = 10
"""Undecodable records listed by position in the summary (all are counted)."""
_PACE_SLICE = 0.2
"""Longest single wait while pacing, in seconds: a stop signal is noticed within it."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+\Z")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?P<zone>[Zz]|[+-]\d{2}:\d{2})?\Z")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(?:/s)?\Z")


# Times and rates -------------------------------------------------------------------------------


def parse_time(text: str, *, now: datetime, flag: str) -> datetime:
    """A point in time: RFC 3339 with a zone, a duration before `now` (`30m`, `2h`, `1h30m`, `1d`), or `now`.

    Raises ConfigError naming `flag` and the accepted forms.
    """
    value = text.strip()
    if value == "now":
        return now
    if _DURATION.match(value):
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _DURATION_PART.findall(value))
        return now - timedelta(seconds=seconds)
    match = _RFC3339.match(value)
    if match and match.group("zone") is None:
        raise ConfigError(f"{flag} {text!r} has no time zone; add one, e.g. {value}Z or {value}+01:00")
    if match:
        try:
            return datetime.fromisoformat(value.upper().replace(" ", "T"))
        except ValueError as exc:
            raise ConfigError(f"{flag} {text!r} is not a valid time ({exc})") from exc
    raise ConfigError(
        f"{flag} {text!r} is not a time: give RFC 3339 with a zone (2026-01-31T09:30:00Z) "
        "or a duration ago (30m, 2h, 1h30m, 1d)"
    )


def parse_rate(text: str, *, flag: str = "--rate") -> float:
    """Events per second from `N` or `N/s` (N > 0, decimals allowed)."""
    match = _RATE.match(text.strip())
    rate = float(match.group(1)) if match else 0.0
    if not 0 < rate < math.inf:
        raise ConfigError(
            f"{flag} {text!r} must be a positive number of events per second, e.g. 100 or 100/s"
        )
    return rate


def rfc3339_ms(timestamp_ms: int) -> str:
    """A record timestamp as RFC 3339 UTC text with milliseconds."""
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch_ms(moment: datetime, *, round_up: bool) -> int:
    """Milliseconds since the epoch; a window's start rounds up and its end down, so both stay inside."""
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return -(-micros // 1000) if round_up else micros // 1000


@dataclass(slots=True)
class TokenBucket:
    """Paces events to `rate` per second with bursts of at most `burst` (pure: time is passed in).

    `reserve(now)` takes a token even when none is left, and answers how long to wait before
    using it; the debt is repaid by the refill, so a caller that waits keeps exactly to the rate.
    """

    rate: float
    """Tokens per second."""
    burst: float
    """Most tokens held; the bucket starts full."""
    _tokens: float = field(init=False, default=0.0)
    _updated: float | None = field(init=False, default=None)

    @classmethod
    def per_second(cls, rate: float) -> TokenBucket:
        """A bucket for `rate` events/s whose bursts last at most a tenth of a second (at least one event)."""
        return cls(rate=rate, burst=max(1.0, rate / 10))

    def reserve(self, now: float) -> float:
        """Take one token at `now` (seconds, any monotonic origin); return the seconds to wait first."""
        if self._updated is None:
            self._tokens, self._updated = self.burst, now
        else:
            # max(): a clock that steps back refills nothing.
            self._tokens = min(self.burst, self._tokens + max(0.0, now - self._updated) * self.rate)
            self._updated = max(self._updated, now)
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate + (self._updated - now)


# What to replay -----------------------------------------------------------------------------------


def replay_id(now: datetime, token: str) -> str:
    """A replay's id: `replay-<UTC time to the second>-<token>`."""
    return f"replay-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{token}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one replay does: which records, matched by which rules, to which topic."""

    replay_id: str
    """Value of the `replayid` extension on every replayed event."""
    function: str
    """The one function events are re-driven to."""
    source: str
    """Topic read: the prefix's ingress topic, or the results topic a flow step follows."""
    target: str
    """Topic written: the function's topic."""
    rules: tuple[Rule, ...]
    """The rules in force that target the function, in manifest order."""
    start: datetime
    """Earliest record timestamp replayed (inclusive)."""
    end: datetime | None
    """Latest record timestamp replayed (inclusive); None: up to each partition's end at the start."""
    dry_run: bool = False
    """Count what would be replayed; produce nothing."""

    @property
    def start_ms(self) -> int:
        """`start` in epoch milliseconds, rounded up."""
        return _epoch_ms(self.start, round_up=True)

    @property
    def end_ms(self) -> int | None:
        """`end` in epoch milliseconds, rounded down."""
        return None if self.end is None else _epoch_ms(self.end, round_up=False)

    @property
    def with_data(self) -> bool:
        """True when a rule looks at `data` or reshapes it: only then is the value decoded."""
        return needs_data(self.rules)

    def contains(self, timestamp_ms: int) -> bool:
        """True when a record stamped at `timestamp_ms` is inside the window."""
        end_ms = self.end_ms
        return timestamp_ms >= self.start_ms and (end_ms is None or timestamp_ms <= end_ms)


def plan(
    *,
    function: str,
    prefix: str,
    rules: Sequence[Rule],
    functions: Collection[str],
    start: datetime,
    end: datetime | None,
    replay_id: str,
    dry_run: bool = False,
    source: str | None = None,
) -> Plan:
    """Check a replay request against the rules and functions in force (from a manifest or a control topic).

    `source` is the topic read (default: the ingress) and `rules` those matching its records
    (`replay_sources`). Raises ConfigError for an unknown function (naming the known ones) or a
    window that ends before it starts.
    """
    if function not in functions:
        known = ", ".join(sorted(functions)) or "none"
        raise ConfigError(f"unknown function {function!r}; known functions: {known}")
    if end is not None and end < start:
        raise ConfigError(f"--from {start.isoformat()} is after --to {end.isoformat()}")
    return Plan(
        replay_id=replay_id,
        function=function,
        source=source or naming.ingress_topic(prefix),
        target=naming.function_topic(prefix, function),
        rules=tuple(rule for rule in rules if function in rule.targets),
        start=start,
        end=end,
        dry_run=dry_run,
    )


def replay_sources(manifest: Manifest, function: str) -> dict[str, tuple[Rule, ...]]:
    """Topic to read -> the rules targeting `function` that select its records, in manifest order.

    Ordinary rules and flow start steps select from the ingress; a later flow step selects from
    the results of the function of the step it follows (bus.flows). A join's rule targets the joiner,
    not the function, so it is never among them; a function that only runs as a join is refused:
    replay the steps the join follows.
    """
    ingress = naming.ingress_topic(manifest.prefix)
    if function not in manifest.functions:
        return {ingress: ()}  # `plan` refuses it, naming the known functions
    flows = {flow.name: flow for flow in manifest.flows}
    sources: dict[str, list[Rule]] = {}
    for rule in manifest.rules:
        tag = rule.flow
        if function not in rule.targets:
            continue
        if tag is None or tag.starts:  # as `ingress_rules`
            sources.setdefault(ingress, []).append(rule)
            continue
        steps = flows[tag.flow].steps
        followed = steps[steps[tag.step].after[0]].function
        topic = manifest.functions[followed].destinations.on_success
        if topic is not None:
            sources.setdefault(topic, []).append(rule)
    joins = [
        f"{flow.name}.{step.name}"
        for flow in manifest.flows
        for step in flow.steps.values()
        if step.joins and step.function == function
    ]
    if not sources and joins:
        raise ConfigError(
            f"function {function!r} runs as the join {joins[0]} on the results of its steps: "
            "replay those steps' functions instead"
        )
    if not sources:
        raise ConfigError(
            f"no rule targets function {function!r}: a replay would send it nothing;"
            " apply a rule that targets it first"
        )
    return {topic: tuple(rules) for topic, rules in sources.items()}


def selecting_rules(record: Record, plan: Plan, reader: TypedReader) -> tuple[dict[str, Any], list[Rule]]:
    """The record's event (JSON format) and the plan's rules it matches (none: not for this function).

    Decodes as the router does: typed events are read for matching only. Raises InvalidEvent
    when the record is not a CloudEvent the rules can be applied to.
    """
    return matching(record, plan.rules, reader)


def matching(record: Record, rules: Sequence[Rule], reader: TypedReader) -> tuple[dict[str, Any], list[Rule]]:
    """The record's event (JSON format) and which of `rules` it matches, decoded as the router does.

    The data is decoded only when a rule looks at it or reshapes it. Raises InvalidEvent when the
    record is not a CloudEvent the rules can be applied to.
    """
    with_data = needs_data(rules)
    event = from_record(record.key, record.value, record.headers, with_data=with_data)
    if with_data:
        event = reader.read(event)
    doc = to_json_dict(event)
    return doc, matching_rules(doc, rules)


def function_records(
    record: Record, event: Mapping[str, Any], rules: Sequence[Rule], function: str
) -> list[Record]:
    """What the router would write to `function`'s topic alone for `record`, given the `rules` it matched
    (`event` as `matching` returned it): one record per flow running the function on it; none when
    no rule sends it there."""
    return [
        routed_record(record, event, function, by) for target, by in deliveries(rules) if target == function
    ]


def ingress_rules(manifest: Manifest, function: str) -> tuple[Rule, ...]:
    """The rules of `manifest` sending ingress events to `function` (ordinary rules and flow starts),
    in manifest order; none for a function it does not have."""
    return tuple(
        rule
        for rule in manifest.rules
        if function in rule.targets and (rule.flow is None or rule.flow.starts)
    )


def mark(record: Record, replay: str, origin: str) -> Record:
    """The record to produce: the original with the `replayid` and `replayorigin` extensions."""
    return with_extensions(record, {REPLAY_ID: replay, REPLAY_ORIGIN: origin})


# The run --------------------------------------------------------------------------------------------


class Item(Protocol):
    """A record read from the source topic, with its position and timestamp."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def record(self) -> Record: ...


class Sink(Protocol):
    """Where replayed records go (a producer)."""

    def send(self, topic: str, record: Record) -> None:
        """Queue one record for delivery."""
        ...

    def wait(self, seconds: float) -> None:
        """Block up to `seconds`, serving delivery reports."""
        ...


@dataclass(slots=True)
class _PartitionTally:
    start: int
    end: int
    next: int
    scanned: int = 0
    matched: int = 0


class Tally:
    """What a replay did so far; `summary()` is the one-line JSON `bus replay` prints."""

    def __init__(self, plan: Plan, spans: Mapping[int, Span]) -> None:
        self.plan = plan
        self.partitions = {p: _PartitionTally(s.start, s.end, s.start) for p, s in sorted(spans.items())}
        self.scanned = 0
        self.matched = 0
        self.sent = 0
        self.skipped_undecodable = 0
        self.skipped_outside_window = 0
        self.interrupted = False
        self.by_rule: Counter[str] = Counter()
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.undecodable: list[dict[str, Any]] = []

    def scan(self, item: Item) -> None:
        """Count a record read."""
        self.scanned += 1
        partition = self.partitions[item.partition]
        partition.scanned += 1
        partition.next = item.offset + 1

    def skip_undecodable(self, item: Item, exc: InvalidEvent) -> None:
        """Count a record that is not a CloudEvent the rules can be applied to."""
        self.skipped_undecodable += 1
        if len(self.undecodable) < _UNDECODABLE_SAMPLES:
            self.undecodable.append({"partition": item.partition, "offset": item.offset, "reason": str(exc)})

    def match(self, item: Item, rules: Sequence[str]) -> None:
        """Count a record the function's rules select."""
        self.matched += 1
        self.partitions[item.partition].matched += 1
        self.by_rule.update(rules)
        stamp = item.timestamp_ms
        self.first_ms = stamp if self.first_ms is None else min(self.first_ms, stamp)
        self.last_ms = stamp if self.last_ms is None else max(self.last_ms, stamp)

    def summary(self, deliveries: Deliveries | None) -> dict[str, Any]:
        """The replay's figures; `replayed` counts acknowledged records (0 in a dry run)."""
        plan = self.plan
        return {
            "replay_id": plan.replay_id,
            "function": plan.function,
            "source": plan.source,
            "target": plan.target,
            "dry_run": plan.dry_run,
            "from": rfc3339_ms(plan.start_ms),
            "to": None if plan.end_ms is None else rfc3339_ms(plan.end_ms),
            "rules": [rule.name for rule in plan.rules],
            "scanned": self.scanned,
            "matched": self.matched,
            "replayed": deliveries.acknowledged if deliveries else 0,
            "failed": deliveries.failed if deliveries else 0,
            "skipped_undecodable": self.skipped_undecodable,
            "skipped_outside_window": self.skipped_outside_window,
            "interrupted": self.interrupted,
            "first_event_time": None if self.first_ms is None else rfc3339_ms(self.first_ms),
            "last_event_time": None if self.last_ms is None else rfc3339_ms(self.last_ms),
            "matched_by_rule": dict(self.by_rule),
            "partitions": [
                {"partition": p, "start": t.start, "end": t.end, "next": t.next}
                | {"scanned": t.scanned, "matched": t.matched}
                for p, t in self.partitions.items()
            ],
            "undecodable": self.undecodable,
        }


def replay(
    items: Iterable[Item],
    plan: Plan,
    tally: Tally,
    *,
    reader: TypedReader,
    sink: Sink | None,
    bucket: TokenBucket | None = None,
    stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float],
) -> None:
    """Re-drive the selected items to `sink` (None: a dry run), paced by `bucket`, until `stop()`.

    Undecodable records are counted in `tally` and skipped; they never end the replay.
    """
    for item in items:
        if stop():
            break
        tally.scan(item)
        if not plan.contains(item.timestamp_ms):
            tally.skipped_outside_window += 1  # stamped before the start by a producer's clock
            continue
        try:
            event, rules = selecting_rules(item.record, plan, reader)
        except InvalidEvent as exc:
            tally.skip_undecodable(item, exc)
            continue
        if not rules:
            continue
        if sink is not None:
            if bucket is not None and not _paced(bucket, sink, stop, clock):
                break
            origin = f"{plan.source}/{item.partition}/{item.offset}"
            for routed in function_records(item.record, event, rules, plan.function):
                sink.send(plan.target, mark(routed, plan.replay_id, origin))
                tally.sent += 1
        tally.match(item, [rule.name for rule in rules])
    tally.interrupted = stop()


def _paced(bucket: TokenBucket, sink: Sink, stop: Callable[[], bool], clock: Callable[[], float]) -> bool:
    """Wait for the bucket's next token, serving the sink; False when stopped meanwhile."""
    until = clock() + bucket.reserve(clock())
    while (left := until - clock()) > 0:
        if stop():
            return False
        sink.wait(min(left, _PACE_SLICE))
    return not stop()


# `bus replay` -----------------------------------------------------------------------------------------


def command(
    environ: Mapping[str, str],
    *,
    function: str,
    start: str,
    end: str | None,
    rate: str | None,
    dry_run: bool,
    manifest_path: Path | None,
    prefix: str | None,
    out: TextIO = sys.stdout,
) -> int:
    """Run `bus replay` by the applied rules (or those of `manifest_path`); print the summary to `out`
    (a line per source topic).

    Returns 0 when done, 130 when stopped by SIGINT or SIGTERM (after the summary of what was done);
    raises BusError (after the summary, if the replay started) when it cannot be done or a delivery failed.
    """
    now = datetime.now(UTC)
    window_start = parse_time(start, now=now, flag="--from")
    window_end = parse_time(end, now=now, flag="--to") if end is not None else None
    per_second = parse_rate(rate) if rate is not None else None
    parsed = manifest_in_force(environ, manifest_path, prefix)
    settings = load_kafka(environ, prefix=parsed.prefix)
    the_id = replay_id(now, uuid.uuid4().hex[:8])
    plans = [
        plan(
            function=function,
            prefix=parsed.prefix,
            rules=rules,
            functions=parsed.functions,
            start=window_start,
            end=window_end,
            replay_id=the_id,
            dry_run=dry_run,
            source=source,
        )
        for source, rules in replay_sources(parsed, function).items()
    ]
    reader = TypedReader(
        book=load_book(parsed.schemas, Path(parsed.base_dir)),
        store=open_store(settings, environ),
        resolve=False,
        max_bytes=settings.max_record_bytes,
    )
    if not dry_run:
        ensure_topics(settings, function_topics(parsed.prefix, parsed.functions[function]))
    stop = threading.Event()
    bucket = TokenBucket.per_second(per_second) if per_second is not None else None
    with _stopping_on_signals(stop):
        for the_plan in plans:  # one source topic after the other, a summary line each
            interrupted = _replay_one(the_plan, settings, reader, bucket=bucket, stop=stop, out=out)
            if interrupted:
                return 130
    return 0


def _replay_one(
    the_plan: Plan,
    settings: KafkaSettings,
    reader: TypedReader,
    *,
    bucket: TokenBucket | None,
    stop: threading.Event,
    out: TextIO,
) -> bool:
    """Replay one source topic and print its summary; True when interrupted."""
    deliveries: Deliveries | None = None
    with WindowReader(
        settings, the_plan.source, start_ms=the_plan.start_ms, end_ms=the_plan.end_ms
    ) as window:
        tally = Tally(the_plan, window.spans)
        sink = None if the_plan.dry_run else SyncProducer(settings)
        try:
            replay(
                window.records(stop.is_set),
                the_plan,
                tally,
                reader=reader,
                sink=sink,
                bucket=bucket,
                stop=stop.is_set,
                clock=time.monotonic,
            )
        finally:
            deliveries = sink.finish() if sink is not None else None
            print(orjson.dumps(tally.summary(deliveries)).decode(), file=out, flush=True)
    if deliveries is not None and deliveries.failed:
        raise PublishError(
            f"{deliveries.failed} of {tally.sent} replayed events were not acknowledged "
            f"({deliveries.first_error}); run the replay again"
        )
    return tally.interrupted


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM set `stop` instead of interrupting; restored after."""
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

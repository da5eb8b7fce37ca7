"""Timers: the manifest's `schedules`, their ticks, catch-up decisions and fired events (pure).

Every time is a timezone-aware datetime; results are in UTC. The Kafka adapter owns the clock,
leader election and the checkpoint (the scheduled time of the last fired tick) and asks this module
`next_tick` (when to wake), `due` (what to fire) and `fired_event` (what to publish).

Wall clock and daylight saving time: cron fields are wall-clock times in the schedule's zone, and a
schedule's ticks are a strictly increasing sequence of instants. A wall time that happens twice (the
repeated hour when clocks go back) fires once, at its first occurrence; a wall time that does not
exist (the hour skipped when clocks go forward) fires at the first instant after the gap, and all
the skipped times collapse into that one tick. So `30 2 * * *` fires exactly once every day, and
`*/15 * * * *` pauses during the repeated hour instead of firing each wall time twice; a timer that
must follow elapsed time rather than the wall clock is a `rate`, which ignores time zones.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import orjson

from bus import naming
from bus.cron import Cron
from bus.cron import parse as parse_cron
from bus.errors import ConfigError, InvalidEvent, ManifestError
from bus.events import JSON_CONTENT_TYPE, CloudEvent

__all__ = [
    "DEFAULT_GRACE",
    "TIMER_FIRED",
    "Checkpoint",
    "Due",
    "EventTemplate",
    "Schedule",
    "due",
    "fired_event",
    "last_fired",
    "last_tick",
    "next_tick",
    "parse_schedule",
    "timing_digest",
]

Kind = Literal["cron", "rate", "at"]
CatchUp = Literal["none", "latest", "all"]
TIMER_FIRED = "bus.timer.fired"
"""Event type of a schedule that names no `event.type` (SPEC §2)."""
DEFAULT_GRACE = timedelta(seconds=2)
"""How late a tick may be decided and still count as on time."""
_MAX_CATCH_UP_LIMIT = 1_000
"""Most ticks one `catch_up: all` decision may fire, which bounds its cost."""
_COUNT_LIMIT = 1_000
"""Most missed cron ticks counted one by one; beyond it `Due.skipped` is a lower bound."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Fixed forever: changing it changes the id of every timer event, and with it deduplication.
_ID_NAMESPACE = uuid.UUID("0d7f5c1e-3b8a-4e59-9a0c-6f1e2d4b7a38")
_KEYS = {"name", "cron", "rate", "at", "timezone", "event", "catch_up", "catch_up_limit"}


@dataclass(frozen=True, slots=True, kw_only=True)
class EventTemplate:
    """What a schedule publishes on each tick, apart from the timer's own data fields."""

    type: str = TIMER_FIRED
    source: str
    """Default `bus://schedules/<name>`."""
    subject: str
    """Default: the schedule's name (so its ticks share a partition, in order)."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """Payload merged into the event data next to `schedule`, `scheduled_time`, `fired_time`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """One `schedules` entry, validated; exactly one of `cron`, `every`, `at` is set, as `kind` says."""

    name: str
    kind: Kind
    expression: str
    """As written: `0 2 * * *`, `5m`, `2026-12-01T09:00:00`."""
    timezone: str = "UTC"
    """IANA zone of cron fields and of an `at` without offset; rates ignore it."""
    event: EventTemplate
    catch_up: CatchUp = "latest"
    """Missed ticks after downtime: none, the latest one (the default, as a Kubernetes CronJob or
    systemd's Persistent=true: a missed nightly job still runs once, without a burst), or all."""
    catch_up_limit: int = 100
    """Most missed ticks `all` fires, the most recent ones (100: Kubernetes CronJob's bound too)."""
    cron: Cron | None = None
    """The parsed fields of a cron schedule."""
    every: timedelta | None = None
    """Rate period; ticks fall on whole multiples of it since 1970-01-01T00:00Z, on every replica."""
    at: datetime | None = None
    """The one instant of an `at` schedule, in UTC."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Due:
    """What to fire now: the ticks (oldest first), how many missed ticks go unfired, and why."""

    ticks: tuple[datetime, ...] = ()
    skipped: int = 0
    """Missed ticks not fired (counted up to 1,000 for cron; the reason says 'at least')."""
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A schedule's fired history: every tick up to `through` fired, for the timing `digest` names."""

    through: datetime
    digest: str
    """`timing_digest` of the schedule as it was when the checkpoint was made; "" if unknown."""


def parse_schedule(index: int, spec: Any, *, duration: Callable[[Any, str], float]) -> Schedule:
    """Validate `schedules[index]`; `duration` is the manifest's parser (the manifest imports this)."""
    path = f"schedules[{index}]"
    if not isinstance(spec, Mapping):
        raise ManifestError(path, f"must be a mapping, got {type(spec).__name__}")
    for key in spec:
        if key not in _KEYS:
            raise ManifestError(f"{path}.{key}", f"unknown key (known: {', '.join(sorted(_KEYS))})")
    name = spec.get("name")
    if not isinstance(name, str):
        raise ManifestError(f"{path}.name", f"every schedule needs a name, got {name!r}")
    try:
        naming.check_name("schedule", name)
    except ConfigError as exc:
        raise ManifestError(f"{path}.name", str(exc)) from exc
    zone = spec.get("timezone", "UTC")
    _zone(zone, f"{path}.timezone")
    kinds = [k for k in ("cron", "rate", "at") if k in spec]
    if len(kinds) != 1:
        raise ManifestError(path, f"give exactly one of cron, rate or at, got {', '.join(kinds) or 'none'}")
    kind = cast(Kind, kinds[0])
    value = spec[kind]
    timing = _timing(kind, value, zone, f"{path}.{kind}", duration)
    catch_up, limit = _catch_up(spec, path)
    schedule = Schedule(
        name=name,
        kind=kind,
        expression=value.isoformat() if isinstance(value, datetime) else str(value),
        timezone=zone,
        event=_template(name, spec.get("event", {}), f"{path}.event"),
        catch_up=catch_up,
        catch_up_limit=limit,
        **timing,
    )
    try:  # the template must make valid events: find out now, not at 2 a.m.
        fired_event(schedule, _EPOCH, _EPOCH)
    except InvalidEvent as exc:
        raise ManifestError(f"{path}.event.{exc.field}", exc.reason) from exc
    return schedule


def timing_digest(schedule: Schedule) -> str:
    """A digest of which ticks `schedule` has: its kind, normalised timing and time zone.

    The template and the catch-up policy are left out: they do not change which ticks exist, so
    editing them keeps a schedule's history (and its catch-up after downtime).
    """
    if schedule.every is not None:
        timing = f"rate {schedule.every.total_seconds()!r}"  # 1h and 60m are the same ticks
    elif schedule.at is not None:
        timing = f"at {schedule.at.isoformat()}"  # the instant, however it was written
    else:
        timing = f"cron {' '.join(schedule.expression.split())} {schedule.timezone}"
    return hashlib.sha256(timing.encode()).hexdigest()[:16]


def last_fired(schedule: Schedule, checkpoint: Checkpoint | None) -> datetime | None:
    """What `due` resumes from: the checkpoint's time if it was made for this timing, else None.

    A checkpoint of another timing (the schedule was changed, or removed and added again later)
    or none at all is a first run: the schedule starts from now and no stale tick is caught up,
    as EventBridge Scheduler never backfires after an update.
    """
    if checkpoint is None or checkpoint.digest != timing_digest(schedule):
        return None
    return checkpoint.through


def next_tick(schedule: Schedule, after: datetime) -> datetime | None:
    """The first tick strictly after `after`; None when there is none (an `at` that has passed)."""
    after = _utc(after, "after")
    if schedule.every is not None:
        return _EPOCH + (_steps(after, schedule.every) + 1) * schedule.every
    if schedule.at is not None:
        return schedule.at if schedule.at > after else None
    expression, zone = _cron(schedule)
    local = after.astimezone(zone)
    wall = local.replace(tzinfo=None)
    if local.fold:  # the repeated hour's wall times fired on its first pass: resume at its end
        wall = _fold_end(local, zone) - timedelta(microseconds=1)
    candidate = expression.next_after(wall)
    while candidate is not None:
        if (tick := _instant(candidate, zone)) > after:
            return tick
        candidate = expression.next_after(candidate)
    return None


def last_tick(schedule: Schedule, at: datetime) -> datetime | None:
    """The last tick at or before `at`; None when there is none."""
    at = _utc(at, "at")
    if schedule.every is not None:
        return _EPOCH + _steps(at, schedule.every) * schedule.every
    if schedule.at is not None:
        return schedule.at if schedule.at <= at else None
    expression, zone = _cron(schedule)
    local = at.astimezone(zone)
    wall = local.replace(tzinfo=None)
    if local.fold:  # every wall time of the repeated hour already fired, on its first pass
        wall = _fold_end(local, zone) - timedelta(microseconds=1)
    candidate = expression.last_at_or_before(wall)
    while candidate is not None:
        if (tick := _instant(candidate, zone)) <= at:
            return tick
        candidate = expression.last_at_or_before(candidate - timedelta(seconds=1))
    return None


def due(
    schedule: Schedule, last_fired: datetime | None, now: datetime, *, grace: timedelta = DEFAULT_GRACE
) -> Due:
    """The ticks to fire at `now`, given the checkpoint `last_fired`, under the catch-up policy.

    `last_fired` is the scheduled time of the last fired tick, or for a schedule armed but never
    fired, the instant it was armed (ticks after it count as missed). With None, no history is
    caught up: only a tick in (now - grace, now] fires, so a new leader keeps the current tick.
    Missed ticks are those in (last_fired, now]: `none` fires only the newest and only if it is on
    time (within grace), `latest` fires the newest, `all` the newest `catch_up_limit` (the oldest
    are the ones worth least). Cost is bounded: rates count by arithmetic, cron stops counting at
    1,000 ticks, so a week of every-second ticks is decided in milliseconds.
    """
    now = _utc(now, "now")
    latest = last_tick(schedule, now)
    on_time = latest is not None and latest > now - grace
    if last_fired is None:
        if latest is not None and on_time:
            return Due(ticks=(latest,), reason="on time (first run: earlier ticks are not caught up)")
        return Due(reason="no tick due (first run: earlier ticks are not caught up)")
    last_fired = _utc(last_fired, "last_fired")
    if latest is None or latest <= last_fired:
        return Due(reason="no tick due since the last fired one")
    want = schedule.catch_up_limit if schedule.catch_up == "all" else 1
    ticks, missed, exact = _missed(schedule, last_fired, latest, want)
    if schedule.catch_up == "none" and not on_time:
        ticks = []
    elif schedule.catch_up != "all":
        ticks = ticks[:1]
    skipped = missed - len(ticks)
    count = f"{missed}" if exact else f"at least {missed}"
    if not ticks:
        reason = f"skipped {count} missed tick(s) (catch_up: none)"
    elif skipped == 0:
        reason = "on time" if missed == 1 and on_time else f"caught up {missed} missed tick(s)"
    elif schedule.catch_up == "none":
        reason = f"on time; skipped {skipped} earlier of {count} missed tick(s) (catch_up: none)"
    else:
        reason = f"fired the latest {len(ticks)} of {count} missed tick(s) (catch_up: {schedule.catch_up})"
    return Due(ticks=tuple(reversed(ticks)), skipped=skipped, reason=reason)


def fired_event(schedule: Schedule, scheduled_time: datetime, fired_time: datetime) -> CloudEvent:
    """The event one tick publishes; a tick fired again (by a new leader) gets the same id.

    A `bus.timer.fired` event carries `{schedule, scheduled_time, fired_time, payload}` (RFC 3339,
    UTC; its platform Avro schema). An event of the template's own type carries the template's
    data as written, as EventBridge Scheduler delivers its input, with the timing in the extensions
    `schedule` and `scheduledtime`. The id is a UUID 5 of the schedule's name and scheduled time
    only, so it survives a change of prefix, type or fired time.
    """
    scheduled = _rfc3339(_utc(scheduled_time, "scheduled_time"))
    fired = _rfc3339(_utc(fired_time, "fired_time"))
    template = schedule.event
    if template.type == TIMER_FIRED:
        payload = dict(template.data) or None
        data: Any = {
            "schedule": schedule.name,
            "scheduled_time": scheduled,
            "fired_time": fired,
            "payload": payload,
        }
        extensions: dict[str, str] = {}
    else:
        data = dict(template.data)
        extensions = {"schedule": schedule.name, "scheduledtime": scheduled}
    return CloudEvent.create(
        id=str(uuid.uuid5(_ID_NAMESPACE, orjson.dumps([schedule.name, scheduled]).decode())),
        source=template.source,
        type=template.type,
        time=fired,
        subject=template.subject,
        datacontenttype=JSON_CONTENT_TYPE,
        extensions=extensions,
        data=data,
    )


def _timing(
    kind: Kind, value: Any, zone: str, path: str, duration: Callable[[Any, str], float]
) -> dict[str, Any]:
    """The parsed `cron`, `every` or `at` field of a Schedule."""
    if kind == "cron":
        if not isinstance(value, str):
            raise ManifestError(path, f"must be a cron expression like '0 2 * * *', got {value!r}")
        return {"cron": parse_cron(value, path)}
    if kind == "rate":
        seconds = duration(value, path)
        if seconds < 1:
            raise ManifestError(path, f"a rate must be at least 1s, got {value!r}")
        return {"every": timedelta(seconds=seconds)}
    return {"at": _at(value, zone, path)}


def _catch_up(spec: Mapping[str, Any], path: str) -> tuple[CatchUp, int]:
    catch_up = spec.get("catch_up", "latest")
    if catch_up not in ("none", "latest", "all"):
        raise ManifestError(f"{path}.catch_up", f"must be none, latest or all, got {catch_up!r}")
    limit = spec.get("catch_up_limit", 100)
    if "catch_up_limit" in spec and catch_up != "all":
        raise ManifestError(f"{path}.catch_up_limit", "applies only to catch_up: all; remove it or set that")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_CATCH_UP_LIMIT:
        raise ManifestError(
            f"{path}.catch_up_limit", f"must be an integer from 1 to {_MAX_CATCH_UP_LIMIT}, got {limit!r}"
        )
    return cast(CatchUp, catch_up), limit


def _missed(
    schedule: Schedule, last_fired: datetime, latest: datetime, want: int
) -> tuple[list[datetime], int, bool]:
    """The newest `want` ticks in (last_fired, latest], newest first; how many there are; if exact."""
    if schedule.every is not None:  # arithmetic: exact and cheap at any distance
        missed = _steps(latest, schedule.every) - _steps(last_fired, schedule.every)
        return [latest - i * schedule.every for i in range(min(want, missed))], missed, True
    ticks: list[datetime] = []
    count, tick = 0, latest
    while True:
        if len(ticks) < want:
            ticks.append(tick)
        count += 1
        previous = last_tick(schedule, tick - timedelta(microseconds=1))
        if previous is None or previous <= last_fired:
            return ticks, count, True
        if count == _COUNT_LIMIT:  # a week of every-second ticks is 604,800: stop counting
            return ticks, count, False
        tick = previous


def _steps(moment: datetime, every: timedelta) -> int:
    """Whole periods from the epoch to `moment` (floored)."""
    return (moment - _EPOCH) // every


def _cron(schedule: Schedule) -> tuple[Cron, ZoneInfo]:
    if schedule.cron is None:
        raise ValueError(f"schedule {schedule.name!r} has none of cron, every and at set")
    return schedule.cron, ZoneInfo(schedule.timezone)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC tick of a wall time: its first occurrence in a fold, the end of the gap in a gap."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)  # the offset before a transition
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)  # the offset after it
    if first <= second:  # one occurrence, or two (a fold) of which `first` is the earlier
        return first
    return _transition(zone, second, first)  # a gap: the transition lies between the two readings


def _fold_end(local: datetime, zone: ZoneInfo) -> datetime:
    """The wall time at which the repeated hour that `local` (its second pass) is in ends."""
    before = local.replace(fold=0).utcoffset()
    after = local.utcoffset()
    assert before is not None  # a ZoneInfo always has an offset
    assert after is not None
    moment = local.astimezone(UTC)
    change = _transition(zone, moment - (before - after), moment)
    return (change + before).replace(tzinfo=None)


def _transition(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The first whole second in (low, high] with the UTC offset `high` has (zone offsets change once)."""
    target = high.astimezone(zone).utcoffset()
    lo, hi = int(low.timestamp()), int(high.timestamp())  # offset(lo) differs, offset(hi) matches
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _at(value: Any, zone: str, path: str) -> datetime:
    """The instant of an `at`: ISO 8601 with an offset, or wall time in the schedule's zone."""
    moment: datetime | None = None
    if isinstance(value, datetime):  # YAML reads an unquoted timestamp itself
        moment = value
    elif isinstance(value, str) and ("T" in value.upper() or " " in value.strip()):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            moment = None
    if moment is None:
        got = "a date without a time" if isinstance(value, date) else repr(value)
        raise ManifestError(path, f"must be a date and time like 2026-12-01T09:00:00, got {got}")
    if moment.tzinfo is not None:
        return moment.astimezone(UTC)
    return _instant(moment, ZoneInfo(zone))


def _template(name: str, spec: Any, path: str) -> EventTemplate:
    if not isinstance(spec, Mapping):
        raise ManifestError(path, f"must be a mapping like {{type: report.requested}}, got {spec!r}")
    for key in spec:
        if key not in ("type", "source", "subject", "data"):
            raise ManifestError(f"{path}.{key}", "unknown key (known: data, source, subject, type)")
    data = spec.get("data", {})
    if not isinstance(data, Mapping):
        raise ManifestError(f"{path}.data", f"must be a mapping (the payload's fields), got {data!r}")
    try:  # one JSON form, as every consumer will see it (YAML dates become text)
        payload = orjson.loads(orjson.dumps(data))
    except TypeError as exc:
        raise ManifestError(f"{path}.data", f"must be JSON data ({exc})") from exc
    return EventTemplate(
        type=spec.get("type", TIMER_FIRED),
        source=spec.get("source", f"bus://schedules/{name}"),
        subject=spec.get("subject", name),
        data=payload,
    )


def _zone(name: Any, path: str) -> ZoneInfo:
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            pass
    raise ManifestError(path, f"unknown time zone {name!r}; use an IANA name like Europe/Berlin or UTC")


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")

"""Timers: cron, rate and at schedules, daylight saving time, catch-up and fired events (bus.schedules)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.errors import ManifestError
from bus.manifest import parse, parse_duration
from bus.schedules import (
    TIMER_FIRED,
    Checkpoint,
    Schedule,
    due,
    fired_event,
    last_fired,
    last_tick,
    next_tick,
    parse_schedule,
    timing_digest,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
# 2026 transitions: Berlin 29 March 01:00Z (02:00 CET -> 03:00 CEST), 25 October 01:00Z (03:00 CEST ->
# 02:00 CET); New York 8 March 07:00Z (02:00 EST -> 03:00 EDT), 1 November 06:00Z (02:00 EDT -> 01:00 EST).


def schedule(**fields: Any) -> Schedule:
    """A schedule named `tick` with `fields`, parsed as the manifest would."""
    return parse_schedule(0, {"name": "tick", **fields}, duration=parse_duration)


def at(text: str) -> datetime:
    """An aware datetime from ISO text; no offset means UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ticks(timer: Schedule, start: str, count: int) -> list[str]:
    """The next `count` ticks after `start`, as UTC text."""
    out: list[str] = []
    moment: datetime | None = at(start)
    for _ in range(count):
        assert moment is not None
        moment = next_tick(timer, moment)
        assert moment is not None
        out.append(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out


def error_of(**fields: Any) -> ManifestError:
    """The ManifestError a manifest whose third schedule has `fields` raises."""
    others = [{"name": "a", "rate": "1m"}, {"name": "b", "rate": "1m"}]
    with pytest.raises(ManifestError) as caught:
        parse({"schedules": [*others, {"name": "c", **fields}]})
    return caught.value


# --- cron fields -----------------------------------------------------------------------------


def test_five_fields_fire_on_the_minute_in_utc() -> None:
    """`0 2 * * *` fires every day at 02:00:00 UTC when no timezone is given."""
    assert ticks(schedule(cron="0 2 * * *"), "2026-05-01T02:00:00", 2) == [
        "2026-05-02T02:00:00Z",
        "2026-05-03T02:00:00Z",
    ]


def test_six_fields_put_seconds_first_and_can_fire_every_second() -> None:
    """`* * * * * *` fires on every whole second, strictly after the given instant."""
    assert ticks(schedule(cron="* * * * * *"), "2026-05-01T23:59:58.5", 3) == [
        "2026-05-01T23:59:59Z",
        "2026-05-02T00:00:00Z",
        "2026-05-02T00:00:01Z",
    ]


@pytest.mark.parametrize(
    ("minute", "expected"),
    [
        ("*/15", [0, 15, 30, 45]),
        ("1-30/5", [1, 6, 11, 16, 21, 26]),
        ("50/4", [50, 54, 58]),
        ("7,3,59", [3, 7, 59]),
        ("10-12,40", [10, 11, 12, 40]),
    ],
)
def test_minute_steps_ranges_and_lists(minute: str, expected: list[int]) -> None:
    """Steps, ranges, `a/n` (a to the end) and lists select exactly their minutes."""
    hour = ticks(schedule(cron=f"{minute} * * * *"), "2026-05-01T09:59:59", len(expected))
    assert [int(t[14:16]) for t in hour] == expected


def test_month_and_weekday_names_match_numbers_in_any_case() -> None:
    """Names (JAN, mon) mean the same as their numbers, in ranges too."""
    named = schedule(cron="0 12 * jan,Jul MON-fri")
    numbered = schedule(cron="0 12 * 1,7 1-5")
    assert ticks(named, "2026-01-01T00:00:00", 30) == ticks(numbered, "2026-01-01T00:00:00", 30)
    assert ticks(named, "2026-01-30T13:00:00", 1) == ["2026-07-01T12:00:00Z"]  # a Wednesday


def test_sunday_is_both_0_and_7() -> None:
    """Day-of-week 0 and 7 both mean Sunday."""
    assert ticks(schedule(cron="0 0 * * 0"), "2026-05-01T00:00:00", 2) == ticks(
        schedule(cron="0 0 * * 7"), "2026-05-01T00:00:00", 2
    )
    assert ticks(schedule(cron="0 0 * * 5-7"), "2026-05-01T00:00:00", 3) == [  # 1 May 2026 is a Friday
        "2026-05-02T00:00:00Z",
        "2026-05-03T00:00:00Z",
        "2026-05-08T00:00:00Z",
    ]


def test_restricted_day_of_month_and_weekday_match_either() -> None:
    """With both day fields restricted, a day matches on either (Vixie): the 13th or any Friday."""
    assert ticks(schedule(cron="0 0 13 * FRI"), "2026-05-01T00:00:00", 4) == [
        "2026-05-08T00:00:00Z",
        "2026-05-13T00:00:00Z",
        "2026-05-15T00:00:00Z",
        "2026-05-22T00:00:00Z",
    ]


def test_a_day_field_starting_with_a_star_makes_both_required() -> None:
    """`*/2` in day-of-month still counts as unrestricted, so odd days AND Fridays are required."""
    assert ticks(schedule(cron="0 0 */2 * FRI"), "2026-05-01T00:00:00", 2) == [
        "2026-05-15T00:00:00Z",
        "2026-05-29T00:00:00Z",
    ]


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@hourly", "2026-05-01T10:00:00Z"),
        ("@daily", "2026-05-02T00:00:00Z"),
        ("@midnight", "2026-05-02T00:00:00Z"),
        ("@weekly", "2026-05-03T00:00:00Z"),
        ("@monthly", "2026-06-01T00:00:00Z"),
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
    ],
)
def test_macros_stand_for_their_expressions(macro: str, expected: str) -> None:
    """@hourly, @daily, @weekly, @monthly and @yearly fire at the start of their period."""
    assert ticks(schedule(cron=macro), "2026-05-01T09:30:00", 1) == [expected]


def test_29_february_fires_only_in_leap_years() -> None:
    """A leap day schedule waits for the next leap year."""
    assert ticks(schedule(cron="0 0 29 2 *"), "2026-01-01T00:00:00", 2) == [
        "2028-02-29T00:00:00Z",
        "2032-02-29T00:00:00Z",
    ]


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
        ("60 * * * * *", "second 60 is out of range 0-59"),
        ("0 0 * FOO *", "month 'FOO' is not a number or a name like JAN"),
        ("0 0 * * funday", "day-of-week 'funday' is not a number or a name like SUN"),
        ("x * * * *", "minute 'x' is not a number"),
        ("1,,2 * * * *", "minute '' is not a number"),
        ("*/0 * * * *", "minute step '0' in '*/0' must be an integer >= 1"),
        ("30-10 * * * *", "minute range '30-10' runs backwards; write it low-high"),
        ("* * *", "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first"),
        ("* * * * * * *", "got 7"),
        ("0 0 30 2 *", "day-of-month '30' never occurs in month '2', so it would never fire"),
        ("@reboot", "unknown macro '@reboot'"),
    ],
)
def test_invalid_cron_names_the_field_and_the_problem(expression: str, reason: str) -> None:
    """A bad cron expression is refused at `schedules[i].cron`, saying which field is wrong and how."""
    error = error_of(cron=expression)
    assert error.path == "schedules[2].cron"
    assert reason in error.reason


def test_cron_must_be_text() -> None:
    """A cron that YAML read as a number is refused with an example."""
    assert "like '0 2 * * *'" in error_of(cron=5).reason


# --- daylight saving time --------------------------------------------------------------------


def test_time_in_the_spring_gap_fires_once_when_the_gap_ends_in_berlin() -> None:
    """02:30 does not exist on 29 March in Berlin: the daily tick fires at 03:00 CEST instead."""
    assert ticks(schedule(cron="30 2 * * *", timezone=BERLIN), "2026-03-27T12:00:00", 3) == [
        "2026-03-28T01:30:00Z",  # 02:30 CET
        "2026-03-29T01:00:00Z",  # 03:00 CEST, the first instant after the gap
        "2026-03-30T00:30:00Z",  # 02:30 CEST
    ]


def test_time_in_the_autumn_fold_fires_once_at_its_first_occurrence_in_berlin() -> None:
    """02:30 happens twice on 25 October in Berlin: the daily tick fires at the first (CEST) only."""
    assert ticks(schedule(cron="30 2 * * *", timezone=BERLIN), "2026-10-24T12:00:00", 2) == [
        "2026-10-25T00:30:00Z",  # 02:30 CEST
        "2026-10-26T01:30:00Z",  # 02:30 CET, the next day
    ]


def test_frequent_cron_collapses_the_spring_gap_into_one_tick() -> None:
    """Every quarter hour in Berlin: the skipped 02:xx times and 03:00 are one tick at the transition."""
    assert ticks(schedule(cron="*/15 * * * *", timezone=BERLIN), "2026-03-29T00:20:00", 4) == [
        "2026-03-29T00:30:00Z",  # 01:30 CET
        "2026-03-29T00:45:00Z",  # 01:45 CET
        "2026-03-29T01:00:00Z",  # 03:00 CEST (02:00-02:45 do not exist)
        "2026-03-29T01:15:00Z",  # 03:15 CEST
    ]


def test_frequent_cron_pauses_during_the_repeated_hour() -> None:
    """Every quarter hour in Berlin: the repeated 02:xx wall times do not fire a second time."""
    assert ticks(schedule(cron="*/15 * * * *", timezone=BERLIN), "2026-10-25T00:20:00", 4) == [
        "2026-10-25T00:30:00Z",  # 02:30 CEST
        "2026-10-25T00:45:00Z",  # 02:45 CEST
        "2026-10-25T02:00:00Z",  # 03:00 CET: 02:00-02:45 CET already fired as CEST
        "2026-10-25T02:15:00Z",
    ]


def test_new_york_gap_and_fold_follow_the_same_rule() -> None:
    """New York's skipped 02:30 fires at 03:00 EDT; its repeated 01:30 fires once, in EDT."""
    assert ticks(schedule(cron="30 2 * * *", timezone=NEW_YORK), "2026-03-07T12:00:00", 2) == [
        "2026-03-08T07:00:00Z",
        "2026-03-09T06:30:00Z",
    ]
    assert ticks(schedule(cron="30 1 * * *", timezone=NEW_YORK), "2026-10-31T12:00:00", 2) == [
        "2026-11-01T05:30:00Z",
        "2026-11-02T06:30:00Z",
    ]


def test_ticks_seen_from_inside_the_repeated_hour() -> None:
    """During the second pass of the repeated hour, the next tick is after it and the last one before."""
    timer = schedule(cron="*/15 * * * *", timezone=BERLIN)
    moment = at("2026-10-25T01:10:00")  # 02:10 CET, the second 02:10 of the night
    assert next_tick(timer, moment) == at("2026-10-25T02:00:00")
    assert last_tick(timer, moment) == at("2026-10-25T00:45:00")


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        (BERLIN, "2026-03-29", 23 * 60),  # 02:00-02:59 do not exist: they collapse into the 03:00 tick
        (BERLIN, "2026-10-25", 24 * 60),  # 25 real hours, each wall minute fires once
        (NEW_YORK, "2026-03-08", 23 * 60),
        (NEW_YORK, "2026-11-01", 24 * 60),
    ],
)
def test_every_minute_fires_once_per_wall_minute_on_transition_days(
    zone: str, day: str, expected: int
) -> None:
    """On a transition day an every-minute cron fires once per wall minute that exists, never twice."""
    timer = schedule(cron="* * * * *", timezone=zone)
    local = ZoneInfo(zone)
    start = datetime.fromisoformat(day).replace(tzinfo=local)
    end = (datetime.fromisoformat(day) + timedelta(days=1)).replace(tzinfo=local)
    fired: list[datetime] = []
    moment = last_tick(timer, start)
    assert moment == start
    while moment is not None and moment < end:
        fired.append(moment)
        moment = next_tick(timer, moment)
    assert len(fired) == expected
    assert fired == sorted(set(fired))


CRONS = ["* * * * * *", "*/7 * * * *", "30 2 * * *", "0,30 1-3 * * *", "15 2 29 3 *", "0 0 * * MON"]


TRANSITIONS = [  # Berlin, New York and Lord Howe (a 30-minute shift) in 2026
    at(t)
    for t in (
        "2026-03-29T01:00",
        "2026-10-25T01:00",
        "2026-03-08T07:00",
        "2026-11-01T06:00",
        "2026-04-04T15:00",
        "2026-10-03T15:30",
    )
]
HOUR_US = 3600 * 1_000_000


@settings(max_examples=400, deadline=None, database=None)
@given(
    expression=st.sampled_from(CRONS),
    zone=st.sampled_from([BERLIN, NEW_YORK, "UTC", "Australia/Lord_Howe"]),
    moment=st.one_of(
        st.integers(min_value=0, max_value=366 * 24 * HOUR_US).map(
            lambda us: at("2026-01-01T00:00:00") + timedelta(microseconds=us)
        ),
        st.tuples(
            st.sampled_from(TRANSITIONS), st.integers(min_value=-3 * HOUR_US, max_value=3 * HOUR_US)
        ).map(lambda pair: pair[0] + timedelta(microseconds=pair[1])),
    ),
)
def test_next_and_last_tick_agree_around_any_instant(expression: str, zone: str, moment: datetime) -> None:
    """For any instant t, near a transition or not: last_tick(t) <= t < next_tick(t), nothing between."""
    timer = schedule(cron=expression, timezone=zone)
    before, after = last_tick(timer, moment), next_tick(timer, moment)
    assert before is not None
    assert after is not None
    assert before <= moment < after
    assert next_tick(timer, before) == after
    assert last_tick(timer, after) == after
    assert last_tick(timer, after - timedelta(microseconds=1)) == before


# --- rate and at -----------------------------------------------------------------------------


def test_rate_ticks_are_multiples_of_the_period_since_the_epoch() -> None:
    """`rate: 5m` fires on every fifth minute of the clock, whatever instant a replica asks from."""
    timer = schedule(rate="5m")
    assert next_tick(timer, at("2026-05-01T10:02:30")) == at("2026-05-01T10:05:00")
    assert next_tick(timer, at("2026-05-01T10:04:59.999")) == at("2026-05-01T10:05:00")
    assert next_tick(timer, at("2026-05-01T10:05:00")) == at("2026-05-01T10:10:00")
    assert last_tick(timer, at("2026-05-01T10:05:00")) == at("2026-05-01T10:05:00")


def test_rate_of_an_odd_period_is_anchored_at_the_epoch_and_ignores_time_zones() -> None:
    """`rate: 7m` ticks are whole multiples of 7 minutes since 1970, the same in any zone."""
    epoch = at("1970-01-01T00:00:00")
    tick = next_tick(schedule(rate="7m", timezone=BERLIN), at("2026-10-25T00:59:00"))
    assert tick is not None
    assert (tick - epoch) % timedelta(minutes=7) == timedelta(0)
    assert tick == next_tick(schedule(rate="7m"), at("2026-10-25T00:59:00"))


@pytest.mark.parametrize(
    ("value", "reason"), [("500ms", "at least 1s"), ("0s", "at least 1s"), ("soon", "30s")]
)
def test_rate_must_be_a_duration_of_at_least_a_second(value: str, reason: str) -> None:
    """A rate shorter than a second, or not a duration, is refused at its path."""
    error = error_of(rate=value)
    assert error.path == "schedules[2].rate"
    assert reason in error.reason


def test_at_without_offset_is_wall_time_in_the_schedule_zone() -> None:
    """`at: 2026-12-01T09:00:00` in Berlin fires once, at 08:00 UTC, and never again."""
    timer = schedule(at="2026-12-01T09:00:00", timezone=BERLIN)
    assert timer.at == at("2026-12-01T08:00:00")
    assert next_tick(timer, at("2026-11-30T00:00:00")) == at("2026-12-01T08:00:00")
    assert next_tick(timer, at("2026-12-01T08:00:00")) is None
    assert last_tick(timer, at("2026-12-01T07:59:59")) is None


def test_at_with_an_offset_or_as_yaml_read_it() -> None:
    """An offset in `at` wins over the zone; YAML's own datetimes (naive or aware) are accepted."""
    assert schedule(at="2026-12-01T09:00:00+01:00", timezone=NEW_YORK).at == at("2026-12-01T08:00:00")
    assert schedule(at="2026-12-01T09:00:00Z").at == at("2026-12-01T09:00:00")
    assert schedule(at=datetime(2026, 12, 1, 9), timezone=BERLIN).at == at("2026-12-01T08:00:00")
    aware = parse({"schedules": [{"name": "x", "at": at("2026-12-01T09:00:00")}]}).schedules[0]
    assert (aware.at, aware.expression) == (at("2026-12-01T09:00:00"), "2026-12-01T09:00:00+00:00")


def test_at_in_the_spring_gap_fires_when_the_gap_ends() -> None:
    """An `at` wall time that does not exist fires at the first instant after the gap."""
    assert schedule(at="2026-03-29T02:30:00", timezone=BERLIN).at == at("2026-03-29T01:00:00")


@pytest.mark.parametrize("value", ["2026-12-01", "tomorrow", "2026-13-01T09:00:00", 5, None])
def test_at_needs_a_date_and_a_time(value: object) -> None:
    """A date alone, or anything not ISO 8601, is refused with an example."""
    error = error_of(at=value)
    assert error.path == "schedules[2].at"
    assert "like 2026-12-01T09:00:00" in error.reason


def test_a_date_yaml_read_is_refused_as_a_date_without_a_time() -> None:
    """YAML turns `at: 2026-12-01` into a date; the message says the time is missing."""
    assert "a date without a time" in error_of(at=datetime(2026, 12, 1).date()).reason


# --- catch-up --------------------------------------------------------------------------------

NOW = at("2026-05-01T12:00:00.400")


def test_first_run_fires_only_the_tick_due_now() -> None:
    """With no checkpoint, a tick within the grace period fires and history is not caught up."""
    timer = schedule(cron="0 12 * * *", catch_up="all")
    assert due(timer, None, NOW).ticks == (at("2026-05-01T12:00:00"),)
    late = due(timer, None, at("2026-05-01T12:00:05"))
    assert (late.ticks, late.skipped) == ((), 0)
    assert "first run" in late.reason


def test_grace_is_a_parameter() -> None:
    """A wider grace lets a late first leader still fire the current tick."""
    timer = schedule(cron="0 12 * * *")
    assert due(timer, None, at("2026-05-01T12:00:05"), grace=timedelta(seconds=10)).ticks == (
        at("2026-05-01T12:00:00"),
    )


def test_nothing_is_due_when_the_last_tick_has_fired() -> None:
    """A checkpoint at the latest tick (or ahead of now) leaves nothing to fire."""
    timer = schedule(cron="0 12 * * *")
    assert due(timer, at("2026-05-01T12:00:00"), NOW).ticks == ()
    assert due(timer, at("2026-05-02T12:00:00"), NOW).ticks == ()


def test_an_on_time_tick_fires_under_every_policy() -> None:
    """The tick that just came due fires whatever the catch-up policy, reported as on time."""
    for policy in ("none", "latest", "all"):
        decision = due(schedule(cron="0 12 * * *", catch_up=policy), at("2026-04-30T12:00:00"), NOW)
        assert (decision.ticks, decision.skipped, decision.reason) == (
            (at("2026-05-01T12:00:00"),),
            0,
            "on time",
        )


def test_catch_up_none_skips_missed_ticks() -> None:
    """Under `none`, ticks missed during downtime are skipped and counted; only an on-time one fires."""
    timer = schedule(cron="0 * * * *", catch_up="none")
    late = due(timer, at("2026-05-01T08:00:00"), at("2026-05-01T12:30:00"))
    assert (late.ticks, late.skipped) == ((), 4)
    assert late.reason == "skipped 4 missed tick(s) (catch_up: none)"
    on_time = due(timer, at("2026-05-01T08:00:00"), NOW)
    assert (on_time.ticks, on_time.skipped) == ((at("2026-05-01T12:00:00"),), 3)


def test_catch_up_latest_fires_the_most_recent_missed_tick() -> None:
    """Under `latest` (the default), one missed tick fires, the newest, and the rest are skipped."""
    timer = schedule(cron="0 * * * *")
    decision = due(timer, at("2026-05-01T08:00:00"), at("2026-05-01T12:30:00"))
    assert (decision.ticks, decision.skipped) == ((at("2026-05-01T12:00:00"),), 3)
    assert decision.reason == "fired the latest 1 of 4 missed tick(s) (catch_up: latest)"


def test_catch_up_all_fires_every_missed_tick_oldest_first() -> None:
    """Under `all`, every missed tick fires, in order."""
    timer = schedule(cron="0 * * * *", catch_up="all")
    decision = due(timer, at("2026-05-01T09:00:00"), at("2026-05-01T12:30:00"))
    assert decision.ticks == (at("2026-05-01T10:00:00"), at("2026-05-01T11:00:00"), at("2026-05-01T12:00:00"))
    assert (decision.skipped, decision.reason) == (0, "caught up 3 missed tick(s)")


def test_catch_up_all_fires_only_the_most_recent_limit() -> None:
    """`catch_up_limit` bounds `all` to the newest ticks; the older ones are skipped."""
    timer = schedule(cron="0 * * * *", catch_up="all", catch_up_limit=2)
    decision = due(timer, at("2026-05-01T08:00:00"), at("2026-05-01T12:30:00"))
    assert decision.ticks == (at("2026-05-01T11:00:00"), at("2026-05-01T12:00:00"))
    assert decision.skipped == 2
    assert decision.reason == "fired the latest 2 of 4 missed tick(s) (catch_up: all)"


def test_an_armed_instant_stands_in_for_a_checkpoint() -> None:
    """Passing the instant a schedule was armed as `last_fired` catches up ticks missed since then."""
    timer = schedule(at="2026-05-01T06:00:00")
    assert due(timer, at("2026-05-01T05:00:00"), NOW).ticks == (at("2026-05-01T06:00:00"),)
    assert due(timer, None, NOW).ticks == ()


def test_a_week_of_every_second_ticks_is_decided_quickly() -> None:
    """After a week down, an every-second cron is decided in well under a second under every policy."""
    week_ago = NOW - timedelta(days=7)
    started = time.perf_counter()
    decisions = {
        policy: due(
            schedule(
                cron="* * * * * *", catch_up=policy, **({"catch_up_limit": 100} if policy == "all" else {})
            ),
            week_ago,
            NOW,
        )
        for policy in ("none", "latest", "all")
    }
    assert time.perf_counter() - started < 0.5
    assert decisions["none"].ticks == (at("2026-05-01T12:00:00"),)
    assert decisions["latest"].ticks == (at("2026-05-01T12:00:00"),)
    assert len(decisions["all"].ticks) == 100
    assert decisions["all"].ticks[-1] == at("2026-05-01T12:00:00")
    assert all("at least" in d.reason and d.skipped >= 900 for d in decisions.values())


def test_missed_rate_ticks_are_counted_exactly_at_any_distance() -> None:
    """Rate schedules count missed ticks by arithmetic, so a year of seconds is exact and instant."""
    timer = schedule(rate="1s", catch_up="all", catch_up_limit=3)
    decision = due(timer, NOW - timedelta(days=365), NOW)
    assert decision.ticks == tuple(at("2026-05-01T12:00:00") - timedelta(seconds=s) for s in (2, 1, 0))
    assert decision.skipped == 365 * 86400 - 3


def test_naive_datetimes_are_refused() -> None:
    """Times without a zone are a programming error, not a guess."""
    with pytest.raises(ValueError, match="timezone-aware"):
        next_tick(schedule(rate="1m"), datetime(2026, 5, 1))


# --- fired events ----------------------------------------------------------------------------


def test_an_event_of_its_own_type_carries_the_data_as_written_and_the_timing_in_extensions() -> None:
    """A template type gets the template's data verbatim; `schedule` and `scheduledtime` say which tick."""
    timer = schedule(cron="0 2 * * *", event={"type": "report.requested", "data": {"kind": "daily"}})
    event = fired_event(timer, at("2026-05-01T02:00:00"), at("2026-05-01T02:00:00.250"))
    assert (event.type, event.source, event.subject) == ("report.requested", "bus://schedules/tick", "tick")
    assert event.time == "2026-05-01T02:00:00.250000Z"
    assert event.datacontenttype == "application/json"
    assert event.data == {"kind": "daily"}
    assert event.extensions == {"schedule": "tick", "scheduledtime": "2026-05-01T02:00:00Z"}


def test_fired_event_defaults_to_bus_timer_fired_with_its_platform_shape() -> None:
    """Without a type, the event is `bus.timer.fired`: the timer fields and the payload under `payload`."""
    event = fired_event(schedule(rate="1m"), at("2026-05-01T02:00:00"), at("2026-05-01T02:00:01"))
    assert event.type == TIMER_FIRED == "bus.timer.fired"
    assert event.data == {
        "schedule": "tick",
        "scheduled_time": "2026-05-01T02:00:00Z",
        "fired_time": "2026-05-01T02:00:01Z",
        "payload": None,
    }
    with_payload = schedule(rate="1m", event={"data": {"kind": "daily"}})
    assert fired_event(with_payload, at("2026-05-01T02:00:00"), at("2026-05-01T02:00:00")).data[
        "payload"
    ] == {"kind": "daily"}


def test_template_source_and_subject_override_the_defaults() -> None:
    """`event.source` and `event.subject` replace `bus://schedules/<name>` and the name."""
    timer = schedule(rate="1m", event={"source": "urn:reports", "subject": "daily"})
    event = fired_event(timer, at("2026-05-01T02:00:00"), at("2026-05-01T02:00:00"))
    assert (event.source, event.subject) == ("urn:reports", "daily")


def test_a_tick_fired_twice_gets_the_same_id() -> None:
    """The id depends on the schedule name and scheduled time only, so a re-fired tick deduplicates."""
    timer = schedule(cron="0 2 * * *")
    tick = at("2026-05-01T02:00:00")
    first = fired_event(timer, tick, tick)
    again = fired_event(timer, tick.astimezone(ZoneInfo(BERLIN)), tick + timedelta(seconds=30))
    assert first.id == again.id
    assert uuid.UUID(first.id).version == 5
    assert fired_event(timer, tick + timedelta(days=1), tick).id != first.id
    other = parse_schedule(1, {"name": "other", "cron": "0 2 * * *"}, duration=parse_duration)
    assert fired_event(other, tick, tick).id != first.id


# --- the manifest's schedules ----------------------------------------------------------------


def test_defaults_of_a_schedule() -> None:
    """A schedule gets zone UTC, catch-up `latest` with a limit of 100, and the default event."""
    timer = schedule(cron="0 2 * * *")
    assert (timer.timezone, timer.catch_up, timer.catch_up_limit) == ("UTC", "latest", 100)
    assert (timer.event.type, timer.event.source, timer.event.subject) == (
        TIMER_FIRED,
        "bus://schedules/tick",
        "tick",
    )


@pytest.mark.parametrize(
    ("fields", "path", "reason"),
    [
        ({}, "schedules[2]", "give exactly one of cron, rate or at, got none"),
        ({"cron": "* * * * *", "rate": "1m"}, "schedules[2]", "got cron, rate"),
        (
            {"rate": "1m", "timezone": "Mars/Olympus"},
            "schedules[2].timezone",
            "unknown time zone 'Mars/Olympus'",
        ),
        ({"rate": "1m", "timezone": 1}, "schedules[2].timezone", "like Europe/Berlin"),
        ({"rate": "1m", "catch_up": "some"}, "schedules[2].catch_up", "none, latest or all"),
        ({"rate": "1m", "catch_up_limit": 5}, "schedules[2].catch_up_limit", "only to catch_up: all"),
        ({"rate": "1m", "catch_up": "all", "catch_up_limit": 0}, "schedules[2].catch_up_limit", "from 1 to"),
        ({"rate": "1m", "every": "1m"}, "schedules[2].every", "unknown key"),
        ({"rate": "1m", "event": "report"}, "schedules[2].event", "must be a mapping"),
        ({"rate": "1m", "event": {"kind": "x"}}, "schedules[2].event.kind", "unknown key"),
        ({"rate": "1m", "event": {"type": 5}}, "schedules[2].event.type", "non-empty string"),
        ({"rate": "1m", "event": {"data": [1]}}, "schedules[2].event.data", "must be a mapping"),
        ({"rate": "1m", "event": {"data": {1: "x"}}}, "schedules[2].event.data", "must be JSON data"),
    ],
)
def test_schedule_errors_name_the_path_and_the_fix(fields: dict[str, Any], path: str, reason: str) -> None:
    """Each invalid schedule field is refused at its manifest path with what to write instead."""
    error = error_of(**fields)
    assert error.path == path
    assert reason in error.reason


@pytest.mark.parametrize("name", [None, "", "night report", 7])
def test_a_schedule_needs_a_usable_name(name: object) -> None:
    """A missing or unusable name is refused at `schedules[i].name`."""
    with pytest.raises(ManifestError) as caught:
        parse({"schedules": [{"name": name, "rate": "1m"}]})
    assert caught.value.path == "schedules[0].name"


def test_schedule_names_are_unique() -> None:
    """Two schedules with the same name are refused at the second one."""
    with pytest.raises(ManifestError) as caught:
        parse({"schedules": [{"name": "a", "rate": "1m"}, {"name": "a", "cron": "* * * * *"}]})
    assert caught.value.path == "schedules[1].name"
    assert "declared twice" in caught.value.reason


def test_yaml_dates_in_the_payload_become_text() -> None:
    """Payload values YAML reads as dates are carried as ISO text, as every consumer will see them."""
    timer = schedule(rate="1m", event={"data": {"from": datetime(2026, 1, 1).date()}})
    assert timer.event.data == {"from": "2026-01-01"}


def _daily(cron: str = "0 2 * * *", **spec: Any) -> Schedule:
    return parse_schedule(0, {"name": "report", "cron": cron, **spec}, duration=parse_duration)


def test_a_checkpoint_of_the_same_timing_resumes_where_it_stopped() -> None:
    """Catch-up after downtime needs the checkpoint of an unchanged schedule, template edits included."""
    fired = datetime(2026, 5, 4, 2, tzinfo=UTC)
    checkpoint = Checkpoint(through=fired, digest=timing_digest(_daily()))
    edited = _daily(event={"data": {"kind": "new"}})
    assert last_fired(edited, checkpoint) == fired
    assert due(edited, last_fired(edited, checkpoint), datetime(2026, 5, 6, 10, tzinfo=UTC)).ticks == (
        datetime(2026, 5, 6, 2, tzinfo=UTC),
    )


def test_a_changed_schedule_starts_from_now_without_a_stale_tick() -> None:
    """`0 2 * * *` fired at 02:00, changed at 10:00 to `0 9 * * *`: the 09:00 tick is not fired at once."""
    old = Checkpoint(through=datetime(2026, 5, 4, 2, tzinfo=UTC), digest=timing_digest(_daily()))
    changed = _daily("0 9 * * *")
    assert last_fired(changed, old) is None
    decision = due(changed, last_fired(changed, old), datetime(2026, 5, 4, 10, tzinfo=UTC))
    assert decision.ticks == ()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"cron": "0 2 * * *"}, {"cron": "0 3 * * *"}),
        ({"cron": "0 2 * * *"}, {"cron": "0 2 * * *", "timezone": "Europe/Berlin"}),
        ({"rate": "1h"}, {"rate": "2h"}),
        ({"at": "2026-12-01T09:00:00"}, {"at": "2026-12-01T10:00:00"}),
        ({"rate": "1h"}, {"cron": "0 * * * *"}),
    ],
)
def test_the_timing_digest_changes_with_the_ticks(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Another expression, zone, period, instant or kind is another schedule."""
    one, other = (
        parse_schedule(0, {"name": "s", **spec}, duration=parse_duration) for spec in (before, after)
    )
    assert timing_digest(one) != timing_digest(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"rate": "1h"}, {"rate": "60m"}),
        ({"cron": "0 2 * * *"}, {"cron": "0  2 * * *", "catch_up": "none"}),
        ({"at": "2026-12-01T09:00:00+00:00"}, {"at": "2026-12-01T10:00:00+01:00"}),
    ],
)
def test_the_timing_digest_ignores_spelling_and_policy(one: dict[str, Any], other: dict[str, Any]) -> None:
    """The same ticks written differently, or another catch-up policy, keep the schedule's history."""
    first, second = (
        parse_schedule(0, {"name": "s", **spec}, duration=parse_duration) for spec in (one, other)
    )
    assert timing_digest(first) == timing_digest(second)


def test_no_checkpoint_or_one_without_a_digest_is_a_first_run() -> None:
    """A checkpoint from before digests were kept matches no schedule: it starts from now, once."""
    through = datetime(2026, 5, 4, 2, tzinfo=UTC)
    assert last_fired(_daily(), None) is None
    assert last_fired(_daily(), Checkpoint(through=through, digest="")) is None

"""The status of worker groups: positions past transaction markers, rates, decisions, `bus status` output."""

from __future__ import annotations

import math

import pytest

from bus.status import (
    SCALING_DECISION,
    FunctionStatus,
    GroupSample,
    PartitionSample,
    Probe,
    RateWindow,
    ScalingDecision,
    format_duration,
    format_rate,
    function_status,
    head,
    lag_seconds,
    latest_decisions,
    render_table,
    resolve,
    router_line,
    to_json,
)


def partition(topic: str = "p.fn.a", number: int = 0, **fields: object) -> PartitionSample:
    """A partition sample with neutral defaults, overridden by `fields`."""
    values: dict[str, object] = {
        "committed": 0, "start": 0, "end": 0, "position": 0, "lag": 0, "consume_rate": None,
        "produce_rate": None, "lag_seconds": None, "oldest_age": None,
    }  # fmt: skip
    values.update(fields)
    return PartitionSample(topic=topic, partition=number, **values)  # type: ignore[arg-type]


def group(*partitions: PartitionSample) -> GroupSample:
    return GroupSample(function="a", group="p.fn.a", topic="p.fn.a", at=10.0, wall=1e9, partitions=partitions)


DECISION = ScalingDecision(
    function="a", desired=3, actual=2, reason="lag 250 > 100 per replica", total_lag=250,
    p99_seconds=0.125, at="2026-01-31T09:30:00.000Z",
)  # fmt: skip


def test_head_is_the_committed_offset_or_the_log_start() -> None:
    """A group reads from its committed offset; from the log start without one or when retention passed it."""
    assert head(None, 5) == 5
    assert head(3, 5) == 5
    assert head(7, 5) == 7


def test_no_lag_needs_no_probe() -> None:
    """A partition read to its end is known without reading a record."""
    assert resolve(None, 12, 12) == (12, None, True)
    assert resolve(None, 13, 12) == (13, None, True)


def test_a_lagging_partition_needs_a_probe_until_one_was_made() -> None:
    """Without a probe, the position is the committed offset and nothing else is known."""
    assert resolve(None, 3, 12) == (3, None, False)


def test_a_found_record_stays_the_oldest_until_the_group_passes_it() -> None:
    """The record a probe found is the oldest unprocessed one while the group's head is at or before it."""
    probe = Probe(3, 4, True, 1000.5)
    assert resolve(probe, 3, 12) == (4, 1000.5, True)
    assert resolve(probe, 4, 12) == (4, 1000.5, True)  # committed moved past the marker only
    assert resolve(probe, 5, 12) == (5, None, False)  # the group processed it: probe again


def test_a_record_after_the_sampled_end_means_no_lag() -> None:
    """A probe that found its first record at or past this sample's end found only markers before it."""
    assert resolve(Probe(11, 12, True, 1.0), 11, 12) == (12, None, True)


def test_only_markers_left_means_no_lag() -> None:
    """A probe that reached the end without a record: the markers in front of it are not lag."""
    assert resolve(Probe(11, 12, False), 11, 12) == (12, None, True)


def test_records_after_an_empty_probe_need_a_probe_from_where_it_ended() -> None:
    """New records came after a probe reached the end: read again, past the markers known empty."""
    assert resolve(Probe(11, 12, False), 11, 20) == (12, None, False)


def test_a_probe_from_elsewhere_says_nothing() -> None:
    """A probe made from a later offset than the group's head (an offset reset) is not used."""
    assert resolve(Probe(8, 9, True, 1.0), 5, 12) == (5, None, False)


def test_lag_seconds_is_lag_over_the_consume_rate() -> None:
    """0 without lag, inf when stalled, None before a rate is known."""
    assert lag_seconds(0, None) == 0.0
    assert lag_seconds(100, None) is None
    assert lag_seconds(100, 0.0) == math.inf
    assert lag_seconds(100, 50.0) == 2.0


def test_rates_need_two_samples() -> None:
    """The first sample of a partition has no rates; the second has offsets per second between them."""
    window = RateWindow(5.0)
    assert window.add(("t", 0), 0.0, 10, 100) == (None, None)
    assert window.add(("t", 0), 2.0, 30, 140) == (10.0, 20.0)


def test_rates_span_the_window() -> None:
    """With samples every second and a 2 s window, a rate spans the last two seconds."""
    window = RateWindow(2.0)
    for second, committed in enumerate([0, 10, 30, 60]):
        consume, _ = window.add(("t", 0), float(second), committed, 100)
    assert consume == (60 - 10) / 2


def test_offsets_going_back_are_no_progress() -> None:
    """A reset or recreated topic gives rate 0, never a negative rate."""
    window = RateWindow(5.0)
    window.add(("t", 0), 0.0, 50, 50)
    assert window.add(("t", 0), 1.0, 10, 20) == (0.0, 0.0)


def test_a_group_that_never_committed_consumes_nothing() -> None:
    """No committed offset at either end is a consume rate of 0; at one end only, unknown."""
    window = RateWindow(5.0)
    window.add(("t", 0), 0.0, None, 0)
    assert window.add(("t", 0), 1.0, None, 5) == (0.0, 5.0)
    assert window.add(("t", 0), 2.0, 4, 5) == (None, 2.5)


def test_forgotten_partitions_start_over() -> None:
    """`keep` drops the history of partitions no longer monitored."""
    window = RateWindow(5.0)
    window.add(("t", 0), 0.0, 0, 0)
    window.keep([("t", 1)])
    assert window.add(("t", 0), 1.0, 5, 5) == (None, None)


def test_group_sample_separates_the_function_topic_from_its_retries() -> None:
    """Lag, age, lag time and rates are the function topic's; retries pending are the retry topics' lag."""
    sample = group(
        partition(number=0, lag=5, lag_seconds=2.5, oldest_age=4.0, consume_rate=2.0, produce_rate=1.0),
        partition(number=1, lag=3, lag_seconds=math.inf, oldest_age=9.0, consume_rate=0.0, produce_rate=None),
        partition("p.fn.a.retry.1", 0, lag=7, lag_seconds=70.0, oldest_age=99.0, consume_rate=5.0),
    )
    assert (sample.lag, sample.retry_lag, sample.total_lag) == (8, 7, 15)
    assert sample.lag_seconds == math.inf
    assert sample.oldest_age == 9.0
    assert (sample.consume_rate, sample.produce_rate) == (2.0, 1.0)
    assert len(sample.inputs) == 2
    assert len(sample.retries) == 1


def test_group_sample_without_partitions_knows_nothing() -> None:
    """A function whose topic does not exist yet has no lag and no rates."""
    sample = group()
    assert (sample.lag, sample.lag_seconds, sample.oldest_age, sample.consume_rate) == (0, None, None, None)


def test_partition_samples_carry_what_scaling_needs() -> None:
    """The supervisor builds `PartitionLag(partition, committed, start, end)` from these fields."""
    sample = partition(committed=3, start=0, end=12, position=4, lag=8)
    assert (sample.partition, sample.committed, sample.start, sample.end) == (0, 3, 0, 12)
    assert sample.end - sample.position == sample.lag


def test_a_decision_is_read_from_event_data() -> None:
    """The data of a `bus.scaling.decision` event becomes a ScalingDecision."""
    data = {
        "function": "a", "desired": 3, "actual": 2, "reason": "lag 250 > 100 per replica",
        "total_lag": 250, "p99_seconds": 0.125, "at": "2026-01-31T09:30:00.000Z",
    }  # fmt: skip
    assert SCALING_DECISION == "bus.scaling.decision"
    assert ScalingDecision.from_data(data) == DECISION
    assert ScalingDecision.from_data({**data, "p99_seconds": None, "extra": 1}) == ScalingDecision(
        function="a", desired=3, actual=2, reason="lag 250 > 100 per replica", total_lag=250,
        at="2026-01-31T09:30:00.000Z",
    )  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [None, [], "x", {"function": "a", "desired": 1}, {"function": "a", "desired": True, "actual": 1},
     {"function": 1, "desired": 1, "actual": 1}, {"function": "a", "desired": 1.5, "actual": 1}],
)  # fmt: skip
def test_data_that_is_no_decision_is_skipped(data: object) -> None:
    """Data without a function name and whole desired/actual counts is not a decision."""
    assert ScalingDecision.from_data(data) is None


def test_the_latest_decision_per_function_wins() -> None:
    """In log order, each function's last valid decision is its current one."""
    datas = [
        {"function": "a", "desired": 1, "actual": 0, "reason": "first"},
        {"function": "b", "desired": 2, "actual": 2, "reason": "b"},
        {"function": "a", "desired": 3, "actual": 1, "reason": "second"},
        {"function": "a", "broken": True},
    ]
    latest = latest_decisions(datas)
    assert sorted(latest) == ["a", "b"]
    assert (latest["a"].desired, latest["a"].reason) == (3, "second")


def _status(decision: ScalingDecision | None = DECISION, **fields: object) -> FunctionStatus:
    sample = group(
        partition(number=0, lag=5, lag_seconds=2.5, oldest_age=4.0, consume_rate=2.0, produce_rate=10.0),
        partition("p.fn.a.retry.1", 0, lag=7),
    )
    status = function_status(sample, decision, 4)
    values = {name: getattr(status, name) for name in FunctionStatus.__slots__}
    values.update(fields)
    return FunctionStatus(**values)


def test_json_has_machine_friendly_fields() -> None:
    """One object per function with snake_case names and units in them; null where unknown."""
    assert to_json(_status()) == {
        "function": "a",
        "partitions": 1,
        "lag": 5,
        "lag_seconds": 2.5,
        "stalled": False,
        "oldest_age_seconds": 4.0,
        "replicas_desired": 3,
        "replicas_actual": 2,
        "scaling_reason": "lag 250 > 100 per replica",
        "decided_at": "2026-01-31T09:30:00.000Z",
        "events_in_per_second": 10.0,
        "events_out_per_second": 2.0,
        "p99_seconds": 0.125,
        "retries_pending": 7,
        "dead_letters": 4,
    }


def test_json_without_a_supervisor_has_null_replicas() -> None:
    """No decision: replicas, reason and p99 are null; a stall shows as `stalled` with null lag time."""
    doc = to_json(_status(None, lag_seconds=math.inf, events_in=None))
    assert doc["replicas_desired"] is doc["replicas_actual"] is doc["scaling_reason"] is None
    assert doc["p99_seconds"] is doc["decided_at"] is doc["events_in_per_second"] is None
    assert (doc["lag_seconds"], doc["stalled"]) == (None, True)


def test_table_has_a_header_and_one_aligned_line_per_function() -> None:
    """Numbers right-aligned under their headers, the reason last; `-` for what is unknown."""
    lines = render_table([_status(), _status(None, function="longer-name", lag=12345)]).splitlines()
    assert lines[0].split() == [
        "FUNCTION", "PARTITIONS", "LAG", "LAG-TIME", "OLDEST", "DESIRED", "ACTUAL",
        "IN/S", "OUT/S", "P99", "RETRIES", "DLQ", "REASON",
    ]  # fmt: skip
    assert lines[1].split() == [
        "a", "1", "5", "2.5s", "4.0s", "3", "2", "10.0", "2.0", "0.12s", "7", "4",
        "lag", "250", ">", "100", "per", "replica",
    ]  # fmt: skip
    assert lines[2].split()[:7] == ["longer-name", "1", "12345", "2.5s", "4.0s", "-", "-"]
    assert lines[2].endswith("-")
    assert lines[0].index("LAG ") + 3 == lines[2].index("12345") + 5  # right-aligned


def test_an_empty_table_is_its_header() -> None:
    """No functions: just the header line."""
    assert render_table([]).split() == render_table([_status()]).splitlines()[0].split()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (math.inf, "stalled"), (0.0, "0.00s"), (0.125, "0.12s"), (2.5, "2.5s"), (12.7, "12s"),
     (185, "3m05s"), (7620, "2h07m")],
)  # fmt: skip
def test_durations_are_short(seconds: float | None, text: str) -> None:
    """Durations read at a glance: fractions below 10 s, then s, m+s, h+m."""
    assert format_duration(seconds) == text


def test_rates_are_short() -> None:
    """One decimal below 100 events per second, whole numbers above; `-` when unknown."""
    assert [format_rate(v) for v in (None, 0.0, 12.34, 1234.5)] == ["-", "0.0", "12.3", "1234"]


def test_the_router_line_counts_dead_letters_and_names_the_command() -> None:
    """No line without router dead letters; singular and plural otherwise."""
    assert router_line("shop", 0) == ""
    assert router_line("shop", 1) == "router: 1 dead letter in shop.router.dlq (`bus dlq list --router`)"
    assert router_line("shop", 7) == "router: 7 dead letters in shop.router.dlq (`bus dlq list --router`)"

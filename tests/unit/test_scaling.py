"""Replica decisions from lag (bus.scaling): KEDA's Kafka-scaler parameters, with the HPA's window."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.manifest import Scaling
from bus.scaling import Decision, Observation, PartitionLag, ScalerState, decide, lag_of, partitions_cap


def part(partition: int, lag: int, *, committed: int | None = 1000, start: int = 0) -> PartitionLag:
    """Partition `partition` with `lag` events after its committed offset (or after `start`)."""
    base = start if committed is None else committed
    return PartitionLag(partition=partition, committed=committed, start=start, end=base + lag)


def group(at: float, replicas: int, *lags: int) -> Observation:
    """A group with one partition per lag, each committed at offset 1000."""
    return Observation(at=at, replicas=replicas, partitions=tuple(part(i, lag) for i, lag in enumerate(lags)))


def once(policy: Scaling, observation: Observation, **kwargs: int) -> Decision:
    """The decision for one sample from the initial state."""
    return decide(policy, observation, ScalerState.initial(), **kwargs)[0]


def run(policy: Scaling, samples: list[Observation]) -> list[Decision]:
    """The decisions for `samples` in order, threading the state."""
    state, decisions = ScalerState.initial(), []
    for observation in samples:
        decision, state = decide(policy, observation, state)
        decisions.append(decision)
    return decisions


# --- lag ---------------------------------------------------------------------------------------


def test_lag_is_end_minus_committed() -> None:
    """With a committed offset, lag is the events after it."""
    assert lag_of(PartitionLag(partition=0, committed=40, start=0, end=100)) == 60


def test_no_committed_offset_counts_from_the_log_start() -> None:
    """Without a committed offset the group reads from the earliest offset: lag is end - start
    (KEDA counts the end offset, including events retention deleted)."""
    assert lag_of(PartitionLag(partition=0, committed=None, start=50, end=350)) == 300


def test_committed_offset_below_the_log_start_counts_from_the_log_start() -> None:
    """Events deleted by retention are not lag: the consumer resets to the log start."""
    assert lag_of(PartitionLag(partition=0, committed=10, start=50, end=350)) == 300


def test_latest_reset_without_offset_is_one() -> None:
    """With auto.offset.reset=latest a group without offset lags 1, keeping a replica (as KEDA)."""
    assert lag_of(PartitionLag(partition=0, committed=None, start=50, end=350), reset="latest") == 1


def test_lag_is_never_negative() -> None:
    """A committed offset sampled after the end offset (a race) is lag 0, not negative."""
    assert lag_of(PartitionLag(partition=0, committed=120, start=0, end=100)) == 0


def test_total_lag_sums_partitions_including_those_without_lag() -> None:
    """Partitions without lag add 0; each partition's lag is among the inputs."""
    decision = once(Scaling(), group(0, 1, 200, 0, 60))
    assert decision.total_lag == 260
    assert [p["lag"] for p in decision.inputs["partitions"]] == [200, 0, 60]


# --- desired = ceil(lag / threshold), bounded --------------------------------------------------


def test_scale_out_is_ceil_of_lag_over_threshold_and_immediate() -> None:
    """lag 260 at threshold 100 asks for 3 replicas at once, and says so."""
    decision = once(Scaling(max=10), group(0, 1, 100, 100, 60))
    assert (decision.desired, decision.change) == (3, True)
    assert decision.reason == "scale out 1->3: lag 260 / threshold 100 = 2.6 -> 3"


def test_never_more_replicas_than_partitions() -> None:
    """3 partitions, lag 10,000, max 10: 3 replicas (more would sit idle)."""
    decision = once(Scaling(max=10), group(0, 1, 5000, 5000, 0))
    assert decision.desired == 3
    assert "capped at 3 partitions" in decision.reason


@pytest.mark.parametrize("lag", range(26, 30))
def test_no_overshoot_by_one_near_the_partition_count(lag: int) -> None:
    """KEDA caps only when floor(lag / threshold) > partitions, so lag 26-29 at threshold 5 on 5
    partitions asks for 6 replicas (kedacore/keda#4483); bus asks for 5."""
    assert once(Scaling(max=10, lag_threshold=5), group(0, 1, lag, 0, 0, 0, 0)).desired == 5


def test_the_cap_is_the_partitions_the_topic_really_has_when_fewer_than_declared() -> None:
    """`partitions: 8` on a topic created with 3 (bus never adds partitions): 3 replicas at most."""
    assert partitions_cap(8, 3) == 3
    assert partitions_cap(3, 8) == 3
    assert partitions_cap(8, 0) == 8  # not sampled yet
    decision = once(
        Scaling(max=10, lag_threshold=100), group(0, 1, 300, 300, 300), partitions_cap=partitions_cap(8, 3)
    )
    assert decision.desired == 3


def test_partitions_cap_replaces_the_partition_count() -> None:
    """A given partitions_cap bounds the replicas instead of the partition count."""
    decision = once(Scaling(max=10), group(0, 1, 5000, 5000, 0), partitions_cap=2)
    assert decision.desired == 2
    assert "capped at the partitions cap 2" in decision.reason


def test_max_bounds_the_replicas() -> None:
    """max bounds the replicas below the partition count."""
    decision = once(Scaling(max=4), group(0, 1, *[1000] * 8))
    assert decision.desired == 4
    assert "capped at max 4" in decision.reason


def test_min_holds_without_lag() -> None:
    """With min 2 a group never goes below 2, however long it is idle."""
    decisions = run(Scaling(min=2, max=4), [group(t, 2, 0, 0) for t in range(0, 1000, 100)])
    assert {d.desired for d in decisions} == {2}


def test_min_starts_a_group_found_at_zero() -> None:
    """A group at 0 replicas with min 2 is started at 2, lag or not."""
    decision = once(Scaling(min=2, max=4), group(0, 0, 0, 0))
    assert decision.desired == 2
    assert decision.reason == "scale out 0->2: lag 0 / threshold 100 = 0 -> 0 (min 2)"


# --- activation ------------------------------------------------------------------------------


def test_activation_needs_lag_strictly_above_the_threshold() -> None:
    """Lag equal to activation_lag_threshold keeps the group at 0 (KEDA: greater than, not equal)."""
    policy = Scaling(activation_lag_threshold=5)
    held = once(policy, group(0, 0, 5))
    assert (held.desired, held.reason) == (0, "hold 0: lag 5 is not above the activation threshold 5")
    assert once(policy, group(0, 0, 6)).desired == 1


def test_default_activation_starts_on_one_event() -> None:
    """With the default threshold 0, one event starts a replica; no lag keeps 0."""
    assert once(Scaling(), group(0, 0, 1)).desired == 1
    assert once(Scaling(), group(0, 0, 0)).reason == "hold 0: no lag"


def test_scale_from_zero_goes_straight_to_the_recommendation() -> None:
    """From 0 the group starts with as many replicas as the lag asks for, not 1."""
    decision = once(Scaling(max=10), group(0, 0, 100, 100, 60))
    assert decision.desired == 3
    assert decision.reason.startswith("scale out 0->3: lag 260 is above the activation threshold 0")


# --- scale-in waits for the stabilization window ----------------------------------------------


def test_scale_in_waits_for_the_window_then_goes_down() -> None:
    """After lag drops, 3 replicas hold for the 30 s window, then go to 1."""
    samples = [group(0, 3, 100, 100, 100)] + [group(t, 3, 10, 0, 0) for t in (1, 12, 29.5, 30)]
    decisions = run(Scaling(max=10), samples)
    assert [d.desired for d in decisions] == [3, 3, 3, 3, 1]
    assert decisions[2].reason == "hold 3: scale-in to 1 waits for the stabilization window (12 s of 30 s)"
    assert decisions[4].reason == "scale in 3->1: lag 10 / threshold 100 = 0.1 -> 1"


def test_scale_in_goes_only_to_the_highest_recommendation_of_the_window() -> None:
    """With recommendations 5, 3, 1 over time, the 5 leaving the window allows 3, not 1."""
    policy = Scaling(max=10, stabilization=30)
    samples = [group(0, 5, *[100] * 5), group(10, 5, 100, 100, 100, 0, 0), group(31, 5, 10, 0, 0, 0, 0)]
    decisions = run(policy, samples)
    assert [d.desired for d in decisions] == [5, 5, 3]
    assert "3 is the highest recommendation of the last 30 s" in decisions[2].reason


def test_zero_stabilization_scales_in_at_once() -> None:
    """stabilization 0 follows the lag down immediately."""
    decisions = run(Scaling(max=10, stabilization=0), [group(0, 3, 100, 100, 100), group(1, 3, 10, 0, 0)])
    assert [d.desired for d in decisions] == [3, 1]


# --- scale to zero after the cooldown -----------------------------------------------------------


def test_scale_to_zero_after_cooldown_of_zero_lag() -> None:
    """With min 0 the last replica stops after 60 s without lag, not before."""
    decisions = run(Scaling(cooldown=60), [group(t, 1, 0) for t in (0, 30, 59.9, 60)])
    assert [d.desired for d in decisions] == [1, 1, 1, 0]
    assert decisions[1].reason == "hold 1: no lag for 30 s, scale to zero after 60 s"
    assert decisions[3].reason == "scale to zero 1->0: no lag for 60 s (cooldown 60 s)"


def test_lag_restarts_the_cooldown() -> None:
    """One sample with lag restarts the count of zero-lag seconds."""
    samples = [group(0, 1, 0), group(50, 1, 3), group(51, 1, 0), group(100, 1, 0), group(111, 1, 0)]
    assert [d.desired for d in run(Scaling(cooldown=60), samples)] == [1, 1, 1, 1, 0]


def test_cooldown_shorter_than_the_window_waits_for_the_window() -> None:
    """Scale to zero never comes sooner than the stabilization window after lag (here the window
    lets 2 go to 1 at 30 s, and 30 s of zero lag stop the last one at 31 s)."""
    samples = [group(0, 2, 200, 0), *[group(t, 2, 0, 0) for t in (1, 12, 30, 31)]]
    decisions = run(Scaling(cooldown=10, stabilization=30), samples)
    assert [d.desired for d in decisions] == [2, 2, 2, 1, 0]
    assert decisions[4].reason == "scale to zero 2->0: no lag for 30 s (stabilization window 30 s)"


# --- persistent lag ------------------------------------------------------------------------------


def stuck_group(at: float, replicas: int, moving_lag: int) -> Observation:
    """Partition 0 lags 500 at committed offset 7 forever; partition 1 lags `moving_lag` and moves."""
    moving = PartitionLag(partition=1, committed=int(at) * 10, start=0, end=int(at) * 10 + moving_lag)
    return Observation(
        at=at, replicas=replicas, partitions=(part(0, 500, committed=7), moving, part(2, 0), part(3, 0))
    )


def test_persistent_lag_is_excluded_after_the_window() -> None:
    """A partition lagging at one committed offset for 30 s is left out of the count."""
    policy = Scaling(max=10, exclude_persistent_lag=True)
    decisions = run(policy, [stuck_group(t, 4, 100) for t in (0, 10, 29, 30)])
    assert [d.total_lag for d in decisions] == [600, 600, 600, 100]
    assert decisions[3].inputs["excluded"] == [0]
    assert decisions[3].inputs["recommendation"] == 1


def test_persistent_lag_is_counted_by_default() -> None:
    """Without exclude_persistent_lag a stuck partition's lag counts."""
    decisions = run(Scaling(max=10), [stuck_group(t, 4, 100) for t in (0, 30, 60)])
    assert [d.total_lag for d in decisions] == [600, 600, 600]


def test_excluded_lag_still_keeps_one_replica() -> None:
    """A group whose only lag is persistent keeps 1 replica and never scales to zero."""
    policy = Scaling(max=10, cooldown=10, stabilization=5, exclude_persistent_lag=True)
    samples = [
        Observation(at=t, replicas=1, partitions=(part(0, 500, committed=7),)) for t in range(0, 100, 5)
    ]
    decisions = run(policy, samples)
    assert {d.desired for d in decisions} == {1}
    assert decisions[-1].total_lag == 0
    assert "at least 1 replica while there is lag" in decisions[-1].reason


def test_persistent_lag_does_not_block_activation() -> None:
    """At 0 replicas nothing consumes, so nothing is persistent: lag activates the group."""
    policy = Scaling(max=10, stabilization=0, exclude_persistent_lag=True)
    samples = [Observation(at=t, replicas=0, partitions=(part(0, 500, committed=7),)) for t in (0, 1)]
    assert [d.desired for d in run(policy, samples)] == [1, 1]


def test_a_partition_that_just_got_events_is_not_stuck() -> None:
    """The clock starts when a partition is first seen lagging, not when its offset last moved."""
    policy = Scaling(max=10, stabilization=30, exclude_persistent_lag=True)
    idle = Observation(at=0, replicas=1, partitions=(part(0, 0, committed=7), part(1, 0)))
    burst = Observation(at=100, replicas=1, partitions=(part(0, 300, committed=7), part(1, 0)))
    assert run(policy, [idle, burst])[1].total_lag == 300


# --- properties ---------------------------------------------------------------------------------

policies = st.builds(
    lambda low, extra, **kw: Scaling(min=low, max=max(low + extra, 1), **kw),
    low=st.integers(0, 3),
    extra=st.integers(0, 6),
    lag_threshold=st.integers(1, 200),
    activation_lag_threshold=st.integers(0, 50),
    cooldown=st.sampled_from([0.0, 5.0, 30.0, 60.0]),
    stabilization=st.sampled_from([0.0, 2.0, 10.0, 30.0]),
    exclude_persistent_lag=st.booleans(),
)
samples = st.lists(
    st.tuples(
        st.sampled_from([0.5, 1.0, 2.0, 15.0]),
        # per partition: committed offset, and lag in half lag thresholds (so that lag oscillates
        # around the thresholds instead of always saturating)
        st.lists(
            st.tuples(st.sampled_from([None, 0, 10]), st.sampled_from([0, 0, 0, 1, 2, 3, 8])),
            min_size=3,
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(policy=policies, series=samples, cap=st.none() | st.integers(1, 4))
def test_random_lag_series_stays_in_bounds_without_flapping(
    policy: Scaling, series: list[tuple[float, list[tuple[int | None, int]]]], cap: int | None
) -> None:
    """Under any lag series (replicas following the decisions): desired stays within its bounds, a
    group with lag is never left at 0 once running, no scale-in comes within the window after a
    scale-out, reasons are one line, inputs are JSON, and the same inputs decide the same."""
    state, at, replicas, last_out = ScalerState.initial(), 0.0, 0, None
    bound = cap if cap is not None else 3
    for dt, offsets in series:
        at += dt
        observation = Observation(
            at=at,
            replicas=replicas,
            partitions=tuple(
                part(i, halves * policy.lag_threshold // 2, committed=c)
                for i, (c, halves) in enumerate(offsets)
            ),
        )
        decision, next_state = decide(policy, observation, state, partitions_cap=cap)
        assert (decision, next_state) == decide(policy, observation, state, partitions_cap=cap)
        assert "\n" not in decision.reason
        json.dumps(decision.inputs)
        assert decision.desired <= max(min(policy.max, bound), policy.min)
        assert decision.desired >= policy.min
        if replicas > 0 and sum(lag_of(p) for p in observation.partitions) > 0:
            assert decision.desired >= 1
        if decision.desired > replicas:
            last_out = at
        elif decision.desired < replicas and last_out is not None:
            assert at - last_out >= policy.stabilization
        state, replicas = next_state, decision.desired


# --- throughput floor (rule 8) -----------------------------------------------------------------


def loaded(at: float, replicas: int, lag: int, *, incoming: float, processed: float) -> Observation:
    """Four partitions lagging `lag` in all, with the group's rates over the last 5 s."""
    return Observation(
        at=at,
        replicas=replicas,
        partitions=tuple(part(i, lag // 4) for i in range(4)),
        incoming_rate=incoming,
        processed_rate=processed,
        rates_span=5.0,
    )


STEADY = Scaling(min=1, max=4, lag_threshold=50, stabilization=3.0)


def test_a_steady_load_the_replicas_keep_up_with_does_not_scale_in_and_out() -> None:
    """Saturated at 4 replicas doing 60 ev/s each, then caught up with 200 ev/s still arriving:
    lag alone says 1 replica; the floor keeps ceil(200 / 60) = 4 and says why."""
    saturated = [loaded(t, 4, 400, incoming=200, processed=240) for t in range(7)]
    caught_up = [loaded(t, 4, 0, incoming=200, processed=200) for t in range(7, 30)]
    decisions = run(STEADY, saturated + caught_up)
    assert {d.desired for d in decisions} == {4}
    last = decisions[-1]
    assert last.inputs["capacity"] == pytest.approx(60)
    assert last.inputs["throughput_floor"] == 4
    assert "incoming 200 ev/s needs 4 at 60 ev/s per replica" in last.reason


def test_the_floor_lets_an_overscaled_group_scale_in_to_what_the_rate_needs() -> None:
    """Capacity 60 ev/s per replica and 100 ev/s arriving: scale in from 4 to 2, not to 1."""
    saturated = [loaded(t, 4, 400, incoming=200, processed=240) for t in range(7)]
    light = [loaded(t, 4, 0, incoming=100, processed=100) for t in range(7, 30)]
    decisions = run(STEADY, saturated + light)
    assert decisions[-1].desired == 2
    assert [d.desired for d in decisions] == sorted((d.desired for d in decisions), reverse=True)
    assert "scale in 4->2: incoming 100 ev/s needs 2" in next(d.reason for d in decisions if d.desired == 2)


def test_without_a_saturated_span_there_is_no_floor() -> None:
    """Capacity is measured only after two samples behind: one is not enough, so lag alone
    decides (as KEDA)."""
    short = [loaded(t, 4, 400, incoming=200, processed=240) for t in range(1)]
    idle = [loaded(t, 4, 0, incoming=200, processed=200) for t in range(1, 30)]
    decisions = run(STEADY, short + idle)
    assert decisions[-1].inputs["capacity"] is None
    assert decisions[-1].desired == 1


def test_rates_over_a_scale_out_are_divided_by_the_most_replicas() -> None:
    """240 ev/s over a span in which 2 then 4 replicas ran: 60 per replica (conservative: the
    floor holds more replicas, never fewer), not 120."""
    mixed = [loaded(t, 2 if t < 3 else 4, 400, incoming=200, processed=240) for t in range(5)]
    decisions = run(STEADY, mixed)
    assert decisions[2].inputs["capacity"] == pytest.approx(120)  # 2 replicas so far
    assert decisions[3].inputs["capacity"] == pytest.approx(120 + 0.3 * (60 - 120))


def test_the_floor_does_not_keep_an_idle_group_from_zero() -> None:
    """With min 0, lag 0 for the cooldown scales to zero whatever the floor says."""
    policy = Scaling(min=0, max=4, lag_threshold=50, stabilization=3.0, cooldown=5.0)
    saturated = [loaded(t, 4, 400, incoming=200, processed=240) for t in range(7)]
    idle = [loaded(t, 4, 0, incoming=0, processed=0) for t in range(7, 20)]
    assert run(policy, saturated + idle)[-1].desired == 0


def test_the_floor_counts_partitions_per_replica_under_the_range_assignment() -> None:
    """200 ev/s over 4 partitions at 90 ev/s per replica: 3 replicas would do 270 ev/s in all, but
    one of them would own 2 partitions (100 ev/s), so the floor is 4 (the flapping R15 found)."""
    saturated = [loaded(t, 4, 400, incoming=200, processed=360) for t in range(7)]
    caught_up = [loaded(t, 4, 0, incoming=200, processed=200) for t in range(7, 30)]
    decisions = run(STEADY, saturated + caught_up)
    assert {d.desired for d in decisions} == {4}
    assert decisions[-1].inputs["throughput_floor"] == 4


def test_a_hot_partition_is_given_a_replica_of_its_own() -> None:
    """Rates 150/10/10/10 at capacity 190 (171 with headroom): one replica is too few for 180 ev/s;
    two (150+10 and 20 under the range assignment) suffice."""
    rates = (150.0, 10.0, 10.0, 10.0)
    parts = tuple(
        PartitionLag(partition=i, committed=1000, start=0, end=1000 + lag, incoming_rate=r)
        for i, (r, lag) in enumerate(zip(rates, (100, 100, 100, 100), strict=True))
    )
    idle = tuple(PartitionLag(partition=p.partition, committed=1000, start=0, end=1000) for p in parts)
    samples = [
        Observation(at=t, replicas=4, partitions=parts, incoming_rate=180, processed_rate=760)
        for t in range(7)
    ]
    samples += [
        Observation(
            at=t,
            replicas=4,
            partitions=tuple(
                PartitionLag(partition=p.partition, committed=1000, start=0, end=1000, incoming_rate=r)
                for p, r in zip(idle, rates, strict=True)
            ),
            incoming_rate=180,
            processed_rate=180,
        )
        for t in range(7, 30)
    ]
    decisions = run(STEADY, samples)
    assert decisions[-1].inputs["capacity"] == pytest.approx(190)
    assert decisions[-1].desired == 2


def test_a_group_that_keeps_up_with_a_little_lag_is_not_measured_and_scales_in() -> None:
    """After a burst measured at 500 ev/s per replica, 80 ev/s with 1 event waiting per partition
    (records in flight) is not saturation: the floor stays ceil(80 / 500) = 1, so 8 scale in."""
    policy = Scaling(min=1, max=8, lag_threshold=100, stabilization=30.0)
    parts = 8

    def sample(at: float, lag: int, incoming: float, processed: float) -> Observation:
        return Observation(
            at=at,
            replicas=8,
            partitions=tuple(part(i, lag // parts) for i in range(parts)),
            incoming_rate=incoming,
            processed_rate=processed,
        )

    burst = [sample(t, 8000, 4000, 4000) for t in range(7)]
    trickle = [sample(t, parts, 80, 80) for t in range(7, 120)]
    decisions = run(policy, burst + trickle)
    assert decisions[6].inputs["capacity"] == pytest.approx(500)
    assert decisions[-1].inputs["capacity"] == pytest.approx(500)
    assert decisions[-1].desired == 1, decisions[-1].reason

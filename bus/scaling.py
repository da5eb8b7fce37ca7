"""Replica decisions for a worker group from its lag (pure: offsets and times in, a Decision out).

The supervisor samples a group every 1-2 s and calls `decide(policy, observation, state)`; the
Decision says how many replicas to run and why, in one line, with every input it used. The rules,
compared with KEDA's Kafka scaler and the HPA in docs/decisions/autoscaling.md:

1. **Lag.** A partition's lag is `end - committed`. Without a usable committed offset (none, or one
   below the log start that retention deleted) the consumer resets per `auto.offset.reset`: our
   groups use `earliest`, so the lag counts from the log start (`end - start`); with `latest` it is
   1, a marker that keeps one replica until the group has a position. Lag is never negative; the
   total lag is the sum over partitions.
2. **Persistent lag** (`exclude_persistent_lag`). With replicas running, a partition that lags at
   the same committed offset for `stabilization` seconds (two samples at least) is stuck: more
   replicas cannot help it, so its lag is left out of the count. The clock starts when the
   partition is first seen lagging at that offset, not when the offset last moved (an idle
   partition that just received events is not stuck). Activation and cooldown still see the whole
   lag: a group with any lag keeps at least one replica.
3. **Recommendation.** `ceil(counted lag / lag_threshold)`, at least `max(min, 1)`, at most `max`
   and the partition count (or `partitions_cap`): extra consumers would sit idle. `min` wins over
   the partition count: standby replicas are an explicit choice.
4. **Activation.** From 0 replicas the group starts only when the total lag is strictly above
   `activation_lag_threshold`, and goes straight to the recommendation. With `min > 0` it starts
   regardless.
5. **Scale-out** is immediate.
6. **Scale-in** goes down only to the highest recommendation of the last `stabilization` seconds
   (the HPA's rule), so a scale-out is never undone within the window.
7. **Scale to zero** (only with `min == 0`): after the total lag has been 0 continuously for
   `cooldown` seconds, and for no less than `stabilization`.
8. **Throughput floor** (bus's own; KEDA and the HPA have none). Lag alone cannot tell how many
   replicas a steady load needs: once they keep up, lag is near 0 and the recommendation falls to
   1, the group scales in, lag grows back, and it scales out again (flapping, once per window).
   So scale-in stops at the fewest replicas none of which would get more than `HEADROOM` of a
   replica's capacity, given the partitions' incoming rates and the range assignment (a replica
   of 3 on 4 partitions gets 2 of them). Capacity is one replica's measured rate while the group
   was behind (at least `lag_threshold` events waiting at two samples or more), divided by the most
   replicas that ran during the rates' span (a scale-out just made underestimates it: more
   replicas are held, never fewer); a moving average. Unknown capacity sets no floor;
   the floor never scales out and never keeps a group with no lag for `cooldown` from zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bus.manifest import Scaling

CAPACITY_WEIGHT = 0.3
"""Weight of a new measurement in the moving average of a replica's capacity (rule 8)."""
SATURATED_FOR = 1.0
"""Seconds a group must have been behind (two samples at least) before its rate is measured."""
HEADROOM = 0.9
"""The share of its measured capacity a replica may be given when scaling in (rule 8)."""

__all__ = ["Decision", "Observation", "PartitionLag", "ScalerState", "decide", "lag_of", "partitions_cap"]

Reset = Literal["earliest", "latest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionLag:
    """Offsets of one partition of a group's topic, as sampled."""

    partition: int
    committed: int | None
    """The group's committed offset; None when it has none."""
    start: int
    """Log start offset (the earliest still available)."""
    end: int
    """End offset (the last stable offset under read_committed is fine)."""
    incoming_rate: float | None = None
    """Events per second into the partition over the observation's `rates_span` (None if unknown)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One sample of a worker group."""

    at: float
    """Seconds on a monotonic clock, when sampled."""
    partitions: tuple[PartitionLag, ...]
    replicas: int
    """Replicas running now (actual, not desired)."""
    incoming_rate: float | None = None
    """Events per second into the topic over the last `rates_span` seconds (None if unknown)."""
    processed_rate: float | None = None
    """Events per second the group committed over the same span (None if unknown)."""
    rates_span: float = 5.0
    """Seconds the two rates average over."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """How many replicas to run, and why."""

    desired: int
    current: int
    total_lag: int
    """Lag counted for the decision, after exclusions."""
    reason: str
    """One line, e.g. `scale out 1->3: lag 260 / threshold 100 = 2.6 -> 3`."""
    inputs: Mapping[str, Any]
    """Everything the decision used, JSON-able (for `bus status` and the dashboard)."""

    @property
    def change(self) -> bool:
        """True when the replica count should change."""
        return self.desired != self.current


@dataclass(frozen=True, slots=True)
class ScalerState:
    """What `decide` remembers between samples of one group."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, recommendation) within the stabilization window, each higher than every later one:
    enough for the window's maximum and for the newest time a value was reached."""
    idle_since: float | None = None
    """When the total lag last became 0; None while there is lag."""
    stalls: tuple[tuple[int, int | None, float], ...] = ()
    """(partition, committed offset, since) of partitions lagging at an unchanged committed offset."""
    saturated_since: float | None = None
    """Since when every sample had lag with the same replica count (rule 8); None when not."""
    replicas: tuple[tuple[float, int], ...] = ()
    """(time, replica count) of the samples within the last rates span (rule 8)."""
    capacity: float | None = None
    """Events per second one replica handles when saturated, a moving average (rule 8)."""

    @classmethod
    def initial(cls) -> ScalerState:
        """The state before the first sample."""
        return cls()


def lag_of(p: PartitionLag, *, reset: Reset = "earliest") -> int:
    """Events the group has still to read from partition `p` (rule 1)."""
    if p.committed is None or p.committed < p.start:
        return max(p.end - p.start, 0) if reset == "earliest" else 1
    return max(p.end - p.committed, 0)


def partitions_cap(declared: int, found: int) -> int:
    """The most replicas lag may ask for: the manifest's `partitions`, or the partitions the topic
    really has when fewer (raising `partitions` does not grow a topic that exists; KEDA caps at the
    topic's own count too). `found` 0: not sampled yet."""
    return min(declared, found) if found else declared


def decide(
    policy: Scaling,
    observation: Observation,
    state: ScalerState,
    *,
    partitions_cap: int | None = None,
) -> tuple[Decision, ScalerState]:
    """The replica count for `observation` under `policy`, and the state for the next sample."""
    at, window = observation.at, policy.stabilization
    lags = {p.partition: lag_of(p) for p in observation.partitions}
    stalls, stuck = _stalls(observation, lags, state, window)
    count = _count(policy, lags, stuck, partitions_cap)
    saturated_since, capacity = _capacity(observation, count.total, state, threshold=policy.lag_threshold)
    floor = _floor(observation, capacity, count.high)
    idle_since = None if count.total else (at if state.idle_since is None else state.idle_since)
    idle_for = None if idle_since is None else at - idle_since
    recent = tuple((t, r) for t, r in state.recommendations if t > at - window)
    desired, reason = _choose(
        policy, count, current=observation.replicas, at=at, recent=recent, idle_for=idle_for, floor=floor
    )
    held = max(count.recommendation, floor.replicas)
    kept = (*((t, r) for t, r in recent if r > held), (at, held))
    next_state = ScalerState(
        recommendations=kept if desired else (),  # at zero the next start needs no history
        idle_since=idle_since,
        stalls=stalls,
        saturated_since=saturated_since,
        replicas=(
            *((t, n) for t, n in state.replicas if t > at - observation.rates_span),
            (at, observation.replicas),
        ),
        capacity=capacity,
    )
    inputs: dict[str, Any] = {
        "at": at,
        "replicas": observation.replicas,
        "partitions": [
            {
                "partition": p.partition,
                "committed": p.committed,
                "start": p.start,
                "end": p.end,
                "lag": lags[p.partition],
            }
            for p in observation.partitions
        ],
        "partition_count": len(lags),
        "partitions_cap": partitions_cap,
        "total_lag": count.total,
        "counted_lag": count.counted,
        "excluded": list(count.excluded),
        "stalled_for": {str(p): at - since for p, _, since in stalls if at > since},
        "lag_threshold": policy.lag_threshold,
        "activation_lag_threshold": policy.activation_lag_threshold,
        "min": policy.min,
        "max": policy.max,
        "stabilization": window,
        "cooldown": policy.cooldown,
        "exclude_persistent_lag": policy.exclude_persistent_lag,
        "recommendation": count.recommendation,
        "window_max": max([count.recommendation, *(r for _, r in recent)]),
        "idle_for": idle_for,
        "incoming_rate": observation.incoming_rate,
        "processed_rate": observation.processed_rate,
        "capacity": capacity,
        "throughput_floor": floor.replicas,
    }
    decision = Decision(
        desired=desired,
        current=observation.replicas,
        total_lag=count.counted,
        reason=reason,
        inputs=inputs,
    )
    return decision, next_state


@dataclass(frozen=True, slots=True, kw_only=True)
class _Count:
    """The lag arithmetic of one sample (rules 1-3)."""

    total: int
    counted: int
    excluded: tuple[int, ...]
    wanted: int
    """ceil(counted / lag_threshold), before bounds."""
    recommendation: int
    high: int
    """The most replicas lag may ask for: max and the partition count, unless min is higher."""
    explained: str
    """`lag 260 / threshold 100 = 2.6 -> 3`, with what bounded or excluded it in parentheses."""


def _count(policy: Scaling, lags: Mapping[int, int], stuck: set[int], partitions_cap: int | None) -> _Count:
    total = sum(lags.values())
    excluded = tuple(sorted(stuck)) if policy.exclude_persistent_lag else ()
    counted = total - sum(lags[p] for p in excluded)
    cap = len(lags) if partitions_cap is None else partitions_cap
    low = max(policy.min, 1)
    high = max(min(policy.max, cap), low)
    wanted = -(-counted // policy.lag_threshold)
    recommendation = min(max(wanted, low), high)

    notes: list[str] = []
    if excluded:
        listed = ", ".join(str(p) for p in excluded)
        noun = "partition" if len(excluded) == 1 else "partitions"
        notes.append(f"{noun} {listed} excluded: persistent lag {total - counted}")
    partitions = f"{cap} partitions" if partitions_cap is None else f"the partitions cap {cap}"
    if recommendation < wanted and cap >= policy.max:
        notes.append(f"capped at max {policy.max}")
    elif recommendation < wanted and recommendation == cap:
        notes.append(f"capped at {partitions}")
    elif recommendation < wanted:
        notes.append(f"min {policy.min}, above {partitions}")
    elif recommendation > wanted and policy.min >= recommendation:
        notes.append(f"min {policy.min}")
    elif recommendation > wanted and total > counted:
        notes.append("at least 1 replica while there is lag")
    ratio = _num(counted / policy.lag_threshold, 2)
    return _Count(
        total=total,
        counted=counted,
        excluded=excluded,
        wanted=wanted,
        recommendation=recommendation,
        high=high,
        explained=f"lag {counted} / threshold {policy.lag_threshold} = {ratio} -> {wanted}{_join(notes)}",
    )


@dataclass(frozen=True, slots=True)
class _Floor:
    """The fewest replicas the incoming rate needs at the measured capacity (rule 8)."""

    replicas: int
    """0 when unknown (no capacity measured, or no rate)."""
    explained: str = ""
    """`incoming 240 ev/s needs 3 at 85 ev/s per replica`."""


def _capacity(
    observation: Observation, lag: int, state: ScalerState, *, threshold: int
) -> tuple[float | None, float | None]:
    """(saturated since, capacity): the per-replica rate of a group that was behind all along.

    Behind means at least `threshold` events waiting: a group that keeps up still
    shows a little lag (records in flight, commits every few ms), and measuring then would take
    the incoming rate for the capacity and hold every replica forever.
    """
    replicas, capacity = observation.replicas, state.capacity
    if replicas == 0 or lag < max(1, threshold):
        return None, capacity
    since = observation.at if state.saturated_since is None else state.saturated_since
    rate = observation.processed_rate
    if rate is None or rate <= 0 or observation.at - since < SATURATED_FOR:
        return since, capacity
    # The rate spans the last rates_span seconds: divided by the most replicas that ran in them,
    # a scale-out just made underestimates the capacity, which holds more replicas, never fewer.
    most = max([replicas, *(n for _, n in state.replicas)])
    measured = rate / most
    return since, measured if capacity is None else capacity + CAPACITY_WEIGHT * (measured - capacity)


def _floor(observation: Observation, capacity: float | None, high: int) -> _Floor:
    incoming = observation.incoming_rate
    if incoming is None or capacity is None or incoming <= 0:
        return _Floor(0)
    rates = [p.incoming_rate for p in sorted(observation.partitions, key=lambda p: p.partition)]
    known = [rate for rate in rates if rate is not None]
    if len(known) != len(rates):  # spread the total evenly
        known = [incoming / len(rates)] * len(rates) if rates else [incoming]
    limit = capacity * HEADROOM
    needed = next((n for n in range(1, high) if max(_range_loads(known, n)) <= limit), high)
    return _Floor(
        needed,
        f"incoming {_num(incoming)} ev/s needs {needed} at {_num(capacity)} ev/s per replica",
    )


def _range_loads(rates: Sequence[float], consumers: int) -> list[float]:
    """Each consumer's incoming rate when the range assignor spreads these partitions over them."""
    size, extra = divmod(len(rates), consumers)
    loads, start = [], 0
    for n in range(consumers):
        end = start + size + (1 if n < extra else 0)
        loads.append(sum(rates[start:end]))
        start = end
    return loads


def _choose(
    policy: Scaling,
    count: _Count,
    *,
    current: int,
    at: float,
    recent: tuple[tuple[float, int], ...],
    idle_for: float | None,
    floor: _Floor,
) -> tuple[int, str]:
    """(desired replicas, reason) by rules 4-7."""
    rec = count.recommendation
    if current == 0 and policy.min == 0:
        return _activate(policy, count)
    quiet = max(policy.cooldown, policy.stabilization)
    if policy.min == 0 and idle_for is not None and idle_for >= quiet:
        why = "cooldown" if policy.cooldown >= policy.stabilization else "stabilization window"
        return 0, f"scale to zero {current}->0: no lag for {_num(idle_for)} s ({why} {_num(quiet)} s)"
    if rec > current:
        return rec, f"scale out {current}->{rec}: {count.explained}"
    return _settle(policy, count, current=current, at=at, recent=recent, idle_for=idle_for, floor=floor)


def _activate(policy: Scaling, count: _Count) -> tuple[int, str]:
    """From zero replicas with min 0: start only above the activation threshold (rule 4)."""
    threshold = policy.activation_lag_threshold
    if count.total > threshold:
        rec = count.recommendation
        return (
            rec,
            f"scale out 0->{rec}: lag {count.total} is above the activation threshold {threshold}; "
            + (count.explained),
        )
    if count.total == 0:
        return 0, "hold 0: no lag"
    return 0, f"hold 0: lag {count.total} is not above the activation threshold {threshold}"


def _settle(
    policy: Scaling,
    count: _Count,
    *,
    current: int,
    at: float,
    recent: tuple[tuple[float, int], ...],
    idle_for: float | None,
    floor: _Floor,
) -> tuple[int, str]:
    """Running, and lag asks for no more replicas: scale in as far as the window and the
    throughput floor allow (rules 6 and 8)."""
    window, rec = policy.stabilization, count.recommendation
    desired = min(current, max([rec, floor.replicas, *(r for _, r in recent)]), count.high)
    by_floor = floor.replicas > rec and floor.replicas >= desired
    if by_floor and rec < current:
        verb = "hold " if desired == current else f"scale in {current}->"
        return desired, f"{verb}{desired}: {floor.explained} ({count.explained})"
    if desired < current:
        held = (
            f"; {desired} is the highest recommendation of the last {_num(window)} s" if desired > rec else ""
        )
        return desired, f"scale in {current}->{desired}: {count.explained}{held}"
    if rec < current:
        since = max(t for t, r in recent if r >= current)
        return current, (
            f"hold {current}: scale-in to {rec} waits for the stabilization window "
            f"({_num(at - since)} s of {_num(window)} s)"
        )
    if idle_for is not None and policy.min == 0:
        quiet = max(policy.cooldown, window)
        return current, f"hold {current}: no lag for {_num(idle_for)} s, scale to zero after {_num(quiet)} s"
    return current, f"hold {current}: {count.explained}"


def _stalls(
    observation: Observation, lags: Mapping[int, int], state: ScalerState, window: float
) -> tuple[tuple[tuple[int, int | None, float], ...], set[int]]:
    """Partitions lagging at an unchanged committed offset, and those stuck for `window` (rule 2)."""
    if observation.replicas == 0:  # nobody consumes: an offset that does not move says nothing
        return (), set()
    previous = {p: (committed, since) for p, committed, since in state.stalls}
    stalls: list[tuple[int, int | None, float]] = []
    stuck: set[int] = set()
    for p in observation.partitions:
        if lags[p.partition] == 0:
            continue
        before = previous.get(p.partition)
        if before is not None and before[0] == p.committed:
            stalls.append((p.partition, p.committed, before[1]))
            if observation.at - before[1] >= window:
                stuck.add(p.partition)
        else:
            stalls.append((p.partition, p.committed, observation.at))
    return tuple(stalls), stuck


def _join(notes: Sequence[str]) -> str:
    return f" ({'; '.join(notes)})" if notes else ""


def _num(value: float, digits: int = 1) -> str:
    """`2.6`, `100`, `12.3`: rounded, without trailing zeros or exponents."""
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")

"""Which consumed records may start now: the worker's ordering rules as a scheduler (pure).

Records are offered as they are consumed and started by `ready(now)`, at most `concurrency` in flight,
and no more record bytes in flight than `max_bytes` (at least one record, however large).
Ordering is kept per *lane*: one record of a lane runs at a time, its main-topic records in arrival
(offset) order. Lanes by `ordering`:

- ``none``: every record is its own lane; they start by arrival, across partitions.
- ``partition``: one lane per partition, shared by its main and retry records.
- ``key``: one lane per (partition, key); different keys of a partition run in parallel (SPEC §6).
  Keyless records have no order: each is its own lane.

Retry records (from the delayed-retry topics) wait in a heap until due, then start first, each when its
lane is free. In ``partition`` mode a retried event does not hold up its partition: first attempts run in
partition order and the retry rejoins later. In ``key`` mode retries keep key order: a key is *blocked*
from the moment one of its records finishes with ``retrying=True`` (its retry record will come) until a
retry record of that key finishes without retrying; blocked keys start only their retry records. A retry
record offered for a key with no known block creates one: after a crash the new owner reads the pending
retry records (with the partition held) before any main record of their keys may start.

`drop` forgets a revoked partition. Its records still in flight keep their lanes busy until they finish,
so a partition assigned back does not run a key, or the same record, twice at once; their `finished`
changes nothing else, since the blocks they knew belong to the old assignment (a generation number).
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = ["MAX_IN_FLIGHT_BYTES", "Item", "Lanes", "Ordering"]

Ordering = Literal["none", "partition", "key"]

MAX_IN_FLIGHT_BYTES = 64 << 20
"""Default bound on the `Item.size` of the records in flight: what a replica and its handler host
hold of them (a few hundred records of a fast handler, or fewer of 1 MB records, fit in it)."""


@dataclass(slots=True, eq=False)
class Item:
    """A consumed record as the scheduler sees it (one per record: not frozen, a third of the cost;
    positional arguments allowed, for the same reason).

    Compared by identity: the scheduler tracks the very objects it was offered.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    due: float = 0.0
    """Monotonic time before which a retry record must not start; main records start regardless."""
    retry: bool = False
    """Read from a delayed-retry topic."""
    payload: Any = field(default=None, compare=False)
    """The caller's own (the record, its attempt): opaque here."""
    size: int = 0
    """Bytes the record holds while in flight (its value's): what `max_bytes` counts."""


class _Part:
    """One partition number: its lanes, hold and generation."""

    __slots__ = ("generation", "held", "lanes", "waiting")

    def __init__(self) -> None:
        self.generation = 0  # bumped by drop(): flights of an older generation change no blocks
        self.held = False
        self.lanes: dict[Hashable, _Lane] = {}
        self.waiting = 0


class _Lane:
    """Records that run one at a time, and (key mode) the key's retry block."""

    __slots__ = (
        "due",
        "early",
        "flying",
        "flying_generation",
        "main",
        "name",
        "ordered",
        "part",
        "pending",
        "queued",
        "queued_retry",
        "sleeping",
        "tokens",
    )

    def __init__(self, part: _Part, name: Hashable, *, ordered: bool) -> None:
        self.part = part
        self.name = name
        self.ordered = ordered  # key mode with a key: retries block the lane
        self.main: deque[Item] = deque()  # waiting main records, arrival order
        self.due: deque[Item] = deque()  # retry records due, waiting for the lane
        self.sleeping = 0  # retry records not due yet (in the Lanes heap)
        self.flying = 0  # records of its run in flight
        self.flying_generation = 0
        self.tokens = 0  # retry records announced by finished(retrying=True), not offered yet
        self.pending = 0  # retry records offered, not finished for good
        self.early = 0  # retry records offered before the in-flight record's finished(retrying=True)
        self.queued = False  # in Lanes._runnable
        self.queued_retry = False  # in Lanes._runnable_retry

    @property
    def blocked(self) -> bool:
        return bool(self.tokens or self.pending)

    @property
    def idle(self) -> bool:
        waiting = self.main or self.due or self.sleeping
        return not self.flying and not (waiting or self.blocked or self.early)


class Lanes:
    """The records offered and not started, per lane; what is in flight; what may start now."""

    def __init__(self, ordering: Ordering, concurrency: int, *, max_bytes: int = MAX_IN_FLIGHT_BYTES) -> None:
        """`max_bytes`: no run starts that would take the sizes of the records in flight past it,
        unless nothing is in flight (a record larger than it runs alone)."""
        if ordering not in get_args(Ordering):
            raise ValueError(f"ordering must be one of none, partition, key; got {ordering!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._ordering = ordering
        self._concurrency = concurrency
        self._parts: dict[int, _Part] = {}
        self._runnable: deque[_Lane] = deque()  # lanes that may start a main record, FIFO
        self._runnable_retry: deque[_Lane] = deque()  # lanes with a retry record due: served first
        self._sleeping: list[tuple[float, int, Item, _Lane]] = []  # heap of retry records by due
        self._arrival = itertools.count()
        # By identity: after a drop the same record may be offered again while its old copy runs.
        self._flights: dict[int, tuple[Item, _Lane, int]] = {}
        self._busy = 0  # lanes with a run in flight: what `concurrency` counts
        self._max_bytes = max_bytes
        self._bytes = 0  # sizes of the records in flight: what `max_bytes` counts
        self._waiting = 0

    def allow(self, concurrency: int) -> None:
        """Let up to `concurrency` runs be in flight from the next `ready()` on."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._concurrency = concurrency

    def _part(self, partition: int) -> _Part:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Part()
        return part

    def offer(self, item: Item) -> None:
        """Take a consumed record; it starts from a later `ready()`."""
        part = self._part(item.partition)
        name: Hashable
        if self._ordering == "partition":
            name = None
        elif self._ordering == "key" and item.key is not None:
            name = item.key
        else:
            name = (item.topic, item.offset)
        lane = part.lanes.get(name)
        if lane is None:
            ordered = self._ordering == "key" and item.key is not None
            lane = part.lanes[name] = _Lane(part, name, ordered=ordered)
        part.waiting += 1
        self._waiting += 1
        if item.retry:
            if lane.ordered:
                if lane.tokens:
                    lane.tokens -= 1
                elif lane.flying and lane.flying_generation == part.generation:
                    # The in-flight record's own retry, consumed before its finished(): don't count twice.
                    lane.early += 1
                lane.pending += 1
            lane.sleeping += 1
            heapq.heappush(self._sleeping, (item.due, next(self._arrival), item, lane))
        else:
            lane.main.append(item)
            self._wake(lane)

    def offer_main(self, partition: int, items: list[Item]) -> None:
        """`offer(item)` for each of `items`: main-topic records of `partition`, in offset order."""
        part = self._part(partition)
        lanes = part.lanes
        part.waiting += len(items)
        self._waiting += len(items)
        if self._ordering == "partition":
            lane = lanes.get(None)
            if lane is None:
                lane = lanes[None] = _Lane(part, None, ordered=False)
            lane.main.extend(items)
            self._wake(lane)
            return
        keyed = self._ordering == "key"
        wake = self._wake
        for item in items:
            key = item.key
            name: Hashable = key if keyed and key is not None else (item.topic, item.offset)
            lane = lanes.get(name)
            if lane is None:
                lane = lanes[name] = _Lane(part, name, ordered=keyed and key is not None)
            lane.main.append(item)
            if not lane.queued:
                wake(lane)

    def ready(self, now: float) -> list[Item]:
        """The records to start now, marked in flight: due retry records first, then lanes by turn."""
        return [item for run in self.ready_runs(now) for item in run]

    def ready_runs(self, now: float, longest: int = 1) -> list[list[Item]]:
        """Runs to start now, marked in flight: records of one lane to run one after another.

        Due retry records first, each a run of its own; then, per lane by turn, up to `longest`
        of its main records in order. `concurrency` counts runs (lanes in flight). A run is cut
        short where its records' sizes would pass `max_bytes`; a lane whose next record does not
        fit keeps its turn until records in flight finish.
        """
        sleeping = self._sleeping
        while sleeping and sleeping[0][0] <= now:
            _, _, item, lane = heapq.heappop(sleeping)
            lane.sleeping -= 1
            lane.due.append(item)
            self._wake(lane)
        started: list[list[Item]] = []
        room = self._concurrency - self._busy
        flights = self._flights
        runnable = self._runnable_retry
        while room > 0 and runnable:
            lane = runnable[0]
            if not lane.flying and lane.due:
                item = lane.due[0]
                if item.size > self._max_bytes - self._bytes and flights:
                    return started  # it waits, first of all, for bytes in flight to finish
                lane.due.popleft()
                started.append(self._start(lane, [item], item.size))
                room -= 1
            runnable.popleft()
            lane.queued_retry = False
        runnable = self._runnable
        while room > 0 and runnable:
            lane = runnable[0]
            if self._may_start_main(lane):
                main = lane.main
                budget = self._max_bytes - self._bytes
                if main[0].size > budget and flights:
                    break  # it waits, first in turn, for bytes in flight to finish
                if longest == 1 or len(main) == 1:
                    run = [main.popleft()]
                elif len(main) <= longest:
                    run = list(main)
                    main.clear()
                else:
                    run = [main.popleft() for _ in range(longest)]
                size = sum(map(_SIZE, run))
                if size > budget and len(run) > 1:
                    run, size = _fitting(run, budget, main)
                started.append(self._start(lane, run, size))
                room -= 1
            runnable.popleft()
            lane.queued = False
        return started

    def _start(self, lane: _Lane, run: list[Item], size: int) -> list[Item]:
        part = lane.part
        generation = part.generation
        lane.flying = len(run)
        lane.flying_generation = generation
        self._busy += 1
        self._bytes += size
        part.waiting -= len(run)
        self._waiting -= len(run)
        flights = self._flights
        for item in run:
            flights[id(item)] = (item, lane, generation)
        return run

    @staticmethod
    def _may_start_main(lane: _Lane) -> bool:
        return not lane.flying and bool(lane.main) and not lane.part.held and not lane.blocked

    def _wake(self, lane: _Lane) -> None:
        """Queue a lane that can start something (at most once per queue)."""
        if lane.flying:
            return
        if lane.due:
            if not lane.queued_retry:
                lane.queued_retry = True
                self._runnable_retry.append(lane)
        elif not lane.queued and self._may_start_main(lane):
            lane.queued = True
            self._runnable.append(lane)

    def finished(self, item: Item, *, retrying: bool = False) -> None:
        """Note an in-flight record's outcome; `retrying`: it went to a retry topic (key mode blocks).

        Call it with the object `ready()` returned, no later than producing the retry record.
        """
        lane, generation = self._land(item)
        part = lane.part
        if lane.ordered and generation == part.generation:
            if item.retry:
                lane.pending -= 1
            if not retrying:
                lane.early = 0
            elif lane.early:
                lane.early -= 1
            else:
                lane.tokens += 1
        if not lane.flying:
            self._settle(lane)

    def finished_all(self, items: list[Item]) -> None:
        """`finished(item)` for each of `items` in turn, none of them retrying (a run's ok outcomes)."""
        flights = self._flights
        for item in items:
            flight = flights.pop(id(item), None)
            if flight is None or flight[0] is not item:
                raise ValueError(
                    f"{item.topic}[{item.partition}]@{item.offset} is not in flight: "
                    "pass finished() the item ready() returned, once"
                )
            _, lane, generation = flight
            lane.flying -= 1
            if lane.ordered and generation == lane.part.generation:
                if item.retry:
                    lane.pending -= 1
                lane.early = 0
            if not lane.flying:
                self._busy -= 1
                self._settle(lane)
        self._bytes -= sum(map(_SIZE, items))  # at C speed: this is a run's ok outcomes, thousands a second

    def unstart(self, items: list[Item]) -> None:
        """Put in-flight main records that did not run back at the front of their lanes, in order.

        They start again once the rest of their run has finished (and, in key mode, not before a
        retry their lane waits for). Records of a dropped partition are forgotten.
        """
        back: dict[_Lane, list[Item]] = {}
        for item in items:
            lane, generation = self._land(item)
            kept = back.setdefault(lane, [])
            if generation == lane.part.generation:
                kept.append(item)
        for lane, kept in back.items():
            if kept:
                lane.main.extendleft(reversed(kept))
                lane.part.waiting += len(kept)
                self._waiting += len(kept)
            if not lane.flying:
                self._settle(lane)

    def _land(self, item: Item) -> tuple[_Lane, int]:
        flight = self._flights.pop(id(item), None)
        if flight is None or flight[0] is not item:
            raise ValueError(
                f"{item.topic}[{item.partition}]@{item.offset} is not in flight: "
                "pass finished() the item ready() returned, once"
            )
        _, lane, generation = flight
        self._bytes -= item.size
        lane.flying -= 1
        if not lane.flying:
            self._busy -= 1
        return lane, generation

    def _settle(self, lane: _Lane) -> None:
        """A lane whose run has ended: forget it if idle, else queue what it can start."""
        part = lane.part
        if lane.idle:
            if part.lanes.get(lane.name) is lane:
                del part.lanes[lane.name]
        else:
            self._wake(lane)

    def next_due(self) -> float | None:
        """When the earliest retry record not due yet becomes due (for the poll timeout), if any."""
        return self._sleeping[0][0] if self._sleeping else None

    def hold(self, partition: int) -> None:
        """Start no main record of `partition` (catching up on its retry topics); retries still start."""
        self._part(partition).held = True

    def release(self, partition: int) -> None:
        """Undo `hold`."""
        part = self._parts.get(partition)
        if part is None or not part.held:
            return
        part.held = False
        for lane in part.lanes.values():
            self._wake(lane)

    def drop(self, partition: int) -> list[Item]:
        """Forget a revoked partition: its waiting records (returned), blocks and hold.

        Its records in flight stay counted, and keep their lanes busy, until `finished()`.
        """
        part = self._parts.get(partition)
        if part is None:
            return []
        part.generation += 1
        part.held = False
        dropped: list[Item] = []
        for name, lane in list(part.lanes.items()):
            dropped.extend(lane.main)
            dropped.extend(lane.due)
            lane.main.clear()
            lane.due.clear()
            lane.sleeping = lane.tokens = lane.pending = lane.early = 0
            if not lane.flying:
                del part.lanes[name]
        if any(entry[3].part is part for entry in self._sleeping):
            kept = []
            for entry in self._sleeping:
                if entry[3].part is part:
                    dropped.append(entry[2])
                else:
                    kept.append(entry)
            heapq.heapify(kept)
            self._sleeping = kept
        self._waiting -= part.waiting
        part.waiting = 0
        dropped.sort(key=lambda item: (item.topic, item.offset))
        return dropped

    def waiting(self, partition: int | None = None) -> int:
        """Records offered and not started, of one partition or all (for back-pressure)."""
        if partition is None:
            return self._waiting
        part = self._parts.get(partition)
        return part.waiting if part else 0

    def in_flight(self) -> int:
        """Records started and not finished (or unstarted), including those of dropped partitions."""
        return len(self._flights)

    def in_flight_bytes(self) -> int:
        """The sizes of the records `in_flight` counts, together."""
        return self._bytes


_SIZE = operator.attrgetter("size")


def _fitting(run: list[Item], budget: int, main: deque[Item]) -> tuple[list[Item], int]:
    """The first records of `run` whose sizes fit `budget` (the first one always) and their size;
    the others go back to the front of their lane's `main`."""
    size = run[0].size
    count = 1
    while count < len(run) and size + run[count].size <= budget:
        size += run[count].size
        count += 1
    main.extendleft(reversed(run[count:]))
    return run[:count], size

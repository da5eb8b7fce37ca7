"""Which consumed records may start now, per ordering mode (workers.lanes)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from workers.lanes import MAX_IN_FLIGHT_BYTES, Item, Lanes, Ordering

_offsets = itertools.count()


def main(partition: int, key: bytes | None = b"k", *, offset: int | None = None, size: int = 0) -> Item:
    """A main-topic record (offsets increase across calls unless given)."""
    return Item(
        topic="bus.fn.f",
        partition=partition,
        offset=next(_offsets) if offset is None else offset,
        key=key,
        size=size,
    )


def retry(partition: int, key: bytes | None = b"k", *, due: float = 0.0, size: int = 0) -> Item:
    """A record of the first delayed-retry topic."""
    return Item(
        topic="bus.fn.f.retry.1",
        partition=partition,
        offset=next(_offsets),
        key=key,
        due=due,
        retry=True,
        size=size,
    )


def offered(lanes: Lanes, *items: Item) -> list[Item]:
    for item in items:
        lanes.offer(item)
    return list(items)


def test_none_starts_by_arrival_up_to_the_concurrency() -> None:
    """Without ordering, records start oldest first across partitions, never more than `concurrency`."""
    lanes = Lanes("none", concurrency=3)
    a, b, c, d = offered(lanes, main(0), main(1), main(0), main(0))
    assert lanes.ready(0) == [a, b, c]
    assert lanes.ready(0) == []
    lanes.finished(b)
    assert lanes.ready(0) == [d]
    assert lanes.in_flight() == 3
    assert lanes.waiting() == 0


def test_runs_take_a_lanes_waiting_records_in_order_and_count_once() -> None:
    """ready_runs starts up to `longest` of a lane's records as one run; concurrency counts runs."""
    lanes = Lanes("partition", concurrency=2)
    a, b, c, d = offered(lanes, main(0), main(0), main(0), main(1))
    e = offered(lanes, main(2))[0]
    assert lanes.ready_runs(0, longest=2) == [[a, b], [d]]
    assert lanes.ready_runs(0, longest=2) == []  # two runs in flight: e waits
    lanes.finished(a)
    assert lanes.ready_runs(0, longest=2) == []  # b still runs: the lane is busy, and so is the room
    lanes.finished(b)
    assert lanes.ready_runs(0, longest=2) == [[e]]  # in turn: c's lane waits behind e's
    lanes.finished(d)
    assert lanes.ready_runs(0, longest=2) == [[c]]


def test_unstarted_records_go_back_in_front_in_order() -> None:
    """Records of a run that did not run start again first, in offset order, once the run has ended."""
    lanes = Lanes("key", concurrency=4)
    a, b, c, d = offered(lanes, main(0), main(0), main(0), main(0))
    assert lanes.ready_runs(0, longest=3) == [[a, b, c]]
    lanes.finished(a, retrying=True)
    lanes.unstart([b, c])
    assert lanes.waiting() == 3
    assert lanes.ready_runs(0, longest=3) == []  # the key waits for a's retry
    again = offered(lanes, retry(0))[0]
    assert lanes.ready_runs(0, longest=3) == [[again]]
    lanes.finished(again)
    assert lanes.ready_runs(0, longest=3) == [[b, c, d]]


def test_partition_runs_one_record_per_partition_in_offset_order() -> None:
    """In partition mode a partition's records run one at a time, by offset; partitions in parallel."""
    lanes = Lanes("partition", concurrency=10)
    a, b, c = offered(lanes, main(0, b"x"), main(0, b"y"), main(1, b"x"))
    assert lanes.ready(0) == [a, c]
    lanes.finished(a)
    assert lanes.ready(0) == [b]


def test_partition_retries_do_not_hold_up_the_partition_and_go_first_when_due() -> None:
    """A retried event rejoins its partition later; when due it goes ahead of waiting records."""
    lanes = Lanes("partition", concurrency=10)
    a, b, c = offered(lanes, main(0), main(0), main(0))
    assert lanes.ready(0) == [a]
    lanes.finished(a, retrying=True)
    assert lanes.ready(0) == [b]
    again = retry(0, due=5.0)
    lanes.offer(again)
    assert lanes.next_due() == 5.0
    lanes.finished(b)
    assert lanes.ready(4.9) == [c]
    lanes.finished(c)
    assert lanes.ready(5.0) == [again]


def test_key_runs_keys_in_parallel_and_each_key_in_offset_order() -> None:
    """In key mode a partition's keys run in parallel (beyond the partition count), each in order."""
    lanes = Lanes("key", concurrency=10)
    x1, y1, x2, y2 = offered(lanes, main(0, b"x"), main(0, b"y"), main(0, b"x"), main(0, b"y"))
    assert lanes.ready(0) == [x1, y1]
    lanes.finished(y1)
    assert lanes.ready(0) == [y2]
    lanes.finished(x1)
    assert lanes.ready(0) == [x2]


def test_keyless_records_have_no_order() -> None:
    """Records without a key are each their own lane."""
    lanes = Lanes("key", concurrency=10)
    records = offered(lanes, main(0, None), main(0, None), main(0, None))
    assert lanes.ready(0) == records


def test_a_retrying_key_waits_for_its_retry_and_others_flow() -> None:
    """A failing key stalls only itself until its retry succeeds (RELIABILITY promise)."""
    lanes = Lanes("key", concurrency=10)
    x1, x2, y1 = offered(lanes, main(0, b"x"), main(0, b"x"), main(0, b"y"))
    assert lanes.ready(0) == [x1, y1]
    lanes.finished(x1, retrying=True)
    assert lanes.ready(0) == []  # x2 waits for x1's retry record, not offered yet
    x1_again = retry(0, b"x", due=10.0)
    lanes.offer(x1_again)
    y2 = main(0, b"y")
    lanes.offer(y2)
    assert lanes.ready(5.0) == []  # y is still running y1
    lanes.finished(y1)
    assert lanes.ready(5.0) == [y2]
    assert lanes.ready(10.0) == [x1_again]
    lanes.finished(x1_again)
    assert lanes.ready(10.0) == [x2]


def test_a_retry_that_retries_again_keeps_the_key_blocked() -> None:
    """Only a retry that finishes for good (success, or dead letter) unblocks its key."""
    lanes = Lanes("key", concurrency=10)
    x1, x2 = offered(lanes, main(0, b"x"), main(0, b"x"))
    assert lanes.ready(0) == [x1]
    lanes.finished(x1, retrying=True)
    first = retry(0, b"x")
    lanes.offer(first)
    assert lanes.ready(0) == [first]
    lanes.finished(first, retrying=True)
    assert lanes.ready(0) == []
    second = Item(topic="bus.fn.f.retry.2", partition=0, offset=0, key=b"x", due=1.0, retry=True)
    lanes.offer(second)
    assert lanes.ready(1.0) == [second]
    lanes.finished(second)
    assert lanes.ready(1.0) == [x2]


def test_a_retry_record_found_after_a_crash_blocks_its_key() -> None:
    """A retry record offered with no known block creates one: the key's later records wait for it."""
    lanes = Lanes("key", concurrency=10)
    lanes.hold(0)  # the caller reads the retry topics' pending records first
    pending = retry(0, b"x", due=3.0)
    x2, y2 = offered(lanes, pending, main(0, b"x"), main(0, b"y"))[1:]
    lanes.release(0)
    assert lanes.ready(0) == [y2]
    assert lanes.ready(3.0) == [pending]
    lanes.finished(pending)
    assert lanes.ready(3.0) == [x2]


def test_a_retry_record_consumed_before_its_finished_call_does_not_stall_the_key() -> None:
    """If the retry record arrives before finished(retrying=True), the key still unblocks after it."""
    lanes = Lanes("key", concurrency=10)
    x1, x2 = offered(lanes, main(0, b"x"), main(0, b"x"))
    assert lanes.ready(0) == [x1]
    x1_again = retry(0, b"x")
    lanes.offer(x1_again)
    lanes.finished(x1, retrying=True)
    assert lanes.ready(0) == [x1_again]
    lanes.finished(x1_again)
    assert lanes.ready(0) == [x2]


def test_held_partitions_start_only_retries() -> None:
    """hold() stops main records of a partition (recovery catch-up); its due retries still start."""
    lanes = Lanes("partition", concurrency=10)
    lanes.hold(0)
    a, b, c = offered(lanes, main(0), main(1), retry(0))
    assert lanes.ready(0) == [c, b]
    lanes.finished(c)
    assert lanes.ready(0) == []
    lanes.release(0)
    assert lanes.ready(0) == [a]


def test_nothing_starts_before_it_is_due() -> None:
    """Retry records wait for their due time; next_due() says when to look again."""
    lanes = Lanes("none", concurrency=10)
    late, early = offered(lanes, retry(0, due=9.0), retry(1, due=4.0))
    assert lanes.next_due() == 4.0
    assert lanes.ready(3.9) == []
    assert lanes.ready(4.0) == [early]
    assert lanes.next_due() == 9.0
    assert lanes.ready(9.5) == [late]
    assert lanes.next_due() is None


def test_a_partitions_due_retry_and_waiting_record_do_not_run_together() -> None:
    """In partition mode a lane that waited for room starts its due retry, then nothing else of it."""
    lanes = Lanes("partition", concurrency=2)
    x, y, a = offered(lanes, main(1), main(2), main(0))
    assert lanes.ready(0) == [x, y]
    again = retry(0)
    lanes.offer(again)
    lanes.finished(x)
    lanes.finished(y)
    assert lanes.ready(0) == [again]
    lanes.finished(again)
    assert lanes.ready(0) == [a]


def test_due_retries_go_before_waiting_records() -> None:
    """When capacity frees, a due retry starts before main records that waited longer."""
    lanes = Lanes("key", concurrency=1)
    a, _, c = offered(lanes, main(0, b"a"), main(0, b"b"), retry(0, b"c"))
    assert lanes.ready(0) == [c]
    lanes.finished(c)
    assert lanes.ready(0) == [a]


def test_waiting_counts_records_not_started() -> None:
    """waiting() counts offered records not started, per partition or in total."""
    lanes = Lanes("key", concurrency=1)
    offered(lanes, main(0), main(0), main(1), retry(1, due=5.0))
    lanes.ready(0)
    assert (lanes.waiting(0), lanes.waiting(1), lanes.waiting(7), lanes.waiting()) == (1, 2, 0, 3)


def test_drop_forgets_a_partition_and_keeps_counting_its_flights() -> None:
    """drop() returns the waiting records; records in flight count until finished, which is harmless."""
    lanes = Lanes("key", concurrency=10)
    a, b, c, d, e = offered(
        lanes, main(0, b"x"), main(0, b"x"), retry(0, b"y", due=9.0), main(1), main(0, b"z")
    )
    assert lanes.ready(0) == [a, d, e]
    lanes.finished(e, retrying=True)
    assert lanes.drop(0) == sorted([b, c], key=lambda item: (item.topic, item.offset))
    assert lanes.waiting(0) == 0
    assert lanes.in_flight() == 2
    assert lanes.next_due() is None
    z2 = main(0, b"z")
    lanes.offer(z2)  # assigned again: the old block of z is forgotten
    assert lanes.ready(0) == [z2]
    lanes.finished(a, retrying=True)
    assert lanes.in_flight() == 2
    assert lanes.drop(5) == []


def test_a_record_of_a_dropped_partition_keeps_its_lane_until_it_finishes() -> None:
    """Assigned back, a key does not run twice at once, and the old flight's end unblocks nothing new."""
    lanes = Lanes("key", concurrency=10)
    lanes.hold(0)
    old = retry(0, b"x")
    lanes.offer(old)
    assert lanes.ready(0) == [old]
    lanes.drop(0)
    lanes.hold(0)
    again = Item(topic=old.topic, partition=0, offset=old.offset, key=b"x", retry=True)
    x2 = main(0, b"x")
    offered(lanes, again, x2)
    lanes.release(0)
    assert lanes.ready(0) == []  # the old copy of the retry still runs
    lanes.finished(old)
    assert lanes.ready(0) == [again]  # not x2: the new assignment's block stands
    lanes.finished(again)
    assert lanes.ready(0) == [x2]


def test_finished_takes_only_items_in_flight() -> None:
    """finished() of a record not started (or finished twice) is a caller bug."""
    lanes = Lanes("none", concurrency=1)
    (a,) = offered(lanes, main(0))
    with pytest.raises(ValueError, match="not in flight"):
        lanes.finished(a)
    lanes.ready(0)
    lanes.finished(a)
    with pytest.raises(ValueError, match="not in flight"):
        lanes.finished(a)


def test_no_run_starts_past_the_byte_budget() -> None:
    """Runs start while their records' sizes fit `max_bytes` beside those in flight; the rest wait."""
    lanes = Lanes("key", concurrency=10, max_bytes=100)
    a, b, c = offered(lanes, main(0, b"a", size=60), main(0, b"b", size=30), main(0, b"c", size=30))
    (d,) = offered(lanes, main(1, b"d"))
    assert lanes.ready_runs(0) == [[a], [b]]
    assert lanes.in_flight_bytes() == 90
    assert lanes.ready_runs(0) == []  # c does not fit, and d, behind it in turn, waits too
    lanes.finished(a)
    assert lanes.ready_runs(0) == [[c], [d]]
    lanes.finished_all([b, c, d])
    assert lanes.in_flight_bytes() == 0


def test_a_record_larger_than_the_byte_budget_runs_alone() -> None:
    """A record over `max_bytes` waits for what is in flight, then starts alone: one always may."""
    lanes = Lanes("none", concurrency=10, max_bytes=100)
    a, huge, b = offered(lanes, main(0, size=10), main(0, size=500), main(0, size=10))
    assert lanes.ready_runs(0) == [[a]]
    lanes.finished(a)
    assert lanes.ready_runs(0) == [[huge]]
    assert lanes.in_flight_bytes() == 500
    assert lanes.ready_runs(0) == []
    lanes.finished(huge)
    assert lanes.ready_runs(0) == [[b]]


def test_a_run_is_cut_where_its_records_pass_the_byte_budget() -> None:
    """A lane's run takes its records in order only as far as they fit; the rest start in a later run."""
    lanes = Lanes("partition", concurrency=4, max_bytes=100)
    a, b, c, d = offered(lanes, *(main(0, size=40) for _ in range(4)))
    assert lanes.ready_runs(0, longest=4) == [[a, b]]
    assert lanes.waiting() == 2
    lanes.finished_all([a, b])
    assert lanes.ready_runs(0, longest=4) == [[c, d]]


def test_a_due_retry_that_does_not_fit_holds_back_later_records() -> None:
    """A large retry record due waits for bytes in flight to finish; smaller main records do not pass it."""
    lanes = Lanes("key", concurrency=10, max_bytes=100)
    (a,) = offered(lanes, main(0, b"a", size=60))
    assert lanes.ready_runs(0) == [[a]]
    r, small = offered(lanes, retry(0, b"r", size=90), main(0, b"s", size=10))
    assert lanes.ready_runs(1.0) == []
    lanes.finished(a)
    assert lanes.ready_runs(1.0) == [[r], [small]]


def test_unstarted_and_finished_records_give_their_bytes_back() -> None:
    """Every way a record leaves the flight (finished, unstarted) takes its size off the bytes in flight."""
    lanes = Lanes("key", concurrency=4, max_bytes=100)
    a, b, c = offered(lanes, main(0, b"k", size=30), main(0, b"k", size=30), main(0, b"k", size=30))
    assert lanes.ready_runs(0, longest=3) == [[a, b, c]]
    lanes.finished(a)
    lanes.unstart([b, c])
    assert lanes.in_flight_bytes() == 0
    assert lanes.ready_runs(0, longest=3) == [[b, c]]


def test_settings_are_checked() -> None:
    """An unknown ordering or a concurrency below 1 is refused with the allowed values."""
    with pytest.raises(ValueError, match="none, partition, key"):
        Lanes("keys", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        Lanes("key", 0)


KEYS = [b"a", b"b", b"c", None]


class LanesMachine(RuleBasedStateMachine):
    """Random offers, finishes (some retrying), holds and drops, against a model of the ordering rules."""

    @initialize(
        ordering=st.sampled_from(["none", "partition", "key"]),
        concurrency=st.integers(1, 4),
        # The default budget, or one a few records (sizes 0-6) reach: the byte bound is then met often.
        max_bytes=st.one_of(st.just(MAX_IN_FLIGHT_BYTES), st.integers(1, 12)),
    )
    def start(self, ordering: Ordering, concurrency: int, max_bytes: int) -> None:
        self.ordering = ordering
        self.concurrency = concurrency
        self.max_bytes = max_bytes
        self.lanes = Lanes(ordering, concurrency, max_bytes=max_bytes)
        self.now = 0.0
        self.offsets = itertools.count()
        self.generation = {0: 0, 1: 0}
        self.held: set[int] = set()
        self.waiting: dict[int, Item] = {}  # by id(): offered, not started, not dropped
        self.flights: dict[int, tuple[Item, int]] = {}  # by start number: item and its generation
        self.started: list[Item] = []
        self.announced: list[tuple[int, bytes | None]] = []  # retry records to offer (partition, key)
        self.open_retries: dict[tuple[int, bytes | None], int] = {}  # offered, not finished for good
        self.last_main: dict[object, int] = {}

    def item(self, partition: int, key: bytes | None, *, retry: bool = False, due: float = 0.0) -> Item:
        topic = "bus.fn.f.retry.1" if retry else "bus.fn.f"
        offset = next(self.offsets)
        return Item(
            topic=topic, partition=partition, offset=offset, key=key, due=due, retry=retry, size=offset % 7
        )

    def offer(self, item: Item) -> None:
        self.lanes.offer(item)
        self.waiting[id(item)] = item
        if item.retry:
            lane = (item.partition, item.key)
            self.open_retries[lane] = self.open_retries.get(lane, 0) + 1

    def blocked(self, partition: int, key: bytes | None) -> bool:
        """Key mode: a key waits from the retrying outcome until its retry record finishes for good."""
        lane = (partition, key)
        return self.open_retries.get(lane, 0) > 0 or lane in self.announced

    @rule(partition=st.integers(0, 1), key=st.sampled_from(KEYS))
    def offer_main(self, partition: int, key: bytes | None) -> None:
        self.offer(self.item(partition, key))

    @precondition(lambda self: self.announced)
    @rule(data=st.data(), delay=st.sampled_from([0.0, 1.0, 2.5]))
    def offer_announced_retry(self, data: st.DataObject, delay: float) -> None:
        partition, key = self.announced.pop(data.draw(st.integers(0, len(self.announced) - 1)))
        self.offer(self.item(partition, key, retry=True, due=self.now + delay))

    @rule(partition=st.integers(0, 1), key=st.sampled_from(KEYS), delay=st.sampled_from([0.0, 2.0]))
    def offer_pending_retry_after_a_crash(self, partition: int, key: bytes | None, delay: float) -> None:
        """A retry record the lanes heard nothing of (read on recovery, before this key ran again)."""
        generation = self.generation[partition]
        if any((i.partition, i.key, g) == (partition, key, generation) for i, g in self.flights.values()):
            return  # not a recovery: with this key running, lanes take it for the flight's own retry
        self.offer(self.item(partition, key, retry=True, due=self.now + delay))

    @rule(advance=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    def ready(self, advance: float) -> None:
        self.now += advance
        for item in self.lanes.ready(self.now):
            assert self.waiting.pop(id(item)) is item
            if item.retry:
                assert item.due <= self.now
            else:
                assert item.partition not in self.held
                lane = self.lane_of(item)
                if lane is not None:
                    assert self.last_main.get(lane, -1) < item.offset
                    self.last_main[lane] = item.offset
                if self.ordering == "key" and item.key is not None:
                    assert not self.blocked(item.partition, item.key)
            self.flights[len(self.started)] = (item, self.generation[item.partition])
            self.started.append(item)
        # No room left unused: a free thread and a record the rules let start means it started,
        # unless the byte budget holds it (then only while something is in flight to give bytes back).
        room = self.lanes.in_flight() < self.concurrency
        if room and (not self.flights or self.max_bytes == MAX_IN_FLIGHT_BYTES):
            assert not [item for item in self.waiting.values() if self.startable(item)]

    def startable(self, item: Item) -> bool:
        """Whether the rules let a waiting record start now (ready() must not leave room unused)."""
        lane = self.lane_of(item)
        if lane is not None and any(self.lane_of(flight) == lane for flight, _ in self.flights.values()):
            return False
        if item.retry:
            return item.due <= self.now
        if item.partition in self.held:
            return False
        if self.ordering == "key" and item.key is not None and self.blocked(item.partition, item.key):
            return False
        return lane is None or item.offset == min(
            other.offset for other in self.waiting.values() if not other.retry and self.lane_of(other) == lane
        )

    @precondition(lambda self: self.flights)
    @rule(data=st.data(), retrying=st.booleans(), early=st.booleans())
    def finish(self, data: st.DataObject, retrying: bool, early: bool) -> None:
        """Finish a flight; when retrying, its retry record is announced (or, early, offered first)."""
        item, generation = self.flights.pop(data.draw(st.sampled_from(sorted(self.flights))))
        current = generation == self.generation[item.partition]
        lane = (item.partition, item.key)
        if current and retrying and early:
            self.offer(self.item(item.partition, item.key, retry=True, due=self.now + 1.0))
        self.lanes.finished(item, retrying=retrying)
        if current and item.retry:
            self.open_retries[lane] -= 1
        if current and retrying and not early:
            self.announced.append(lane)

    @rule(partition=st.integers(0, 1))
    def hold(self, partition: int) -> None:
        self.lanes.hold(partition)
        self.held.add(partition)

    @rule(partition=st.integers(0, 1))
    def release(self, partition: int) -> None:
        self.lanes.release(partition)
        self.held.discard(partition)

    @rule(partition=st.integers(0, 1))
    def drop(self, partition: int) -> None:
        dropped = self.lanes.drop(partition)
        expected = {i for i, item in self.waiting.items() if item.partition == partition}
        assert {id(item) for item in dropped} == expected
        for i in expected:
            del self.waiting[i]
        self.generation[partition] += 1
        self.held.discard(partition)
        self.announced = [lane for lane in self.announced if lane[0] != partition]
        self.open_retries = {lane: n for lane, n in self.open_retries.items() if lane[0] != partition}

    @invariant()
    def within_limits(self) -> None:
        lanes = self.lanes
        assert lanes.in_flight() == len(self.flights) <= self.concurrency
        in_flight = [item for item, _ in self.flights.values()]
        assert lanes.in_flight_bytes() == sum(item.size for item in in_flight)
        # Past the budget only while one record, however large, runs alone.
        assert lanes.in_flight_bytes() <= self.max_bytes or len(in_flight) == 1
        assert lanes.waiting() == len(self.waiting)
        for partition in (0, 1):
            assert lanes.waiting(partition) == sum(i.partition == partition for i in self.waiting.values())
        busy = [self.lane_of(item) for item, _ in self.flights.values()]
        busy = [lane for lane in busy if lane is not None]
        assert len(busy) == len(set(busy))

    def lane_of(self, item: Item) -> object:
        """The lane a flight occupies alone (None: no order)."""
        if self.ordering == "partition":
            return item.partition
        if self.ordering == "key" and item.key is not None:
            return (item.partition, item.key)
        return None

    def teardown(self) -> None:
        """Liveness: finishing everything (retries succeeding) starts every record offered."""
        if not hasattr(self, "lanes"):
            return
        for partition in (0, 1):
            self.release(partition)
        for _ in range(200):
            while self.announced:
                self.offer_announced_retry_now()
            self.ready(advance=10.0)
            if not self.flights and not self.waiting:
                break
            for key in sorted(self.flights):
                item, generation = self.flights.pop(key)
                self.lanes.finished(item)
                if item.retry and generation == self.generation[item.partition]:
                    self.open_retries[(item.partition, item.key)] -= 1
        assert not self.waiting
        assert self.lanes.waiting() == 0
        assert self.lanes.in_flight() == 0
        assert self.lanes.next_due() is None

    def offer_announced_retry_now(self) -> None:
        partition, key = self.announced.pop(0)
        self.offer(self.item(partition, key, retry=True, due=self.now))


LanesMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLanesMachine = LanesMachine.TestCase


def test_unstarting_records_of_several_lanes_puts_each_back_in_its_own() -> None:
    """Records unstarted together go back to their own keys' lanes, each lane in its own order."""
    lanes = Lanes("key", concurrency=4)
    x1, y1, x2, y2 = offered(lanes, main(0, b"x"), main(0, b"y"), main(0, b"x"), main(0, b"y"))
    assert lanes.ready_runs(0, longest=2) == [[x1, x2], [y1, y2]]
    lanes.unstart([x1, x2, y1, y2])
    assert lanes.ready_runs(0, longest=2) == [[x1, x2], [y1, y2]]


@pytest.mark.parametrize("ordering", ["none", "partition", "key"])
@settings(max_examples=50, deadline=None)
@given(
    keys=st.lists(st.sampled_from([b"a", b"b", b"c", None]), max_size=30),
    longest=st.integers(1, 5),
    concurrency=st.integers(1, 4),
)
def test_offer_main_is_offer_of_each_in_turn(
    ordering: Ordering, keys: list[bytes | None], longest: int, concurrency: int
) -> None:
    """Offering a partition's main records at once starts the same runs, finished the same way."""
    one, many = Lanes(ordering, concurrency), Lanes(ordering, concurrency)
    ones = [main(0, key, offset=n) for n, key in enumerate(keys)]
    manys = [main(0, key, offset=n) for n, key in enumerate(keys)]
    offered(one, *ones)
    many.offer_main(0, manys)
    while True:
        got_one, got_many = one.ready_runs(0.0, longest), many.ready_runs(0.0, longest)
        assert [[i.offset for i in run] for run in got_one] == [[i.offset for i in run] for run in got_many]
        assert one.waiting() == many.waiting() == one.waiting(0)
        if not got_one:
            break
        for run in got_one:
            for item in run:
                one.finished(item)
        for run in got_many:
            many.finished_all(run)
    assert one.waiting() == many.waiting() == 0
    assert one.in_flight() == many.in_flight() == 0

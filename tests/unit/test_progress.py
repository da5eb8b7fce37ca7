"""Offsets of one partition: what to commit and what is done above it (workers.progress)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from workers.progress import FULL_AT, MAX_METADATA, Progress


def consumed(start: int, offsets: list[int], *, finished: set[int]) -> Progress:
    """A Progress that consumed `offsets` and finished those in `finished`."""
    progress = Progress(start)
    for offset in offsets:
        progress.add(offset)
    for offset in finished:
        progress.finish(offset)
    return progress


def done_offsets(ranges: tuple[range, ...]) -> set[int]:
    return {offset for span in ranges for offset in span}


def test_committable_is_the_lowest_unfinished_offset() -> None:
    """Records finished above an unfinished one do not move the commit past it (R11)."""
    progress = consumed(0, list(range(5)), finished={1, 2, 4})
    assert progress.committable == 0
    progress.finish(0)
    assert progress.committable == 3
    assert progress.unfinished == 1


def test_everything_finished_commits_past_the_highest_offset() -> None:
    """With nothing unfinished the commit is the next offset to read, and there is no metadata."""
    progress = consumed(7, [7, 8, 9], finished={7, 8, 9})
    assert progress.committable == 10
    assert progress.metadata() == ""


def test_nothing_consumed_commits_the_start() -> None:
    """A fresh partition commits where it started."""
    progress = Progress(42)
    assert progress.committable == 42
    assert progress.metadata() == ""
    assert not progress.metadata_full


def test_offsets_never_consumed_between_records_count_as_finished() -> None:
    """Compacted offsets and transaction markers do not hold the commit back."""
    progress = consumed(10, [10, 12, 15], finished={10, 12})
    assert progress.committable == 15
    progress.finish(15)
    assert progress.committable == 16


def test_metadata_records_the_finished_runs_above_the_commit() -> None:
    """Runs of unfinished and finished offsets from the committable one, in base 36."""
    progress = consumed(0, list(range(10)), finished={0, 1, 3, 4, 5, 7, 8, 9})
    assert progress.committable == 2
    assert progress.metadata() == "p1:2:1,3,1,3"
    assert Progress.decode(2, "p1:2:1,3,1,3") == (range(3, 6), range(7, 10))


def test_a_long_finished_stretch_with_one_hole_stays_small() -> None:
    """One slow record under 100,000 finished ones costs a few characters."""
    progress = Progress(0)
    for offset in range(100_001):
        progress.add(offset)
        if offset != 5:
            progress.finish(offset)
    assert progress.committable == 5
    assert progress.metadata() == "p1:5:1,255n"  # 99,995 = 255n in base 36
    assert progress.unfinished == 1
    assert not progress.metadata_full
    assert len(progress._order) < 100  # memory follows the unfinished records, not the finished ones


def test_a_new_owner_skips_what_was_finished_and_runs_the_rest() -> None:
    """After a crash the next owner re-runs only the unfinished records (R2: no duplicate results)."""
    before = consumed(0, list(range(10)), finished={0, 1, 3, 4, 5, 7, 8, 9})
    after = Progress.resume(before.committable, before.metadata())
    assert after.committable == 2
    assert [offset for offset in range(2, 10) if not after.is_done(offset)] == [2, 6]
    after.add(2)
    after.finish(2)
    assert after.committable == 6  # 3-5 were done before: no need to consume them again to commit
    after.add(6)
    after.finish(6)
    assert after.committable == 10
    assert not after.is_done(10)


def test_adding_an_offset_done_before_keeps_it_done() -> None:
    """A caller may add a record it skips: it counts as finished, not as work."""
    progress = Progress(2, [range(3, 6)])
    progress.add(2)
    progress.add(3)
    assert progress.unfinished == 1
    assert progress.is_done(3)
    progress.finish(3)  # harmless
    progress.finish(2)
    assert progress.committable == 6


def test_done_offsets_are_normalised() -> None:
    """Done offsets below the start are ignored; overlapping ones merge; ints and ranges mix."""
    progress = Progress(10, [3, range(8, 12), 13, range(12, 14), range(20, 25, 2)])
    done = [offset for offset in range(30) if progress.is_done(offset)]
    assert done == [*range(14), 20, 22, 24]  # below 10: committed already
    assert progress.committable == 14


def test_offsets_must_increase() -> None:
    """Adding an offset at or below one already added (or below the start) is a caller bug."""
    progress = consumed(5, [5, 6], finished=set())
    with pytest.raises(ValueError, match="must increase"):
        progress.add(6)
    with pytest.raises(ValueError, match="must increase"):
        Progress(5).add(4)


def test_finishing_twice_is_harmless_and_finishing_the_unknown_is_an_error() -> None:
    """finish() is idempotent; an offset never added is a caller bug."""
    progress = consumed(0, [0, 1], finished={0})
    progress.finish(0)
    assert progress.committable == 1
    with pytest.raises(ValueError, match="never added"):
        progress.finish(2)
    with pytest.raises(ValueError, match=">= 0"):
        Progress(-1)


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "",
        "x",
        "p1:",
        "p1:2",
        "p1:2:",
        "p1:2:1",
        "p1:2:1,3,1",
        "p1:2:0,3",
        "p1:2:1,0",
        "p1:2:1,-3",
        "p1:2:1, 3",
        "p1:2:1,+3",
        "p1:2:1,3,",
        "p1:2:1_0,3",
        "p1:2:A,3",
        "p1:3:1,3",  # written for another offset: an offset reset kept the string
        "p2:2:1,3",  # a version this code does not know
        "p1:2:" + "z" * 14 + ",1",
    ],
)
def test_unexpected_metadata_means_nothing_is_done(metadata: str | None) -> None:
    """Unreadable metadata decodes to nothing done: re-running is safe, skipping wrongly is not."""
    assert Progress.decode(2, metadata) == ()


@settings(max_examples=200)
@given(st.text(max_size=40), st.integers(0, 50))
def test_decode_never_raises(text: str, committed: int) -> None:
    """Any string decodes without raising, to ranges at or above the committed offset."""
    for metadata in (text, "p1:" + text, f"p1:{committed}:" + text):
        for span in Progress.decode(committed, metadata):
            assert span.start > committed
            assert len(span) > 0


def test_many_holes_fill_the_metadata_and_never_overflow_it() -> None:
    """metadata_full flips before MAX_METADATA; past it metadata() drops runs, never claims more."""
    progress = Progress(0)
    offset = 0
    while not progress.metadata_full:
        progress.add(offset)
        progress.add(offset + 1)
        progress.finish(offset + 1)
        offset += 2
        assert offset < 10_000
    assert FULL_AT // 2 < len(progress.metadata()) < FULL_AT  # the estimate errs on the safe side
    unfinished = set(range(0, offset, 2))
    for _ in range(1_000):  # records already taken keep finishing out of order, splitting runs
        progress.add(offset)
        progress.add(offset + 1)
        progress.finish(offset)
        unfinished.add(offset + 1)
        offset += 2
    metadata = progress.metadata()
    assert len(metadata) <= MAX_METADATA
    claimed = done_offsets(Progress.decode(progress.committable, metadata))
    assert claimed
    assert not claimed & unfinished


@settings(max_examples=60)
@given(
    start=st.integers(0, 100),
    gaps=st.lists(st.integers(0, 3), min_size=1, max_size=60),
    finished=st.sets(st.integers(0, 59)),
    skip_adds=st.booleans(),
)
def test_resumed_progress_runs_exactly_the_unfinished_records(
    start: int, gaps: list[int], finished: set[int], skip_adds: bool
) -> None:
    """The next owner re-runs the records not finished, none that were, and ends where the first would."""
    offsets: list[int] = []
    position = start
    for gap in gaps:
        position += gap
        offsets.append(position)
        position += 1
    done = {offsets[index] for index in finished if index < len(offsets)}
    before = consumed(start, offsets, finished=done)
    after = Progress.resume(before.committable, before.metadata())
    ran = []
    for offset in offsets:
        if offset < after.committable:
            continue
        if after.is_done(offset):
            if not skip_adds:
                after.add(offset)
            continue
        after.add(offset)
        ran.append(offset)
    for offset in ran:
        after.finish(offset)
    assert ran == [offset for offset in offsets if offset not in done]
    assert after.committable == offsets[-1] + 1


class ProgressMachine(RuleBasedStateMachine):
    """Random adds and finishes against a model: the set of unfinished offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.start = 17
        self.progress = Progress(self.start)
        self.high = self.start
        self.unfinished: set[int] = set()
        self.last = self.start

    @rule(gap=st.integers(0, 3), count=st.integers(1, 4))
    def add(self, gap: int, count: int) -> None:
        first = self.high + gap
        for offset in range(first, first + count):
            self.progress.add(offset)
            self.unfinished.add(offset)
        self.high = first + count

    @precondition(lambda self: self.unfinished)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        offset = data.draw(st.sampled_from(sorted(self.unfinished)))
        self.progress.finish(offset)
        self.unfinished.discard(offset)

    @invariant()
    def commit_stops_at_the_lowest_unfinished_offset(self) -> None:
        committable = self.progress.committable
        assert committable == min(self.unfinished, default=self.high)
        assert committable >= self.last
        self.last = committable
        assert self.progress.unfinished == len(self.unfinished)

    @invariant()
    def metadata_says_what_is_finished_above_the_commit(self) -> None:
        committable, metadata = self.progress.committable, self.progress.metadata()
        finished = {o for o in range(committable, self.high) if o not in self.unfinished}
        assert done_offsets(Progress.decode(committable, metadata)) == finished
        assert len(metadata) <= MAX_METADATA
        assert self.progress.metadata_full or len(metadata) < FULL_AT

    @invariant()
    def a_new_owner_knows_what_is_done(self) -> None:
        committable = self.progress.committable
        after = Progress.resume(committable, self.progress.metadata())
        assert after.committable == committable
        for offset in range(self.start, self.high + 2):
            expected = offset < self.high and offset not in self.unfinished
            assert self.progress.is_done(offset) == expected
            assert after.is_done(offset) == expected


ProgressMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestProgressMachine = ProgressMachine.TestCase


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.randoms(use_true_random=False))
def test_finish_all_is_finish_of_each(finish: list[bool], random: object) -> None:
    """Finishing a list of offsets at once leaves the same commit, metadata and bounds as one by one."""
    offsets = list(range(10, 10 + len(finish)))
    done = [offset for offset, flag in zip(offsets, finish, strict=True) if flag]
    random.shuffle(done)  # type: ignore[attr-defined]  # a random.Random
    one, many = consumed(10, offsets, finished=set()), consumed(10, offsets, finished=set())
    for offset in done:
        one.finish(offset)
    many.finish_all(done)
    assert (one.committable, one.metadata(), one.unfinished, one.metadata_full) == (
        many.committable,
        many.metadata(),
        many.unfinished,
        many.metadata_full,
    )

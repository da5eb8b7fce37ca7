"""Offsets of one consumed partition: what is safe to commit, and what is already done above it (pure).

Handlers finish out of order (key-parallel processing, SPEC §6), but Kafka keeps one committed offset
per partition: the next record to read. Committing past an unfinished record would lose it in a crash
(RELIABILITY R11), so `committable` is the lowest record not finished yet. The records finished above it
must not run again either: their outcomes were produced in the transaction that commits the offset, so a
re-run would publish duplicate results (R2). They travel in the offset commit's metadata string, and the
partition's next owner skips them, as Confluent's Parallel Consumer does.

Encoding `p1`: ``p1:<committable>:<u>,<f>,<u>,<f>,...`` in base 36, the lengths of alternating runs of
unfinished and finished offsets from `committable` (always unfinished) on, ending with a finished run;
nothing past the last run is done. A long stretch with a few holes stays a few characters. The offset is
repeated so that a string parted from its offset (an offset reset that kept the metadata) means nothing.
Anything unreadable decodes to nothing done: re-running is always safe, skipping wrongly never is.

Offsets between consumed records that were never consumed (compacted away, transaction markers) count as
finished: there is nothing to run for them.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from itertools import islice

__all__ = ["FULL_AT", "MAX_METADATA", "Progress"]

MAX_METADATA = 3_000
"""Longest metadata string `metadata()` returns (Kafka's offset.metadata.max.bytes defaults to 4096)."""

FULL_AT = 2_000
"""`metadata_full` from this estimated length on: room left for records already taken to finish."""

_VERSION = "p1:"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_NUMBER = re.compile(r"[0-9a-z]{1,13}")  # 36**13 > 2**63: any Kafka offset


def _b36(number: int) -> str:
    if number < 36:
        return _DIGITS[number]
    digits: list[str] = []
    while number:
        number, digit = divmod(number, 36)
        digits.append(_DIGITS[digit])
    return "".join(reversed(digits))


def _normalise(done: Iterable[int | range], start: int) -> list[range]:
    """Sorted, disjoint, non-adjacent step-1 ranges at or above `start`."""
    spans: list[tuple[int, int]] = []
    for item in done:
        if isinstance(item, range):
            spans.extend([(item.start, item.stop)] if item.step == 1 else ((o, o + 1) for o in item))
        else:
            spans.append((item, item + 1))
    spans.sort()
    merged: list[range] = []
    for first, high in spans:
        low = max(first, start)
        if low >= high:
            continue
        if merged and low <= merged[-1].stop:
            if high > merged[-1].stop:
                merged[-1] = range(merged[-1].start, high)
        else:
            merged.append(range(low, high))
    return merged


class Progress:
    """Consumed, finished and committable offsets of one partition (one per topic-partition)."""

    __slots__ = ("_high", "_intervals", "_k", "_known", "_known_starts", "_open", "_order")

    def __init__(self, start: int, done: Iterable[int | range] = ()) -> None:
        """Resume at committed offset `start`; `done`: offsets at or above it already finished."""
        if start < 0:
            raise ValueError(f"start offset must be >= 0, got {start}")
        self._high = start  # one past the highest offset consumed
        self._open: set[int] = set()  # consumed, not finished
        # `_open` in ascending order, plus finished offsets not swept yet (kept under 2x by `finish`).
        self._order: deque[int] = deque()
        # Runs of consecutive unfinished offsets: bounds the encoding's size in O(1).
        self._intervals = 0
        self._known = _normalise(done, start)  # finished before this owner (from metadata)
        self._known_starts = [span.start for span in self._known]
        self._k = 0  # `_known[:_k]` lie below `committable`

    @classmethod
    def resume(cls, committed: int, metadata: str | None) -> Progress:
        """The progress a new owner starts from, given the group's committed offset and metadata."""
        return cls(committed, cls.decode(committed, metadata))

    def add(self, offset: int) -> bool:
        """Note a consumed record; offsets must increase. False: it is done already (and stays done)."""
        if offset < self._high:
            raise ValueError(f"offset {offset} added after {self._high - 1}: offsets must increase")
        self._high = offset + 1
        if self._known and self._in_known(offset):
            return False
        if offset - 1 not in self._open:
            self._intervals += 1
        self._open.add(offset)
        self._order.append(offset)
        return True

    def finish(self, offset: int) -> None:
        """Note that a record's outcome is produced; finishing twice is harmless."""
        self.finish_all([offset])

    def finish_all(self, offsets: list[int]) -> None:
        """`finish(offset)` for each of `offsets` (one call for a run's outcomes)."""
        opened = self._open
        intervals = self._intervals
        try:
            for offset in offsets:
                if offset not in opened:
                    if offset < self._high:
                        continue
                    raise ValueError(f"offset {offset} finished but never added")
                opened.remove(offset)
                left, right = offset - 1 in opened, offset + 1 in opened
                if left and right:
                    intervals += 1
                elif not (left or right):
                    intervals -= 1
        finally:
            self._intervals = intervals
        if len(self._order) > 2 * len(opened) + 64:
            self._order = deque(o for o in self._order if o in opened)

    def is_done(self, offset: int) -> bool:
        """Whether the record at `offset` needs no run: finished here, or before (per metadata)."""
        if offset < self._high and offset not in self._open:
            return True
        return bool(self._known) and self._in_known(offset)

    def _in_known(self, offset: int) -> bool:
        index = bisect_right(self._known_starts, offset) - 1
        return index >= 0 and offset < self._known[index].stop

    @property
    def committable(self) -> int:
        """The offset to commit: the lowest one not finished (unfinished or not consumed yet)."""
        order, opened = self._order, self._open
        while order and order[0] not in opened:
            order.popleft()
        committable = order[0] if order else self._high
        known, k = self._known, self._k
        while k < len(known) and known[k].stop <= committable:
            k += 1
        if not order and k < len(known) and known[k].start <= committable:
            # Done before the crash and not consumed again yet: no need to hold the commit back.
            committable = known[k].stop
            k += 1
        self._k = k
        return committable

    @property
    def unfinished(self) -> int:
        """Records consumed and not finished."""
        return len(self._open)

    @property
    def metadata_full(self) -> bool:
        """Whether to stop taking records of this partition until some finish (back-pressure).

        An O(1) upper bound of the encoding's length; records already taken can still split runs as
        they finish, hence the margin between FULL_AT and MAX_METADATA.
        """
        committable = self.committable
        end = max(self._high, self._known[-1].stop if self._known else 0)
        runs = 2 * (self._intervals + len(self._known) - self._k)
        width = len(_b36(max(end - committable, 0))) + 1
        return len(_VERSION) + len(_b36(committable)) + 1 + runs * width >= FULL_AT

    def metadata(self) -> str:
        """The finished offsets above `committable`, for the offset commit ("" when none).

        Never longer than MAX_METADATA: past it, the last finished runs are left out, so after a crash
        they run again (a duplicate, never a loss).
        """
        committable = self.committable
        if self._k >= len(self._known) and len(self._open) == self._high - committable:
            return ""  # everything consumed above `committable` is unfinished: nothing to skip
        runs = self._runs()
        if not runs:
            return ""
        head = f"{_VERSION}{_b36(committable)}:"
        pairs: list[str] = []
        size = len(head) - 1
        for index in range(0, len(runs), 2):
            pair = f"{_b36(runs[index])},{_b36(runs[index + 1])}"
            size += len(pair) + 1
            if size > MAX_METADATA:
                break
            pairs.append(pair)
        return head + ",".join(pairs) if pairs else ""

    def _runs(self) -> list[int]:
        """Alternating unfinished/finished run lengths from `committable`, ending with a finished run."""
        bounds: list[int] = []  # starts and ends of unfinished intervals; the last one has no end

        def unfinished(low: int, high: int | None) -> None:
            if bounds and bounds[-1] == low:
                bounds.pop()
            else:
                bounds.append(low)
            if high is not None:
                bounds.append(high)

        opened = self._open
        start = end = -1
        for offset in self._order:  # ascending: consecutive unfinished offsets make one interval
            if offset in opened:
                if offset == end:
                    end += 1
                else:
                    if start >= 0:
                        unfinished(start, end)
                    start, end = offset, offset + 1
        if start >= 0:
            unfinished(start, end)
        position = self._high  # not consumed yet: unfinished unless done before
        for span in islice(self._known, self._k, None):
            if span.stop <= position:
                continue
            if span.start > position:
                unfinished(position, span.start)
            position = span.stop
        unfinished(position, None)
        return [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)]

    @staticmethod
    def decode(committed: int, metadata: str | None) -> tuple[range, ...]:
        """The finished offsets `metadata()` recorded above `committed`; () for anything unexpected."""
        if not metadata or not metadata.startswith(_VERSION):
            return ()
        base, separator, body = metadata[len(_VERSION) :].partition(":")
        numbers = body.split(",")
        if not separator or len(numbers) % 2 or not _NUMBER.fullmatch(base) or int(base, 36) != committed:
            return ()
        if not all(_NUMBER.fullmatch(number) for number in numbers):
            return ()
        runs = [int(number, 36) for number in numbers]
        if 0 in runs:
            return ()
        done: list[range] = []
        position = committed
        for index in range(0, len(runs), 2):
            position += runs[index]
            done.append(range(position, position + runs[index + 1]))
            position += runs[index + 1]
        return tuple(done)

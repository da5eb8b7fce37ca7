"""Exactly-once consume→produce: bus's own TransactionalLoop copying a filled topic.

The loop is the one the router and the worker run: one transaction per batch of up to 500
records, offsets sent with the consumer's group metadata (KIP-447 fencing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from bench.broker import BenchKafka
from bench.raw import fill
from bench.samples import Throughput
from bench.sizes import Sizes
from bus import naming
from bus.kafka.txloop import InMessage, Output, TransactionalLoop
from bus.kafka_binding import Record

__all__ = ["transactional_rate", "warm_up"]


class _Copy:
    """The loop's transform: every record to `target` unchanged; sets `stop` once `total` were seen."""

    def __init__(self, target: str, total: int, stop: threading.Event) -> None:
        self._target = target
        self._total = total
        self._stop = stop
        self.first: float | None = None
        self.seen = 0

    def __call__(self, batch: Sequence[InMessage]) -> list[Output]:
        if self.first is None:
            self.first = time.monotonic()
        self.seen += len(batch)
        if self.seen >= self._total:
            self._stop.set()  # the loop finishes (commits) this batch, then returns
        return [Output(self._target, Record(m.key(), m.value(), ())) for m in batch]


def _copy(
    kafka: BenchKafka, *, source: str, target: str, group: str, total: int, seconds: float, batch: int
) -> Throughput:
    """Copy `total` records of `source` with a fresh group, or as many as `seconds` allow."""
    stop = threading.Event()
    copy = _Copy(target, total, stop)
    # The timer thread only sets `stop`; it is cancelled before this function returns.
    timer = threading.Timer(seconds, stop.set)
    with TransactionalLoop(
        kafka.settings,
        group=group,
        topics=[source],
        transactional_id=naming.transactional_id(group, "bench"),
        max_batch=batch,
    ) as loop:
        timer.start()
        try:
            loop.run(copy, stop)
        finally:
            timer.cancel()
        ended = time.monotonic()
        committed = loop.records_in
    return Throughput(committed, ended - copy.first if copy.first is not None else 0.0, total)


def warm_up(kafka: BenchKafka, sizes: Sizes) -> int:
    """Run transactions for `sizes.txn_warm_up` seconds; return the records copied.

    A fresh broker's transaction path is several times slower for its first minute or so.
    One filled topic is copied again and again, each time by a fresh group reading it from
    the start, so the loop never runs dry and nothing is refilled.
    """
    events = min(sizes.events, 100_000)
    source = fill(kafka, "txn-warm-up-in", sizes, events=events)
    target = kafka.topic("txn-warm-up-out", sizes.partitions)
    deadline = time.monotonic() + sizes.txn_warm_up
    copied = 0
    round_ = 0
    while (left := deadline - time.monotonic()) > 0:
        group = kafka.group(f"txn-warm-up-{round_}")
        done = _copy(
            kafka, source=source, target=target, group=group, total=events, seconds=left, batch=sizes.batch
        )
        copied += done.events
        round_ += 1
    return copied


def transactional_rate(kafka: BenchKafka, sizes: Sizes) -> Throughput:
    """Records copied per second, one committed transaction per batch, first read to last commit."""
    source = fill(kafka, "confluent-txn-in", sizes)
    target = kafka.topic("confluent-txn-out", sizes.partitions)
    return _copy(
        kafka,
        source=source,
        target=target,
        group=kafka.group("confluent-txn"),
        total=sizes.events,
        seconds=sizes.deadline,
        batch=sizes.batch,
    )

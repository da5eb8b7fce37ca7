"""Timer checkpoints on the compacted topic: the time fired through and the timing it was made for."""

from __future__ import annotations

from datetime import UTC, datetime

from bus.schedules import Checkpoint
from gateway.timers import checkpoint_record, read_checkpoint, tombstone_record


def test_a_checkpoint_record_reads_back_with_its_digest() -> None:
    """What the leader writes, the next leader reads: time and digest, keyed by schedule name."""
    checkpoint = Checkpoint(through=datetime(2026, 5, 4, 2, tzinfo=UTC), digest="0123abcd")
    record = checkpoint_record("report", checkpoint)
    assert record.key == b"report"
    assert read_checkpoint(record.value) == checkpoint


def test_a_checkpoint_from_before_digests_reads_with_an_empty_digest() -> None:
    """An old `{"through": ...}` checkpoint matches no schedule's digest, so none fires a stale tick."""
    assert read_checkpoint(b'{"through": "2026-05-04T02:00:00+00:00"}') == Checkpoint(
        through=datetime(2026, 5, 4, 2, tzinfo=UTC), digest=""
    )


def test_tombstones_and_unreadable_checkpoints_are_none() -> None:
    """A deleted or garbled checkpoint is no checkpoint: the schedule starts from now."""
    assert tombstone_record("report").value is None
    assert read_checkpoint(None) is None
    for value in (b"[]", b"{}", b'{"through": "x"}', b'{"through": "2026-05-04T02:00:00"}', b"\xff"):
        assert read_checkpoint(value) is None, value

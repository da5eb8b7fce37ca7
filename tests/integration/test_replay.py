"""`bus replay` against the real broker: one function, the current rules, a time window of the ingress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from bus import naming
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.config import build, producer_config
from bus.kafka_binding import Record, header, to_record
from bus.manifest import read
from bus.topology import manifest_topics
from tests.support import KafkaEnv, run_bus, write_manifest

# a takes big orders (its rule looks at data); b takes every order. Users reach no function.
MANIFEST = """
functions:
  a: {handler: "handlers:echo"}
  b: {handler: "handlers:echo"}
rules:
  - name: big-orders
    pattern: {type: [order.placed], data: {total: [{numeric: [">", 100]}]}}
    targets: [a]
  - {name: orders, pattern: {type: [order.placed]}, targets: [b]}
"""


@dataclass
class Ingested:
    """One record put on the ingress topic, and where it landed."""

    record: Record
    timestamp_ms: int
    partition: int = -1
    offset: int = -1

    @property
    def id(self) -> str:
        """The event id (ce_id header), or '' for a record that is not a CloudEvent."""
        return (header(self.record.headers, "ce_id") or b"").decode()


def _event(n: int) -> Record:
    """Event n: a big order when n % 3 == 0 (a and b), a small order when 1 (b only), else a user (none)."""
    kind, data = [
        ("order.placed", {"n": n, "total": 500}),
        ("order.placed", {"n": n, "total": 5}),
        ("user.created", {"n": n}),
    ][n % 3]
    return to_record(
        CloudEvent.create(id=f"e{n}", source="tests/replay", type=kind, subject=f"k{n}", data=data)
    )


def _setup(kafka: KafkaEnv, tmp_path: Path) -> tuple[str, Path]:
    """A fresh prefix with the manifest's topics; return the prefix and the manifest path."""
    prefix = kafka.prefix()
    path = write_manifest(tmp_path, prefix, MANIFEST)
    ensure_topics(kafka.settings(prefix), manifest_topics(read(path)))
    return prefix, path


def _ingest(kafka: KafkaEnv, prefix: str, entries: list[Ingested], **config: Any) -> None:
    """Produce the records to the ingress topic in order, with their timestamps; note where each landed."""
    producer = build(Producer, {**producer_config(kafka.settings(prefix)), **config})
    failures: list[str] = []

    def landed(entry: Ingested) -> Any:
        def report(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(err.str())
            else:
                entry.partition, entry.offset = msg.partition() or 0, msg.offset() or 0

        return report

    for entry in entries:
        producer.produce(
            naming.ingress_topic(prefix),
            key=entry.record.key,
            value=entry.record.value,
            headers=list(entry.record.headers),
            timestamp=entry.timestamp_ms,
            on_delivery=landed(entry),
        )
    assert producer.flush(30) == 0
    assert failures == []


def _replay(kafka: KafkaEnv, prefix: str, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bus(
        "--prefix",
        prefix,
        "replay",
        "-f",
        str(path),
        *args,
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap},
        timeout=120,
    )


def _summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    summary: dict[str, Any] = orjson.loads(lines[0])
    return summary


def _id(message: Any) -> str:
    """The event id of a consumed record."""
    return (header(message.headers(), "ce_id") or b"").decode()


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _rfc3339(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")


def _history(start_ms: int) -> list[Ingested]:
    """30 events 5 s apart from `start_ms`, plus a record that is not a CloudEvent after event 10."""
    entries = [Ingested(_event(n), start_ms + n * 5000) for n in range(30)]
    raw = Ingested(Record(b"k10", b"not a cloudevent", (("x", b"y"),)), start_ms + 10 * 5000 + 1)
    return [*entries[:11], raw, *entries[11:]]


def _window(history: list[Ingested], first: int, last: int) -> list[Ingested]:
    """The events a replays from a window [event first, event last]: big orders only."""
    low, high = history[0].timestamp_ms + first * 5000, history[0].timestamp_ms + last * 5000
    return [e for e in history if low <= e.timestamp_ms <= high and e.id and int(e.id[1:]) % 3 == 0]


def test_replay_sends_exactly_the_matching_events_of_the_window_to_one_function(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """Big orders stamped within [--from, --to] reach a's topic once each, unchanged but for the replay
    extensions; b's topic, whose rule also matches orders, gets nothing; the summary adds up."""
    prefix, path = _setup(kafka, tmp_path)
    history = _history(_ms(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)))
    _ingest(kafka, prefix, history)
    expected = _window(history, 6, 24)  # events 6, 9, ..., 24: both bounds are matches, inclusive
    assert len(expected) == 7

    result = _replay(
        kafka,
        prefix,
        path,
        "--function",
        "a",
        "--from",
        _rfc3339(history[0].timestamp_ms + 6 * 5000),
        "--to",
        _rfc3339(history[0].timestamp_ms + 24 * 5000),
    )
    assert result.returncode == 0, result.stderr
    summary = _summary(result)
    assert summary["function"] == "a"
    assert summary["rules"] == ["big-orders"]
    assert summary["dry_run"] is False
    assert summary["interrupted"] is False
    # Events 6..24 and the raw record are in the window; reading stops at each partition's first later one.
    assert summary["scanned"] == 20
    assert (summary["matched"], summary["replayed"], summary["failed"]) == (7, 7, 0)
    assert summary["skipped_undecodable"] == 1
    assert summary["matched_by_rule"] == {"big-orders": 7}
    raw = next(e for e in history if not e.id)
    assert summary["undecodable"][0]["partition"] == raw.partition
    assert summary["undecodable"][0]["offset"] == raw.offset
    replay_id = summary["replay_id"]
    assert replay_id.startswith("replay-")

    replayed = kafka.read_exactly(naming.function_topic(prefix, "a"), len(expected))
    by_id = {e.id: e for e in expected}
    assert sorted(_id(m) for m in replayed) == sorted(by_id)
    for message in replayed:
        original = by_id[_id(message)]
        assert message.key() == original.record.key
        assert message.value() == original.record.value
        headers = list(message.headers())
        assert headers[: len(original.record.headers)] == list(original.record.headers)
        assert header(headers, "ce_replayid") == replay_id.encode()
        origin = f"{naming.ingress_topic(prefix)}/{original.partition}/{original.offset}"
        assert header(headers, "ce_replayorigin") == origin.encode()
    assert kafka.read_all(naming.function_topic(prefix, "b"), idle=1.0) == []


def test_a_dry_run_reports_counts_and_times_and_produces_nothing(kafka: KafkaEnv, tmp_path: Path) -> None:
    """--dry-run prints counts per partition and in all, and the first and last event times; sends nothing."""
    prefix, path = _setup(kafka, tmp_path)
    history = _history(_ms(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)))
    _ingest(kafka, prefix, history)
    expected = _window(history, 0, 29)

    result = _replay(
        kafka, prefix, path, "--function", "a", "--from", _rfc3339(history[0].timestamp_ms), "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    summary = _summary(result)
    assert summary["dry_run"] is True
    assert summary["to"] is None, "no --to: up to the end of each partition as of the start"
    assert (summary["scanned"], summary["matched"], summary["replayed"]) == (31, len(expected), 0)
    per_partition = {p["partition"]: p["matched"] for p in summary["partitions"]}
    for partition in range(6):
        assert per_partition.get(partition, 0) == sum(1 for e in expected if e.partition == partition)
    assert summary["first_event_time"] == _rfc3339(expected[0].timestamp_ms).replace("+00:00", "Z")
    assert summary["last_event_time"] == _rfc3339(expected[-1].timestamp_ms).replace("+00:00", "Z")
    assert kafka.read_all(naming.function_topic(prefix, "a"), idle=1.0) == []


def test_relative_times_count_back_from_now(kafka: KafkaEnv, tmp_path: Path) -> None:
    """`--from 2h --to 30m` takes what was stamped between two hours and half an hour ago."""
    prefix, path = _setup(kafka, tmp_path)
    now = datetime.now(UTC)
    entries = [
        Ingested(_event(0), _ms(now - timedelta(hours=3))),
        Ingested(_event(3), _ms(now - timedelta(hours=1))),
        Ingested(_event(6), _ms(now - timedelta(minutes=10))),
    ]
    _ingest(kafka, prefix, entries)
    result = _replay(kafka, prefix, path, "--function", "a", "--from", "2h", "--to", "30m")
    assert result.returncode == 0, result.stderr
    assert _summary(result)["replayed"] == 1
    (message,) = kafka.read_exactly(naming.function_topic(prefix, "a"), 1)
    assert header(message.headers(), "ce_id") == b"e3"


def test_replay_ends_at_the_last_stable_offset_of_the_start(kafka: KafkaEnv, tmp_path: Path) -> None:
    """An aborted transaction is skipped and an open one is not waited for: the replay finishes promptly."""
    prefix, path = _setup(kafka, tmp_path)
    start = _ms(datetime.now(UTC) - timedelta(minutes=5))
    committed = [Ingested(_event(n), start + n) for n in (0, 3, 6)]
    _ingest(kafka, prefix, committed)
    settings = kafka.settings(prefix)
    ingress = naming.ingress_topic(prefix)
    aborting = build(Producer, producer_config(settings, transactional_id=kafka.group()))
    aborting.init_transactions(30)
    aborting.begin_transaction()
    for partition in range(6):  # on every partition, so each one ends with an aborted transaction
        aborting.produce(ingress, value=_event(9).value, headers=list(_event(9).headers), partition=partition)
    aborting.flush(30)
    aborting.abort_transaction(30)
    pending = build(Producer, producer_config(settings, transactional_id=kafka.group()))
    pending.init_transactions(30)
    pending.begin_transaction()
    for partition in range(6):
        pending.produce(
            ingress, value=_event(12).value, headers=list(_event(12).headers), partition=partition
        )
    pending.flush(30)
    try:
        started = time.monotonic()
        result = _replay(kafka, prefix, path, "--function", "a", "--from", "1h")
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 30
        summary = _summary(result)
        assert (summary["scanned"], summary["replayed"]) == (3, 3)
    finally:
        pending.abort_transaction(30)
    replayed = kafka.read_exactly(naming.function_topic(prefix, "a"), 3)
    assert sorted(_id(m) for m in replayed) == ["e0", "e3", "e6"]


def test_the_rate_spaces_the_replayed_events(kafka: KafkaEnv, tmp_path: Path) -> None:
    """At --rate 10, six events are produced at least half a second apart from first to last."""
    prefix, path = _setup(kafka, tmp_path)
    start = _ms(datetime.now(UTC) - timedelta(minutes=5))
    _ingest(kafka, prefix, [Ingested(_event(3 * n), start + n) for n in range(6)])
    result = _replay(kafka, prefix, path, "--function", "a", "--from", "1h", "--rate", "10/s")
    assert result.returncode == 0, result.stderr
    replayed = kafka.read_exactly(naming.function_topic(prefix, "a"), 6)
    stamps = sorted(m.timestamp()[1] for m in replayed)
    assert stamps[-1] - stamps[0] >= 450, stamps


RATE_5 = ("--function", "a", "--from", "1h", "--rate", "5")


def test_a_signal_stops_the_replay_cleanly_with_the_summary_of_what_was_done(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """SIGINT mid-replay: exit 130, and the summary's count is exactly what reached a's topic."""
    prefix, path = _setup(kafka, tmp_path)
    start = _ms(datetime.now(UTC) - timedelta(minutes=5))
    _ingest(kafka, prefix, [Ingested(_event(3 * n), start + n) for n in range(40)])
    process = subprocess.Popen(
        [sys.executable, "-m", "bus", "--prefix", prefix, "replay", "-f", str(path), *RATE_5],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        topic = naming.function_topic(prefix, "a")
        kafka.read(topic, until=lambda records: len(records) >= 2, timeout=60)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    summary = orjson.loads(out.strip())
    assert summary["interrupted"] is True
    assert 2 <= summary["replayed"] < 40
    assert summary["failed"] == 0
    assert len(kafka.read_all(topic)) == summary["replayed"]


def test_an_unknown_function_fails_in_one_line_naming_it_and_the_known_ones(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """`--function zz` exits 2 with one stderr line that names zz and the functions a and b."""
    prefix, path = _setup(kafka, tmp_path)
    result = _replay(kafka, prefix, path, "--function", "zz", "--from", "1h")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == ["bus replay: unknown function 'zz'; known functions: a, b"]


def test_a_time_that_cannot_be_read_fails_in_one_line_naming_the_flag(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """`--to yesterday` exits 2 with one line naming --to and the forms it takes."""
    prefix, path = _setup(kafka, tmp_path)
    result = _replay(kafka, prefix, path, "--function", "a", "--from", "1h", "--to", "yesterday")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bus replay: --to 'yesterday'")

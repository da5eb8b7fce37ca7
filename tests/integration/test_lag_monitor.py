"""The lag monitor and `bus status` against the real broker, on records and offsets the test writes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from bus import naming
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.config import build, producer_config
from bus.kafka.lag import DeadLetterCounter, DecisionLog, LagMonitor
from bus.kafka_binding import to_record
from bus.manifest import Manifest, read
from bus.status import GroupSample, PartitionSample
from bus.topology import TopicSpec, manifest_topics
from tests.support import KafkaEnv, run_bus, unique, wait_until, write_manifest

MANIFEST = """
functions:
  a: {handler: "handlers:echo", partitions: 3}
  b: {handler: "handlers:echo", partitions: 2, retry: {attempts: 1}}
"""


def _setup(kafka: KafkaEnv, tmp_path: Path) -> tuple[Manifest, Path]:
    """A fresh prefix with the manifest's topics: a has 3 partitions and 2 retry topics, b 2 and none."""
    path = write_manifest(tmp_path, kafka.prefix(), MANIFEST)
    parsed = read(path)
    ensure_topics(kafka.settings(parsed.prefix), manifest_topics(parsed))
    return parsed, path


def _produce(
    kafka: KafkaEnv, topic: str, counts: dict[int, int], *, age: float = 0.0, transactional: bool = True
) -> None:
    """Write `counts[p]` records to partition p of `topic`, stamped `age` seconds ago, in one transaction."""
    config = producer_config(kafka.settings(), transactional_id=unique("tx") if transactional else None)
    producer = build(Producer, config)
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    stamp = int((time.time() - age) * 1000)
    for p, count in counts.items():
        for n in range(count):
            producer.produce(topic, value=b"%d" % n, partition=p, timestamp=stamp)
    if transactional:
        producer.commit_transaction(30)
    assert producer.flush(30) == 0


def _aborted(kafka: KafkaEnv, topic: str, p: int, count: int) -> None:
    """Write `count` records to partition p of `topic` in a transaction that aborts."""
    producer = build(Producer, producer_config(kafka.settings(), transactional_id=unique("tx")))
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(count):
        producer.produce(topic, value=b"%d" % n, partition=p)
    assert producer.flush(30) == 0
    producer.abort_transaction(30)


def _commit(kafka: KafkaEnv, prefix: str, function: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit offsets for the function's worker group, as one of its workers would."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": naming.function_group(prefix, function),
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, offset) for (topic, p), offset in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def _monitor(kafka: KafkaEnv, parsed: Manifest) -> LagMonitor:
    return LagMonitor(kafka.settings(parsed.prefix), functions=parsed.functions)


def _part(sample: GroupSample, topic: str, p: int) -> PartitionSample:
    [found] = [s for s in sample.partitions if (s.topic, s.partition) == (topic, p)]
    return found


def test_sample_reports_committed_start_end_lag_and_age(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Per partition: committed offset, log start, last stable offset, lag and the oldest record's age."""
    parsed, _ = _setup(kafka, tmp_path)
    topic = naming.function_topic(parsed.prefix, "a")
    _produce(kafka, topic, {0: 10}, age=60)
    _produce(kafka, topic, {1: 4}, age=30)
    _commit(kafka, parsed.prefix, "a", {(topic, 0): 4})
    with _monitor(kafka, parsed) as monitor:
        samples = monitor.sample()
    a = samples["a"]
    assert (a.function, a.group, a.topic) == ("a", naming.function_group(parsed.prefix, "a"), topic)
    first = _part(a, topic, 0)
    assert (first.committed, first.start, first.end, first.position, first.lag) == (4, 0, 11, 4, 7)
    assert first.oldest_age is not None
    assert 59 <= first.oldest_age < 90
    uncommitted = _part(a, topic, 1)  # 4 records and the transaction's marker, never committed
    assert (uncommitted.committed, uncommitted.start, uncommitted.end) == (None, 0, 5)
    assert uncommitted.lag == uncommitted.end - uncommitted.start
    assert uncommitted.oldest_age is not None
    assert 29 <= uncommitted.oldest_age < 60
    empty = _part(a, topic, 2)
    assert (empty.committed, empty.end, empty.lag, empty.oldest_age) == (None, 0, 0, None)
    assert [(s.topic, s.partition) for s in a.partitions] == [
        (t, p) for t in (topic, f"{topic}.retry.1", f"{topic}.retry.2") for p in range(3)
    ]
    assert (a.lag, a.retry_lag, a.oldest_age) == (12, 0, first.oldest_age)
    assert first.consume_rate is first.produce_rate is first.lag_seconds is None  # one sample: no rates
    assert [(s.topic, s.partition) for s in samples["b"].partitions] == [
        (naming.function_topic(parsed.prefix, "b"), p) for p in range(2)
    ]


def test_transaction_markers_and_aborted_records_are_no_lag(kafka: KafkaEnv, tmp_path: Path) -> None:
    """A group past every record has lag 0 although the markers of transactions follow its offset."""
    parsed, _ = _setup(kafka, tmp_path)
    topic = naming.function_topic(parsed.prefix, "a")
    _produce(kafka, topic, {0: 3, 1: 2})
    _aborted(kafka, topic, 1, 5)
    _commit(kafka, parsed.prefix, "a", {(topic, 0): 3, (topic, 1): 2})  # one past the last record
    with _monitor(kafka, parsed) as monitor:
        a = monitor.sample()["a"]
    markers = _part(a, topic, 0)
    assert (markers.committed, markers.end, markers.position, markers.lag) == (3, 4, 4, 0)
    aborted = _part(a, topic, 1)  # 2 records, marker, 5 aborted records, abort marker
    assert (aborted.committed, aborted.end, aborted.position, aborted.lag) == (2, 9, 9, 0)
    assert a.total_lag == 0


def test_rates_come_from_consecutive_samples(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Produce rate is end offsets per second, consume rate committed offsets per second, between samples."""
    parsed, _ = _setup(kafka, tmp_path)
    topic = naming.function_topic(parsed.prefix, "a")
    _produce(kafka, topic, {0: 10})
    _commit(kafka, parsed.prefix, "a", {(topic, 0): 2})
    with _monitor(kafka, parsed) as monitor:
        before = monitor.sample()["a"]
        _produce(kafka, topic, {0: 20})
        _commit(kafka, parsed.prefix, "a", {(topic, 0): 8})
        after = monitor.sample()["a"]
    elapsed = after.at - before.at
    assert elapsed > 0
    old, new = _part(before, topic, 0), _part(after, topic, 0)
    assert (old.end, new.end, new.committed) == (11, 32, 8)
    assert new.produce_rate == (32 - 11) / elapsed
    assert new.consume_rate == (8 - 2) / elapsed
    assert new.lag_seconds == new.lag / new.consume_rate
    assert after.produce_rate == new.produce_rate  # the other partitions produced nothing
    assert after.consume_rate == new.consume_rate
    assert after.wall >= before.wall


def test_a_lagging_group_without_progress_is_stalled(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Lag and no commits between samples: consume rate 0 and an infinite lag time."""
    parsed, _ = _setup(kafka, tmp_path)
    topic = naming.function_topic(parsed.prefix, "b")
    _produce(kafka, topic, {1: 5})
    with _monitor(kafka, parsed) as monitor:
        monitor.sample()
        b = monitor.sample()["b"]
    stalled = _part(b, topic, 1)
    assert (stalled.lag, stalled.consume_rate, stalled.lag_seconds) == (6, 0.0, math.inf)
    assert b.lag_seconds == math.inf
    assert _part(b, topic, 0).lag_seconds == 0.0


def test_retry_topics_are_counted_separately(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Lag on the retry topics is retries pending, not the function topic's lag."""
    parsed, _ = _setup(kafka, tmp_path)
    retry = naming.retry_topic(parsed.prefix, "a", 2)
    _produce(kafka, retry, {2: 3}, transactional=False)
    _commit(kafka, parsed.prefix, "a", {(retry, 2): 1})
    with _monitor(kafka, parsed) as monitor:
        a = monitor.sample()["a"]
    assert (a.lag, a.retry_lag, a.total_lag) == (0, 2, 2)
    assert _part(a, retry, 2).committed == 1
    assert a.oldest_age is None  # ages are the function topic's: retries wait on purpose


def test_retries_waiting_in_a_retry_topic_the_policy_no_longer_uses_are_lag(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """b's policy has no retries now, but the retry topic an earlier one used still holds some:
    its replicas read them, so they are b's retry lag (a group at zero replicas scales up)."""
    parsed, _ = _setup(kafka, tmp_path)
    retry = naming.retry_topic(parsed.prefix, "b", 1)
    ensure_topics(kafka.settings(parsed.prefix), [TopicSpec(retry, 2)])
    _produce(kafka, retry, {1: 3}, transactional=False)
    with _monitor(kafka, parsed) as monitor:
        b = monitor.sample()["b"]
    assert (b.lag, b.retry_lag, b.total_lag) == (0, 3, 3)
    assert _part(b, retry, 1).end == 3


def test_topics_not_created_yet_have_no_partitions(kafka: KafkaEnv, tmp_path: Path) -> None:
    """A function whose topics do not exist yet samples as no partitions, without an error."""
    path = write_manifest(tmp_path, kafka.prefix(), MANIFEST)
    parsed = read(path)
    with _monitor(kafka, parsed) as monitor:
        samples = monitor.sample()
    assert {name: s.partitions for name, s in samples.items()} == {"a": (), "b": ()}
    assert samples["a"].lag == 0


def _status(kafka: KafkaEnv, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bus("status", "-f", str(path), *args, env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap})


def _decision(prefix: str, function: str, desired: int, actual: int, reason: str) -> tuple[str, Any]:
    """A `bus.scaling.decision` record as the supervisor writes it."""
    event = CloudEvent.create(
        id=unique("d"),
        source="bus/supervisor",
        type="bus.scaling.decision",
        time="2026-01-31T09:30:00.000Z",
        datacontenttype="application/json",
        data={
            "function": function, "desired": desired, "actual": actual, "reason": reason,
            "total_lag": 250, "p99_seconds": 0.25, "at": "2026-01-31T09:30:00.000Z",
        },
    )  # fmt: skip
    return naming.scaling_topic(prefix), to_record(event)


def _write(kafka: KafkaEnv, records: list[tuple[str, Any]]) -> None:
    producer = build(Producer, producer_config(kafka.settings()))
    for topic, record in records:
        producer.produce(topic, key=record.key, value=record.value, headers=list(record.headers))
    assert producer.flush(30) == 0


def test_dead_letters_are_counted_not_offsets(kafka: KafkaEnv, tmp_path: Path) -> None:
    """A dead letter counts once although its transaction's marker takes an offset too; later counts add."""
    parsed, _ = _setup(kafka, tmp_path)
    dlq = naming.dlq_topic(parsed.prefix, "a")
    with DeadLetterCounter(kafka.settings(parsed.prefix)) as counter:
        assert counter.count("a") == 0
        # A committed transaction's markers are written after commit returns: read_committed readers
        # see its records a moment later, so the counts are awaited.
        _produce(kafka, dlq, {0: 1})
        wait_until(lambda: counter.count("a") == 1, timeout=10, what="one dead letter counted")
        _produce(kafka, dlq, {0: 2})
        _aborted(kafka, dlq, 0, 4)
        wait_until(lambda: counter.count("a") == 3, timeout=10, what="three dead letters counted")
        assert counter.count("a") == 3
        assert counter.count("no-such-function") == 0
        assert counter.count_router() == 0
        _produce(kafka, naming.router_dlq_topic(parsed.prefix), {0: 2})
        wait_until(lambda: counter.count_router() == 2, timeout=10, what="the router's dead letters counted")


def test_the_decision_log_follows_new_decisions(kafka: KafkaEnv, tmp_path: Path) -> None:
    """No topic: no decisions; then each read adds what the supervisor wrote since."""
    parsed, _ = _setup(kafka, tmp_path)
    with DecisionLog(kafka.settings(parsed.prefix)) as log:
        assert log.read() == {}
        ensure_topics(kafka.settings(), [TopicSpec(naming.scaling_topic(parsed.prefix), 1)])
        _write(kafka, [_decision(parsed.prefix, "a", 2, 1, "first")])
        assert log.read()["a"].reason == "first"
        _write(
            kafka, [_decision(parsed.prefix, "b", 1, 1, "b"), _decision(parsed.prefix, "a", 4, 2, "second")]
        )
        latest = log.read()
    assert {name: (d.desired, d.actual, d.reason) for name, d in latest.items()} == {
        "a": (4, 2, "second"),
        "b": (1, 1, "b"),
    }


def test_status_json_without_a_supervisor(kafka: KafkaEnv, tmp_path: Path) -> None:
    """`bus status --json`: one object per function; replicas, reason and p99 null when no supervisor ran."""
    parsed, path = _setup(kafka, tmp_path)
    topic = naming.function_topic(parsed.prefix, "a")
    _produce(kafka, topic, {0: 10}, age=120)
    _commit(kafka, parsed.prefix, "a", {(topic, 0): 4})
    _produce(kafka, naming.retry_topic(parsed.prefix, "a", 1), {1: 2}, transactional=False)
    _produce(kafka, naming.dlq_topic(parsed.prefix, "a"), {0: 1})  # 1 dead letter + its marker
    result = _status(kafka, path, "--json")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    a, b = orjson.loads(line)
    assert a == {
        "function": "a",
        "partitions": 3,
        "lag": 7,
        "lag_seconds": None,  # a lag and no progress: stalled, and JSON has no infinity
        "stalled": True,
        "oldest_age_seconds": a["oldest_age_seconds"],
        "replicas_desired": None,
        "replicas_actual": None,
        "scaling_reason": None,
        "decided_at": None,
        "events_in_per_second": 0.0,
        "events_out_per_second": 0.0,
        "p99_seconds": None,
        "retries_pending": 2,
        "dead_letters": 1,
    }
    assert 119 <= a["oldest_age_seconds"] < 180
    assert (b["function"], b["partitions"], b["lag"], b["stalled"], b["dead_letters"]) == (
        "b",
        2,
        0,
        False,
        0,
    )
    assert b["lag_seconds"] == 0.0


def test_status_json_shows_the_latest_decision(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Replicas desired/actual, reason and p99 come from each function's latest decision in the log."""
    parsed, path = _setup(kafka, tmp_path)
    ensure_topics(kafka.settings(), [TopicSpec(naming.scaling_topic(parsed.prefix), 1)])
    _write(
        kafka,
        [
            _decision(parsed.prefix, "a", 1, 0, "activation: lag 5 > 0"),
            (
                naming.scaling_topic(parsed.prefix),
                to_record(CloudEvent.create(id="x", source="t", type="other")),
            ),
            _decision(parsed.prefix, "a", 3, 1, "lag 250 > 100 per replica"),
        ],
    )
    result = _status(kafka, path, "--json")
    assert result.returncode == 0, result.stderr
    a, b = orjson.loads(result.stdout)
    assert (a["replicas_desired"], a["replicas_actual"], a["scaling_reason"]) == (
        3, 1, "lag 250 > 100 per replica",
    )  # fmt: skip
    assert (a["p99_seconds"], a["decided_at"]) == (0.25, "2026-01-31T09:30:00.000Z")
    assert b["replicas_desired"] is b["replicas_actual"] is b["p99_seconds"] is None


def test_status_prints_a_table(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Without --json: a header and one line per function, `-` where nothing is known."""
    parsed, path = _setup(kafka, tmp_path)
    _produce(kafka, naming.function_topic(parsed.prefix, "b"), {0: 2})
    result = _status(kafka, path)
    assert result.returncode == 0, result.stderr
    header, a, b = result.stdout.splitlines()
    assert header.split()[:4] == ["FUNCTION", "PARTITIONS", "LAG", "LAG-TIME"]
    assert a.split() == ["a", "3", "0", "0.00s", "-", "-", "-", "0.0", "0.0", "-", "0", "0", "-"]
    assert b.split()[:4] == ["b", "2", "3", "stalled"]
    assert b.split()[4].endswith("s")  # the age of the oldest of b's records


def test_status_names_the_routers_dead_letters_under_the_table(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Events the router could not route show under the table, with the command that lists them;
    no line while there are none."""
    parsed, path = _setup(kafka, tmp_path)
    quiet = _status(kafka, path)
    assert quiet.returncode == 0, quiet.stderr
    assert len(quiet.stdout.splitlines()) == 3, "the header and a line per function only"
    router_dlq = naming.router_dlq_topic(parsed.prefix)
    _produce(kafka, router_dlq, {0: 3})
    wait_until(
        lambda: (
            _status(kafka, path).stdout.splitlines()[-1]
            == f"router: 3 dead letters in {router_dlq} (`bus dlq list --router`)"
        ),
        timeout=20,
        what="the router's dead letters under the table",
    )


def test_status_watch_redraws_until_interrupted(kafka: KafkaEnv, tmp_path: Path) -> None:
    """`--watch` prints a timed table every interval (no ANSI when not a terminal); Ctrl-C ends it with 0."""
    parsed, path = _setup(kafka, tmp_path)
    environ = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    timeline = f"  prefix {parsed.prefix}\n"
    command = [sys.executable, "-m", "bus", "status", "-f", str(path), "--watch", "--interval", "0.5"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ
    ) as child:
        assert child.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while len([line for line in lines if line.startswith("FUNCTION")]) < 2:
            assert time.monotonic() < deadline, f"two frames within 60 s; got {lines}"
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "no output"
            lines.append(line)
        assert not any("\x1b" in line for line in lines)
        times = [n for n, line in enumerate(lines) if line.endswith(timeline)]
        assert [lines[n + 1].split()[0] for n in times][:2] == ["FUNCTION", "FUNCTION"]
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == 0


def test_status_without_an_applied_manifest_names_the_fix(kafka: KafkaEnv) -> None:
    """No -f and nothing applied for the prefix: exit 2 and say to apply or pass -f."""
    result = run_bus("status", "--prefix", kafka.prefix(), env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap})
    assert result.returncode == 2
    assert "run `bus apply` or pass -f" in result.stderr

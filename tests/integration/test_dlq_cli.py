"""`bus dlq list` and `bus dlq redrive` against the real broker, on dead letters the test writes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient

from bus import naming
from bus.deadletter import dead_letter
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.config import admin_config, build
from bus.kafka_binding import Record, from_record, header, to_record
from bus.localkafka import free_port
from bus.manifest import read
from bus.topology import manifest_topics
from tests.support import KafkaEnv, run_bus, write_manifest

MANIFEST = """
functions:
  a: {handler: "handlers:fail_when_asked"}
  b: {handler: "handlers:echo"}
"""


def _setup(kafka: KafkaEnv, tmp_path: Path) -> tuple[str, Path]:
    """A fresh prefix with the manifest's topics (DLQs included); return the prefix and the manifest."""
    prefix = kafka.prefix()
    path = write_manifest(tmp_path, prefix, MANIFEST)
    ensure_topics(kafka.settings(prefix), manifest_topics(read(path)))
    return prefix, path


def _original(n: int) -> Record:
    """Event n: an order when n is even, a user otherwise; keyed `k<n % 2>`."""
    kind = "order.placed" if n % 2 == 0 else "user.created"
    event = CloudEvent.create(id=f"e{n}", source="tests/dlq", type=kind, subject=f"k{n % 2}", data={"n": n})
    return to_record(event)


def _dead_letters(kafka: KafkaEnv, prefix: str, count: int, *, junk: bool = False) -> None:
    """Put `count` dead letters (events 0..count-1) on a's DLQ, then a record that is not a CloudEvent."""
    records = [
        dead_letter(
            _original(n),
            error_type="ValueError",
            reason=f"asked to fail: {n}\nTraceback ...",
            origin=f"{naming.function_topic(prefix, 'a')}/0/{n}",
        )
        for n in range(count)
    ]
    if junk:
        records.append(
            dead_letter(Record(b"k", b"\xffjunk", ()), error_type="InvalidEvent", reason="no", origin="x")
        )
    kafka.write(naming.dlq_topic(prefix, "a"), records)


def _dlq(kafka: KafkaEnv, manifest: Path, *args: str, env: dict[str, str | None] | None = None) -> Any:
    return run_bus(
        "dlq", *args, "-f", str(manifest), env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, **(env or {})}
    )


def _summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    summary: dict[str, Any] = orjson.loads(lines[0])
    return summary


def _id(message: Any) -> str:
    """The event id of a record read from a topic."""
    return (header(message.headers(), "ce_id") or b"").decode()


def _listed(kafka: KafkaEnv, manifest: Path) -> list[dict[str, Any]]:
    result = _dlq(kafka, manifest, "list", "a", "--json")
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def test_list_shows_every_dead_letter_oldest_first(kafka: KafkaEnv, tmp_path: Path) -> None:
    """One line per dead letter (offset, time, error, attempts, redriven, id, type, origin, message)."""
    prefix, manifest = _setup(kafka, tmp_path)
    _dead_letters(kafka, prefix, 3, junk=True)
    result = _dlq(kafka, manifest, "list", "a")
    assert result.returncode == 0, result.stderr
    header_line, *lines = result.stdout.splitlines()
    assert header_line.split() == [
        "OFFSET", "TIME", "ERROR", "ATTEMPTS", "REDRIVEN", "ID", "TYPE", "ORIGIN", "MESSAGE"
    ]  # fmt: skip
    assert len(lines) == 4
    first = lines[0].split()
    assert first[0] == "0"
    assert first[2:8] == ["ValueError", "-", "no", "e0", "order.placed", f"{prefix}.fn.a/0/0"]
    assert lines[0].endswith("asked to fail: 0 Traceback ...")
    assert [line.split()[0] for line in lines] == ["0", "1", "2", "3"]
    assert "<not a CloudEvent>" in lines[3]
    assert result.stderr == f"4 dead letters in {prefix}.fn.a.dlq (0 redriven)\n"


def test_list_json_prints_one_object_per_dead_letter_with_the_event(kafka: KafkaEnv, tmp_path: Path) -> None:
    """`--json`: the event in the CloudEvents JSON format plus the error, origin and redrive marker."""
    prefix, manifest = _setup(kafka, tmp_path)
    _dead_letters(kafka, prefix, 2, junk=True)
    listed = _listed(kafka, manifest)
    assert [doc["offset"] for doc in listed] == [0, 1, 2]
    first = listed[0]
    assert first["event"] == {
        "specversion": "1.0",
        "id": "e0",
        "source": "tests/dlq",
        "type": "order.placed",
        "subject": "k0",
        "datacontenttype": "application/json",
        "data": {"n": 0},
    }
    assert (first["error_type"], first["error_message"]) == ("ValueError", "asked to fail: 0\nTraceback ...")
    assert (first["origin"], first["key"], first["redriven"]) == (f"{prefix}.fn.a/0/0", "k0", None)
    assert listed[2]["event"] is None
    assert listed[2]["invalid"].startswith("ce_specversion")


def test_list_of_an_empty_dlq_prints_nothing(kafka: KafkaEnv, tmp_path: Path) -> None:
    """No dead letters: nothing on stdout, a one-line count on stderr."""
    prefix, manifest = _setup(kafka, tmp_path)
    result = _dlq(kafka, manifest, "list", "b")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"0 dead letters in {prefix}.fn.b.dlq\n"


def test_redrive_republishes_every_event_once(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Every CloudEvent goes back to the function's topic as the original plus redriveid/redriveorigin;
    a second redrive finds nothing left to do."""
    prefix, manifest = _setup(kafka, tmp_path)
    _dead_letters(kafka, prefix, 4, junk=True)
    summary = _summary(_dlq(kafka, manifest, "redrive", "a"))
    assert summary["function"] == "a"
    assert summary["target"] == f"{prefix}.fn.a"
    assert {
        k: summary[k] for k in ("scanned", "matched", "redriven", "skipped_already", "skipped_invalid")
    } == {
        "scanned": 5,
        "matched": 4,
        "redriven": 4,
        "skipped_already": 0,
        "skipped_invalid": 1,
    }
    assert summary["dry_run"] is False
    redriven = kafka.read_exactly(naming.function_topic(prefix, "a"), 4)
    by_id = {}
    for message in redriven:
        headers = message.headers() or []
        assert not [name for name, _ in headers if name.startswith("bus_")]
        event = from_record(message.key(), message.value(), headers)
        by_id[event.id] = (event, message.key())
    assert sorted(by_id) == ["e0", "e1", "e2", "e3"]
    for n in range(4):
        event, key = by_id[f"e{n}"]
        assert event.data == {"n": n}
        assert key == f"k{n % 2}".encode()
        assert event.extensions == {"redriveid": summary["redrive_id"], "redriveorigin": f"dlq/{n}"}
    # Same key, same partition: per-key order is kept.
    partitions: dict[bytes, set[int]] = {}
    for message in redriven:
        partitions.setdefault(message.key(), set()).add(message.partition())
    assert sorted(partitions) == [b"k0", b"k1"]
    assert all(len(found) == 1 for found in partitions.values())
    markers = kafka.read_exactly(naming.dlq_redriven_topic(prefix, "a"), 4)
    assert sorted(message.key() for message in markers) == [b"0", b"1", b"2", b"3"]
    assert {orjson.loads(message.value())["redrive_id"] for message in markers} == {summary["redrive_id"]}

    listed = _listed(kafka, manifest)
    assert [doc["redriven"] is not None for doc in listed] == [True, True, True, True, False]
    assert listed[0]["redriven"]["redrive_id"] == summary["redrive_id"]

    again = _summary(_dlq(kafka, manifest, "redrive", "a"))
    assert (again["matched"], again["redriven"], again["skipped_already"]) == (4, 0, 4)
    kafka.read_exactly(naming.function_topic(prefix, "a"), 4)


def test_redrive_with_a_filter_takes_only_matching_events(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Only the events the pattern matches go back; the others stay, listed as not redriven."""
    prefix, manifest = _setup(kafka, tmp_path)
    _dead_letters(kafka, prefix, 4)
    summary = _summary(_dlq(kafka, manifest, "redrive", "a", "--filter", '{"type": ["order.placed"]}'))
    assert (summary["matched"], summary["redriven"], summary["skipped_already"]) == (2, 2, 0)
    redriven = kafka.read_exactly(naming.function_topic(prefix, "a"), 2)
    assert sorted(_id(m) for m in redriven) == ["e0", "e2"]
    listed = _listed(kafka, manifest)
    assert {doc["id"]: doc["redriven"] is not None for doc in listed} == {
        "e0": True,
        "e1": False,
        "e2": True,
        "e3": False,
    }

    rest = _summary(_dlq(kafka, manifest, "redrive", "a"))
    assert (rest["matched"], rest["redriven"], rest["skipped_already"]) == (4, 2, 2)
    redriven = kafka.read_exactly(naming.function_topic(prefix, "a"), 4)
    assert sorted(_id(m) for m in redriven) == ["e0", "e1", "e2", "e3"]


def test_dry_run_publishes_nothing(kafka: KafkaEnv, tmp_path: Path) -> None:
    """`--dry-run` counts what would go, produces nothing and creates no marker topic."""
    prefix, manifest = _setup(kafka, tmp_path)
    _dead_letters(kafka, prefix, 3)
    summary = _summary(_dlq(kafka, manifest, "redrive", "a", "--dry-run", "--max", "2"))
    assert (summary["dry_run"], summary["selected"], summary["redriven"], summary["skipped_max"]) == (
        True,
        2,
        0,
        1,
    )
    assert kafka.read_all(naming.function_topic(prefix, "a"), idle=1.0) == []
    existing = build(AdminClient, admin_config(kafka.settings(prefix))).list_topics(timeout=10).topics
    assert naming.dlq_redriven_topic(prefix, "a") not in existing
    assert [doc["redriven"] for doc in _listed(kafka, manifest)] == [None, None, None]


def test_the_applied_manifest_is_used_without_f(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Without -f the function is looked up in the manifest `bus apply` stored for the prefix."""
    prefix, manifest = _setup(kafka, tmp_path)
    _dead_letters(kafka, prefix, 1)
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": prefix}
    applied = run_bus("apply", "-f", str(manifest), env=env)
    assert applied.returncode == 0, applied.stderr
    result = run_bus("dlq", "list", "a", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert [orjson.loads(line)["id"] for line in result.stdout.splitlines()] == ["e0"]
    unknown = run_bus("dlq", "redrive", "nope", env=env)
    assert unknown.returncode == 2
    assert unknown.stderr == "bus dlq: unknown function 'nope'; known functions: a, b\n"


def test_usage_errors_exit_2_with_one_line(kafka: KafkaEnv, tmp_path: Path) -> None:
    """An unknown function or an invalid pattern: exit 2, one stderr line naming the problem."""
    _, manifest = _setup(kafka, tmp_path)
    unknown = _dlq(kafka, manifest, "list", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr == "bus dlq: unknown function 'nope'; known functions: a, b\n"
    bad = _dlq(kafka, manifest, "redrive", "a", "--filter", '{"type": "order.placed"}')
    assert bad.returncode == 2
    assert bad.stderr.startswith("bus dlq: --filter: type: ")
    assert bad.stderr.count("\n") == 1


def test_kafka_unavailable_fails_in_one_line_within_the_client_timeout(tmp_path: Path) -> None:
    """No broker: exit 1 with one line naming the address, after the broker check's 10 s, not a hang."""
    manifest = write_manifest(tmp_path, "nobroker", MANIFEST)
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_bus(
        "dlq", "redrive", "a", "-f", str(manifest), env={"KAFKA_BOOTSTRAP_SERVERS": address}, timeout=60
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"bus dlq: cannot reach Kafka at {address}")
    assert last.endswith("or point KAFKA_BOOTSTRAP_SERVERS at a running broker"), "the fix"

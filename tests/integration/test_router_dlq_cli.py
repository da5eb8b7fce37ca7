"""`bus dlq list --router` and `bus dlq redrive --router` against the real broker: the router's dead
letters go back to the ingress topic, once, and the router routes them again by the rules now applied;
one that failed for one target only goes back to that target alone."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import orjson

from bus import naming
from bus.cli_dlq import MESSAGE_WIDTH
from bus.deadletter import dead_letter
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.txloop import TransactionalLoop
from bus.kafka_binding import Record, from_record, header, to_record
from bus.manifest import Manifest, read
from bus.router import Router, TopicWatch
from bus.topology import manifest_topics
from tests.support import KafkaEnv, run_bus, wait_until, write_manifest

MANIFEST = """
functions:
  echo: {handler: "handlers:echo"}
rules:
  - {name: orders, pattern: {type: [order.placed]}, targets: [echo]}
"""


def _original(n: int) -> Record:
    """Event n, keyed `k<n>`, with a trace header the redrive must keep."""
    event = CloudEvent.create(id=f"e{n}", source="tests/router-dlq", type="order.placed", data={"n": n})
    record = to_record(event)
    return Record(
        f"k{n}".encode(), record.value, (("traceparent", f"00-trace-{n}".encode()), *record.headers)
    )


def _router_dead_letters(kafka: KafkaEnv, prefix: str, count: int) -> None:
    """What the router writes when echo's topic was missing: events 0..count-1, then a record that is not
    a CloudEvent and a flow join part the joiner could not fold (read from the joins topic)."""
    ingress = naming.ingress_topic(prefix)
    reason = (
        f"target topic {naming.function_topic(prefix, 'echo')!r} does not exist; `bus apply` creates it again"
    )
    records = [
        dead_letter(_original(n), error_type="UnknownTarget", reason=reason, origin=f"{ingress}/2/{n}")
        for n in range(count)
    ]
    records.append(
        dead_letter(
            Record(b"raw", b"not a cloudevent", ()),
            error_type="InvalidEvent",
            reason="not a valid CloudEvent: ce_specversion: missing",
            origin=f"{ingress}/0/7",
        )
    )
    part = CloudEvent.create(id="part-1", source="tests/router-dlq", type="bus.function.result", data={})
    joins = naming.flow_join_topic(prefix)
    records.append(
        dead_letter(to_record(part), error_type="JoinFailed", reason="no join", origin=f"{joins}/0/3")
    )
    kafka.write(naming.router_dlq_topic(prefix), records)


def _dlq(kafka: KafkaEnv, manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bus("dlq", *args, "-f", str(manifest), env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap})


def _summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    summary: dict[str, Any] = orjson.loads(line)
    return summary


def _listed(kafka: KafkaEnv, manifest: Path) -> list[dict[str, Any]]:
    result = _dlq(kafka, manifest, "list", "--router", "--json")
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def _setup(kafka: KafkaEnv, tmp_path: Path) -> tuple[Manifest, Path]:
    """A fresh prefix with its topics; two router dead letters, a raw record and a join part on its DLQ."""
    path = write_manifest(tmp_path, kafka.prefix(), MANIFEST)
    manifest = read(path)
    ensure_topics(kafka.settings(manifest.prefix), manifest_topics(manifest))
    _router_dead_letters(kafka, manifest.prefix, 2)
    return manifest, path


def _route(kafka: KafkaEnv, manifest: Manifest, count: int) -> None:
    """Run the router over the ingress topic until it has taken `count` records; it watches which
    target topics exist, as `bus.router.serve` does."""
    ingress = naming.ingress_topic(manifest.prefix)
    settings = kafka.settings(manifest.prefix)
    stop = threading.Event()
    router = Router(manifest)
    with (
        TopicWatch(settings, router),
        TransactionalLoop(
            settings, group=kafka.group(), topics=[ingress], transactional_id=kafka.group()
        ) as loop,
    ):
        thread = threading.Thread(target=loop.run, args=(router, stop))
        thread.start()
        try:
            wait_until(
                lambda: loop.records_in >= count, timeout=60, what=f"the router to take {count} records"
            )
        finally:
            stop.set()
            thread.join()


def test_list_shows_each_router_dead_letter_with_its_error_type_and_reason(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """The function listing's columns, oldest first: the router's error type, the origin on ingress, the
    reason; `--json --max 1` the oldest with the full reason."""
    manifest, path = _setup(kafka, tmp_path)
    prefix = manifest.prefix
    table = _dlq(kafka, path, "list", "--router")
    assert table.returncode == 0, table.stderr
    header_line, *lines = table.stdout.splitlines()
    assert header_line.split()[:3] == ["OFFSET", "TIME", "ERROR"]
    assert len(lines) == 4
    first = lines[0].split()
    assert first[0] == "0"
    assert first[2:8] == ["UnknownTarget", "-", "no", "e0", "order.placed", f"{prefix}.ingress/2/0"]
    reason = f"target topic '{prefix}.fn.echo' does not exist; `bus apply` creates it again"
    shown = reason if len(reason) <= MESSAGE_WIDTH else reason[: MESSAGE_WIDTH - 1] + "…"
    assert lines[0].endswith(f"  {shown}"), "the reason, cut to the column's width whatever the prefix"
    assert "<not a CloudEvent>" in lines[2]
    assert lines[3].split()[2] == "JoinFailed"
    assert table.stderr == f"4 dead letters in {prefix}.router.dlq (0 redriven)\n"

    oldest = _dlq(kafka, path, "list", "--router", "--json", "--max", "1")
    assert oldest.returncode == 0, oldest.stderr
    (doc,) = [orjson.loads(line) for line in oldest.stdout.splitlines()]
    assert (doc["id"], doc["error_type"], doc["attempts"]) == ("e0", "UnknownTarget", None)
    assert doc["error_message"].startswith(f"target topic '{prefix}.fn.echo' does not exist")
    assert oldest.stderr == f"4 dead letters in {prefix}.router.dlq (0 redriven); showing the oldest 1\n"


def test_redrive_puts_the_originals_on_ingress_once_and_the_router_routes_them_again(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """Each original record goes to ingress once, with its key and headers and the redrive marker; a
    second redrive publishes nothing; the router, its target there now, routes them."""
    manifest, path = _setup(kafka, tmp_path)
    prefix = manifest.prefix
    ingress = naming.ingress_topic(prefix)
    summary = _summary(_dlq(kafka, path, "redrive", "--router"))
    assert (summary["function"], summary["source"], summary["target"]) == (
        None,
        f"{prefix}.router.dlq",
        ingress,
    )
    counts = ("scanned", "redriven", "skipped_invalid", "skipped_origin")
    assert [summary[name] for name in counts] == [4, 2, 1, 1], "the join part is not an ingress record"
    by_key = {message.key(): message for message in kafka.read_exactly(ingress, 2)}
    assert sorted(by_key) == [b"k0", b"k1"]
    for n in range(2):
        message = by_key[f"k{n}".encode()]
        headers = message.headers() or []
        assert not [name for name, _ in headers if name.startswith("bus_")]
        assert header(headers, "traceparent") == f"00-trace-{n}".encode()
        event = from_record(message.key(), message.value(), headers)
        assert (event.id, event.data) == (f"e{n}", {"n": n})
        assert event.extensions == {"redriveid": summary["redrive_id"], "redriveorigin": f"router.dlq/{n}"}
    markers = kafka.read_exactly(naming.router_dlq_redriven_topic(prefix), 2)
    assert sorted(message.key() for message in markers) == [b"0", b"1"]
    assert [doc["redriven"] is not None for doc in _listed(kafka, path)] == [True, True, False, False]

    again = _summary(_dlq(kafka, path, "redrive", "--router"))
    assert (again["matched"], again["redriven"], again["skipped_already"]) == (2, 0, 2)
    kafka.read_exactly(ingress, 2)

    _route(kafka, manifest, 2)
    routed = kafka.read_exactly(naming.function_topic(prefix, "echo"), 2)
    assert sorted(header(message.headers(), "ce_id") or b"" for message in routed) == [b"e0", b"e1"]
    assert {header(message.headers(), "ce_redriveid") for message in routed} == {
        summary["redrive_id"].encode()
    }


TWO_TARGETS = """
functions:
  echo: {handler: "handlers:echo"}
  audit: {handler: "handlers:echo"}
rules:
  - {name: orders, pattern: {type: [order.placed]}, targets: [echo, audit]}
"""


def test_a_dead_letter_for_one_target_goes_back_to_that_target_only(kafka: KafkaEnv, tmp_path: Path) -> None:
    """audit's topic missing: echo gets the event once and audit's dead letter names it; the redrive
    fails naming `bus apply` until the topic is back, then sends one record to audit and none to echo
    or ingress; a second redrive sends nothing."""
    path = write_manifest(tmp_path, kafka.prefix(), TWO_TARGETS)
    manifest = read(path)
    prefix = manifest.prefix
    settings = kafka.settings(prefix)
    echo, audit = naming.function_topic(prefix, "echo"), naming.function_topic(prefix, "audit")
    ensure_topics(settings, [spec for spec in manifest_topics(manifest) if spec.name != audit])
    ingress = naming.ingress_topic(prefix)
    kafka.write(ingress, [_original(0)])
    _route(kafka, manifest, 1)
    kafka.read_exactly(echo, 1)

    (letter,) = _listed(kafka, path)
    assert (letter["id"], letter["error_type"], letter["target"]) == ("e0", "UnknownTarget", "audit")
    table = _dlq(kafka, path, "list", "--router")
    header_line, line = table.stdout.splitlines()
    assert header_line.split()[-2:] == ["TARGET", "MESSAGE"]
    assert line.split()[8] == "audit"

    for args in ((), ("--dry-run",)):
        refused = _dlq(kafka, path, "redrive", "--router", *args)
        assert refused.returncode == 2
        fix = "run `bus apply` to create it, then redrive again"
        assert refused.stderr == f"bus dlq: target topic {audit!r} does not exist: {fix}\n"

    ensure_topics(settings, [spec for spec in manifest_topics(manifest) if spec.name == audit])
    dry = _summary(_dlq(kafka, path, "redrive", "--router", "--dry-run"))
    assert (dry["selected"], dry["to_targets"], dry["redriven"]) == (1, 1, 0)
    summary = _summary(_dlq(kafka, path, "redrive", "--router"))
    assert (summary["redriven"], summary["to_targets"], summary["skipped_unrouted"]) == (1, 1, 0)
    (redriven,) = kafka.read_exactly(audit, 1)
    event = from_record(redriven.key(), redriven.value(), redriven.headers())
    assert (event.id, event.data) == ("e0", {"n": 0})
    assert event.extensions == {
        "matchedrules": "orders",
        "redriveid": summary["redrive_id"],
        "redriveorigin": "router.dlq/0",
    }
    assert header(redriven.headers() or [], "traceparent") == b"00-trace-0"
    assert redriven.key() == b"k0"
    kafka.read_exactly(echo, 1)
    kafka.read_exactly(ingress, 1)  # the event as first published: nothing went back to ingress
    (marked,) = _listed(kafka, path)
    assert marked["redriven"] is not None

    again = _summary(_dlq(kafka, path, "redrive", "--router"))
    assert (again["redriven"], again["skipped_already"]) == (0, 1)
    kafka.read_exactly(audit, 1)


def test_router_usage_errors_exit_2_before_kafka_is_asked(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Both a function and --router, or neither: exit 2, one line naming the fix."""
    manifest_path = write_manifest(tmp_path, kafka.prefix(), MANIFEST)
    both = _dlq(kafka, manifest_path, "redrive", "echo", "--router")
    assert both.returncode == 2
    fix = "`bus dlq redrive echo` or `bus dlq redrive --router`"
    assert both.stderr == f"bus dlq: give a function F or --router, not both: {fix}\n"
    neither = _dlq(kafka, manifest_path, "list")
    assert neither.returncode == 2
    assert neither.stderr.count("\n") == 1
    assert "--router" in neither.stderr

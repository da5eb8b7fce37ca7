"""The control topic's latest record is the applied manifest (docs/decisions/live-rules.md): one this
bus cannot read is refused, never passed over for an older version; `bus apply` validates as the
`-f` readers do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from bus import naming
from bus.control import CONTROL_KEY, Applied, Refused
from bus.errors import ManifestError
from bus.kafka.config import build, producer_config
from bus.kafka.control_store import apply_file, read_applied
from bus.manifest import read
from tests.support import KafkaEnv, run_bus, write_manifest

V1 = """
functions:
  fa: {handler: "handlers:echo"}
rules:
  - {name: r1, pattern: {type: [a]}, targets: [fa]}
"""

NEWER = orjson.dumps({"format": 2, "version": 2, "applied_at": "t", "manifest": {"rules": []}})
"""A record a later bus might write: readable JSON, a format this bus does not know."""


def store_raw(kafka: KafkaEnv, prefix: str, value: bytes) -> None:
    producer = build(Producer, producer_config(kafka.settings(prefix)))
    producer.produce(naming.control_topic(prefix), value=value, key=CONTROL_KEY)
    assert producer.flush(30) == 0


def applied_then(kafka: KafkaEnv, tmp_path: Path, value: bytes) -> tuple[str, Path]:
    """A fresh prefix with V1 applied (version 1), then `value` stored as the latest record."""
    prefix = kafka.prefix()
    path = write_manifest(tmp_path, prefix, V1)
    assert apply_file(kafka.settings(prefix), path, prefix=None).startswith("applied version 1 ")
    store_raw(kafka, prefix, value)
    return prefix, path


def test_a_latest_record_it_cannot_read_is_refused_not_passed_over_for_the_one_before(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """read_applied reports the unreadable latest record, with the version it states."""
    prefix, _ = applied_then(kafka, tmp_path, NEWER)
    latest, after = read_applied(kafka.settings(prefix), prefix)
    assert isinstance(latest, Refused), latest
    assert (latest.version, latest.offset) == (2, after - 1)
    assert "format 2 is not 1" in latest.reason


def test_the_next_apply_numbers_its_version_above_the_refused_record(kafka: KafkaEnv, tmp_path: Path) -> None:
    """No version number is used twice: after a record stating version 2, the apply stores 3."""
    prefix, path = applied_then(kafka, tmp_path, NEWER)
    path.write_text(path.read_text().replace("{type: [a]}", "{type: [a, b]}"))
    summary = apply_file(kafka.settings(prefix), path, prefix=None)
    assert summary.startswith(f"applied version 3 to prefix {prefix!r}: 1 rules (+r1)"), summary
    latest, _ = read_applied(kafka.settings(prefix), prefix)
    assert isinstance(latest, Applied)
    assert latest.version == 3
    assert latest.manifest().rules[0].name == "r1"


def test_a_refused_record_stating_no_version_refuses_the_apply_and_stores_nothing(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix, path = applied_then(kafka, tmp_path, b"not json")
    _, before = read_applied(kafka.settings(prefix), prefix)
    with pytest.raises(ManifestError, match="states no version to number the next one from"):
        apply_file(kafka.settings(prefix), path, prefix=None)
    latest, after = read_applied(kafka.settings(prefix), prefix)
    assert isinstance(latest, Refused)
    assert after == before


def test_rules_list_and_a_router_without_a_file_say_the_latest_record_cannot_be_read(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """Both exit non-zero with one line naming the record; neither uses version 1 instead."""
    prefix, _ = applied_then(kafka, tmp_path, NEWER)
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": prefix}
    listed = run_bus("rules", "list", env=env, timeout=60)
    assert listed.returncode == 2, "the manifest in force cannot be read: one to fix"
    assert listed.stdout == ""
    assert listed.stderr.startswith(
        f"bus rules: the latest manifest applied for prefix {prefix!r} (version 2, offset 1) cannot be read"
    )
    assert listed.stderr.count("\n") == 1
    router = subprocess.run(
        [sys.executable, "-m", "bus.router"],
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": prefix, "BUS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert router.returncode == 1
    errors = [line for line in router.stderr.splitlines() if line.startswith("router: ")]
    assert errors == [
        f"router: the latest manifest applied for prefix {prefix!r} (version 2, offset 1) cannot be read "
        "(format 2 is not 1; upgrade bus); apply a valid one with `bus apply` or pass -f"
    ], router.stderr


def test_apply_refuses_an_unquoted_date_as_the_file_readers_do_and_stores_nothing(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """`input: {day: 2026-01-31}` is refused by `bus apply` with the message `-f` readers give."""
    prefix = kafka.prefix()
    path = write_manifest(
        tmp_path,
        prefix,
        V1.replace("targets: [fa]", "targets: [{function: fa, input: {day: 2026-01-31}}]"),
    )
    with pytest.raises(ManifestError) as by_file:
        read(path)
    with pytest.raises(ManifestError) as by_apply:
        apply_file(kafka.settings(prefix), path, prefix=None)
    assert str(by_apply.value) == str(by_file.value)
    assert "rules.r1.targets[0].input.day: must be JSON" in str(by_apply.value)
    assert read_applied(kafka.settings(prefix), prefix)[0] is None

"""`bus publish` and `bus tail` against the real broker."""

from __future__ import annotations

import subprocess

import orjson

from bus import naming
from tests.support import KafkaEnv, run_bus


def _bus(kafka: KafkaEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bus(*args, env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap})


def test_publish_prints_the_id_and_tail_shows_the_event(kafka: KafkaEnv) -> None:
    """`bus publish` writes one event to the ingress topic; `bus tail --json` prints it back."""
    prefix = kafka.prefix()
    published = _bus(
        kafka,
        "--prefix",
        prefix,
        "publish",
        "--type",
        "demo.cli",
        "--source",
        "tests/cli",
        "--data",
        '{"n": 1}',
        "--key",
        "k1",
        "--tags",
        "a,b",
    )
    assert published.returncode == 0, published.stderr
    event_id = published.stdout.strip()
    tailed = _bus(
        kafka,
        "tail",
        naming.ingress_topic(prefix),
        "--from-beginning",
        "--max",
        "1",
        "--timeout",
        "60",
        "--json",
    )
    assert tailed.returncode == 0, tailed.stderr
    event = orjson.loads(tailed.stdout.splitlines()[0])
    assert event["id"] == event_id
    assert event["type"] == "demo.cli"
    assert event["data"] == {"n": 1}
    assert event["partitionkey"] == "k1"
    assert event["tags"] == "a,b"


def test_publish_with_invalid_data_fails_with_one_line_naming_the_flag(kafka: KafkaEnv) -> None:
    """Data that is not JSON is refused before anything is sent, in one stderr line."""
    result = _bus(
        kafka, "--prefix", kafka.prefix(), "publish", "--type", "t", "--source", "s", "--data", "{nope"
    )
    assert result.returncode == 2, "bad input exits 2 (README, CLI)"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--data" in lines[0]


def test_tail_of_a_missing_topic_fails_naming_it(kafka: KafkaEnv) -> None:
    """Tailing a topic that does not exist exits 1 with the topic named."""
    result = _bus(kafka, "tail", "no-such-topic-here", "--timeout", "5")
    assert result.returncode == 1
    assert "no-such-topic-here" in result.stderr


def test_tail_with_max_exits_1_when_fewer_events_came(kafka: KafkaEnv) -> None:
    """`--max N` with a timeout that passes first exits 1, so scripts can tell."""
    result = _bus(kafka, "tail", kafka.topic(), "--from-beginning", "--max", "1", "--timeout", "3")
    assert result.returncode == 1
    assert result.stdout == ""

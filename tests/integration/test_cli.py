"""`bus publish` and `bus tail` against the real broker."""

from __future__ import annotations

import subprocess

import orjson
from confluent_kafka.admin import AdminClient

from bus import naming
from bus.avro_codec import to_avro_event
from bus.avro_schema import parse
from bus.events import CloudEvent
from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.schema_store import KafkaSchemaStore
from bus.kafka_binding import to_record
from bus.topology import ingress_topics
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


def test_tail_reads_typed_events_with_the_schemas_of_the_topics_prefix(kafka: KafkaEnv) -> None:
    """`bus tail <prefix>.ingress` without --prefix decodes Avro with that prefix's schemas and
    creates no topic; a record it cannot decode is shown with the reason."""
    prefix, default = kafka.prefix(), kafka.prefix()
    schema = parse({"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]})
    ensure_topics(kafka.settings(prefix), ingress_topics(prefix))
    KafkaSchemaStore(kafka.settings(prefix)).register("order.placed", schema)
    event = CloudEvent.create(id="e-1", source="shop", type="order.placed", data={"id": "o-1"})
    typed = to_record(to_avro_event(event, schema))
    kafka.write(naming.ingress_topic(prefix), [typed])
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": default}
    tail = ("tail", naming.ingress_topic(prefix), "--from-beginning", "--max", "1", "--timeout", "60")
    tailed = run_bus(*tail, "--json", env=env)
    assert tailed.returncode == 0, tailed.stderr
    assert orjson.loads(tailed.stdout)["data"] == {"id": "o-1"}
    assert naming.schema_topic(default) not in _topics(kafka), "tail created the default prefix's schemas"

    unknown = kafka.prefix()  # a prefix whose schemas topic was never created: no schemas, no topic
    ensure_topics(kafka.settings(unknown), [TopicSpec(naming.ingress_topic(unknown), 1)])
    kafka.write(naming.ingress_topic(unknown), [typed])
    shown = run_bus("tail", naming.ingress_topic(unknown), *tail[2:], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "cannot read it: dataschema:" in shown.stdout
    assert "not registered" in shown.stdout
    assert len(shown.stdout.splitlines()) == 1
    assert naming.schema_topic(unknown) not in _topics(kafka)


def _topics(kafka: KafkaEnv) -> set[str]:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    return set(admin.list_topics(timeout=10).topics)

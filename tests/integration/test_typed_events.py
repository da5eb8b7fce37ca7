"""Typed events on the real broker: validated at the edge, carried as Avro, evolved, decoded safely."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bus import naming
from bus.avro_codec import AVRO_CONTENT_TYPE, decode, schema_uri
from bus.avro_schema import load_schema
from bus.control import Applied
from bus.errors import ManifestError
from bus.kafka.control_store import apply_file, read_applied
from bus.kafka.producer import AsyncProducer
from bus.kafka.schema_store import KafkaSchemaStore
from bus.kafka_binding import Record, from_record, header
from tests.support import GatewayProcess, KafkaEnv, run_bus, running_platform, unique, write_manifest

FIELDS: list[dict[str, Any]] = [
    {"name": "id", "type": "string"},
    {"name": "amount", "type": "double"},
    {"name": "currency", "type": "string"},
]
V1 = {"type": "record", "name": "Order", "namespace": "shop", "fields": FIELDS}
V2 = {**V1, "fields": [*FIELDS, {"name": "note", "type": "string", "default": ""}]}
V3 = {**V1, "fields": [{**f, "type": "string"} if f["name"] == "amount" else f for f in FIELDS]}
NULLS = {"type": "array", "items": "null"}
BOMB = b"\x80\xda\xc4\x09\x00"
"""RELIABILITY's fastavro pitfall: five bytes declaring ten million `null` items."""


def typed_manifest(directory: Path, prefix: str, order: dict[str, Any], body: str = "") -> Path:
    """A manifest declaring `order.placed` (with `order`) and `nulls.listed`, the schemas beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "schemas").mkdir(exist_ok=True)
    (directory / "schemas" / "order.avsc").write_bytes(orjson.dumps(order))
    (directory / "schemas" / "nulls.avsc").write_bytes(orjson.dumps(NULLS))
    schemas = "schemas:\n  order.placed: schemas/order.avsc\n  nulls.listed: schemas/nulls.avsc\n"
    return write_manifest(directory, prefix, schemas + body)


def order(data: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": unique("ev"), "source": "shop", "type": "order.placed", "data": data}


def post(url: str, body: Any, *, batch: bool = False) -> httpx.Response:
    content_type = "application/cloudevents-batch+json" if batch else "application/cloudevents+json"
    return httpx.post(
        f"{url}/events", content=orjson.dumps(body), headers={"content-type": content_type}, timeout=30
    )


def test_typed_events_are_validated_at_the_edge_and_written_as_avro(kafka: KafkaEnv, tmp_path: Path) -> None:
    """A bad field gets 400 naming `data.<path>` (`[1].data.<path>` in a batch) and publishes nothing;
    a valid event lands as application/avro with its schema named in ce_dataschema."""
    prefix = kafka.prefix()
    path = typed_manifest(tmp_path, prefix, V1)
    gateway = GatewayProcess(kafka, prefix, tmp_path / "home", manifest=path)
    gateway.start()
    try:
        bad = post(gateway.url, order({"id": "o-1", "amount": "ten", "currency": "EUR"}))
        assert bad.status_code == 400
        assert bad.json()["field"] == "data.amount"
        assert "expected a double, got 'ten'" in bad.json()["reason"]
        good = {"id": "o-2", "amount": 5, "currency": "EUR"}
        batch = post(gateway.url, [order(good), order({"id": "o-3", "amount": 1})], batch=True)
        assert batch.status_code == 400
        assert batch.json()["field"] == "[1].data.currency"
        accepted = post(gateway.url, order(good))
        assert accepted.status_code == 202
    finally:
        gateway.stop()
    (record,) = kafka.read_exactly(naming.ingress_topic(prefix), 1)
    schema = load_schema(tmp_path / "schemas" / "order.avsc", where="test")
    assert header(record.headers(), "content-type") == AVRO_CONTENT_TYPE.encode()
    assert header(record.headers(), "ce_dataschema") == schema_uri("order.placed", schema).encode()
    assert decode(schema, record.value(), max_bytes=10_000, max_items=100) == {**good, "amount": 5.0}
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": prefix}
    tail = run_bus("tail", naming.ingress_topic(prefix), "--from-beginning", "--max", "1", "--json", env=env)
    assert tail.returncode == 0, tail.stderr
    assert orjson.loads(tail.stdout)["data"] == {**good, "amount": 5.0}, "bus tail shows typed data as JSON"


def test_bus_publish_types_events_as_the_gateway_does(kafka: KafkaEnv, tmp_path: Path) -> None:
    """`bus publish` refuses typed data that does not fit the applied schema (exit 2, one line naming
    the field) and writes valid data as Avro, as the gateway would; `-f` types by a file's schemas."""
    prefix = kafka.prefix()
    path = typed_manifest(tmp_path, prefix, V1)
    apply_file(kafka.settings(prefix), path, prefix=prefix)
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": prefix}
    publish = ("publish", "--type", "order.placed", "--source", "shop", "--data")
    for data, field in (
        ('{"id": "x", "amount": "ten", "extra": true}', "data.extra"),
        ('{"id": "x", "amount": "ten", "currency": "EUR"}', "data.amount"),
    ):
        refused = run_bus(*publish, data, env=env)
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert f"{field}:" in line
    other = kafka.prefix()
    by_file = run_bus(*publish, '{"id": "x", "amount": "ten"}', "-f", str(path), "--prefix", other, env=env)
    assert by_file.returncode == 2, by_file.stderr
    assert "data.amount" in by_file.stderr
    good = {"id": "o-1", "amount": 5, "currency": "EUR"}
    published = run_bus(*publish, orjson.dumps(good).decode(), env=env)
    assert published.returncode == 0, published.stderr
    (record,) = kafka.read_exactly(naming.ingress_topic(prefix), 1)
    schema = load_schema(tmp_path / "schemas" / "order.avsc", where="test")
    assert header(record.headers(), "content-type") == AVRO_CONTENT_TYPE.encode()
    assert header(record.headers(), "ce_dataschema") == schema_uri("order.placed", schema).encode()
    assert decode(schema, record.value(), max_bytes=10_000, max_items=100) == {**good, "amount": 5.0}
    assert from_record(record.key(), record.value(), record.headers()).id == published.stdout.strip()


def test_a_rule_matches_typed_data_and_the_handler_gets_it_decoded(kafka: KafkaEnv, tmp_path: Path) -> None:
    """The router decodes Avro to match on `data`, forwards the record as it is; the handler gets a dict."""
    rules = """
functions:
  echo: {handler: "handlers:echo", partitions: 1}
rules:
  - {name: usd, pattern: {type: [order.placed], data: {currency: [USD]}}, targets: [echo]}
"""
    path = typed_manifest(tmp_path, kafka.prefix(), V1, rules)
    with running_platform(kafka, path, tmp_path / "home") as platform:
        prefix = platform.manifest.prefix
        assert post(platform.url, order({"id": "eur", "amount": 1, "currency": "EUR"})).status_code == 202
        assert post(platform.url, order({"id": "usd", "amount": 2, "currency": "USD"})).status_code == 202
        (result,) = kafka.read_exactly(naming.result_topic(prefix, "echo"), 1)
    (routed,) = kafka.read_all(naming.function_topic(prefix, "echo"))
    assert header(routed.headers(), "content-type") == AVRO_CONTENT_TYPE.encode(), "forwarded unchanged"
    data = from_record(result.key(), result.value(), result.headers()).data
    assert data["echo"] == {"id": "usd", "amount": 2.0, "currency": "USD"}


def test_events_a_handler_emits_are_typed_as_the_gateway_types_them(kafka: KafkaEnv, tmp_path: Path) -> None:
    """ctx.emit of a typed type lands on ingress as Avro; data that does not fit fails the invocation
    (dead letter naming the emitted field) and publishes nothing."""
    rules = """
functions:
  relay: {handler: "emitters:relay", partitions: 1}
rules:
  - {name: requests, pattern: {type: [order.requested]}, targets: [relay]}
"""
    path = typed_manifest(tmp_path, kafka.prefix(), V1, rules)
    (tmp_path / "emitters.py").write_text(
        "def relay(event, ctx):\n    ctx.emit('order.placed', event.data)\n    return None\n"
    )
    good = {"id": "o-1", "amount": 5, "currency": "EUR"}
    with running_platform(kafka, path, tmp_path / "home") as platform:
        prefix = platform.manifest.prefix
        for data in ({"id": "o-0", "amount": "ten", "currency": "EUR"}, good):
            requested = {**order(data), "type": "order.requested"}
            assert post(platform.url, requested).status_code == 202
        (letter,) = kafka.read_exactly(naming.dlq_topic(prefix, "relay"), 1)
        kafka.read(
            naming.ingress_topic(prefix),
            until=lambda records: any(header(r.headers(), "ce_type") == b"order.placed" for r in records),
            timeout=60,
        )
    reason = (header(letter.headers(), "bus_error_message") or b"").decode()
    assert reason.startswith("emitted[0].data.amount: expected a double, got 'ten'"), reason
    placed = [
        r
        for r in kafka.read_all(naming.ingress_topic(prefix))
        if header(r.headers(), "ce_type") == b"order.placed"
    ]
    (record,) = placed
    schema = load_schema(tmp_path / "schemas" / "order.avsc", where="test")
    assert header(record.headers(), "content-type") == AVRO_CONTENT_TYPE.encode()
    assert header(record.headers(), "ce_dataschema") == schema_uri("order.placed", schema).encode()
    assert decode(schema, record.value(), max_bytes=10_000, max_items=100) == {**good, "amount": 5.0}


def test_a_v1_worker_reads_events_a_v2_gateway_writes(kafka: KafkaEnv, tmp_path: Path) -> None:
    """v2 adds a defaulted field and is accepted; the worker started on v1 finds the v2 writer in the
    schemas topic, and the v1 handler gets the data without the new field (Avro resolution)."""
    prefix = kafka.prefix()
    rules = """
functions:
  echo: {handler: "handlers:echo", partitions: 1}
rules:
  - {name: orders, pattern: {type: [order.placed], data: {currency: [EUR]}}, targets: [echo]}
"""
    v1_path = typed_manifest(tmp_path / "v1", prefix, V1, rules)
    v2_path = typed_manifest(tmp_path / "v2", prefix, V2, rules)
    with running_platform(kafka, v1_path, tmp_path / "home"):
        # Gateways start from the applied manifest, so v2 is applied; the function is unchanged, so
        # its worker keeps running on v1.
        apply_file(kafka.settings(prefix), v2_path, prefix=prefix)
        gateway = GatewayProcess(kafka, prefix, tmp_path / "home", manifest=v2_path, name="gateway-v2")
        gateway.start()  # registers v2 next to v1: compatible, so it starts
        try:
            data = {"id": "o-9", "amount": 3.5, "currency": "EUR", "note": "v2 only"}
            assert post(gateway.url, order(data)).status_code == 202
        finally:
            gateway.stop()
        (result,) = kafka.read_exactly(naming.result_topic(prefix, "echo"), 1)
    v2 = load_schema(tmp_path / "v2" / "schemas" / "order.avsc", where="test")
    (written,) = kafka.read_all(naming.function_topic(prefix, "echo"))
    assert header(written.headers(), "ce_dataschema") == schema_uri("order.placed", v2).encode()
    echoed = from_record(result.key(), result.value(), result.headers()).data["echo"]
    assert echoed == {"id": "o-9", "amount": 3.5, "currency": "EUR"}


def test_an_incompatible_version_is_refused_when_it_is_registered(kafka: KafkaEnv, tmp_path: Path) -> None:
    """v3 turns `amount` from double into string: registration raises, and a v3 gateway exits 1 naming it."""
    prefix = kafka.prefix()
    typed_manifest(tmp_path / "v1", prefix, V1)
    v3_path = typed_manifest(tmp_path / "v3", prefix, V3)
    store = KafkaSchemaStore(kafka.settings(prefix))
    store.register("order.placed", load_schema(tmp_path / "v1" / "schemas" / "order.avsc", where="v1"))
    store.register("order.placed", load_schema(tmp_path / "v1" / "schemas" / "order.avsc", where="v1"))
    v3 = load_schema(tmp_path / "v3" / "schemas" / "order.avsc", where="v3")
    with pytest.raises(ManifestError) as caught:
        store.register("order.placed", v3)
    assert caught.value.path == "schemas.order.placed"
    assert "data.amount" in caught.value.reason
    gateway = subprocess.run(
        [sys.executable, "-m", "gateway", "--port", "1", "-f", str(v3_path)],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": prefix},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert gateway.returncode == 1
    assert "schemas.order.placed" in gateway.stderr
    assert "data.amount" in gateway.stderr
    fresh = KafkaSchemaStore(kafka.settings(prefix))
    assert fresh.lookup(v3.fingerprint) is None, "the refused version was not written"


def test_apply_refuses_a_schema_the_gateways_would_refuse_and_stores_nothing(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """With v1 registered, applying v3 (`amount` double -> string) raises the gateway's error and
    stores nothing; `bus apply` exits 2 with that one line. Applying v2 (a defaulted field) works."""
    prefix = kafka.prefix()
    v1_path = typed_manifest(tmp_path / "v1", prefix, V1)
    v2_path = typed_manifest(tmp_path / "v2", prefix, V2)
    v3_path = typed_manifest(tmp_path / "v3", prefix, V3)
    assert apply_file(kafka.settings(prefix), v1_path, prefix=None).startswith("applied version 1 ")
    v1 = load_schema(tmp_path / "v1" / "schemas" / "order.avsc", where="v1")
    KafkaSchemaStore(kafka.settings(prefix)).register("order.placed", v1)  # as a v1 gateway does
    with pytest.raises(ManifestError) as caught:
        apply_file(kafka.settings(prefix), v3_path, prefix=None)
    assert caught.value.path == "schemas.order.placed"
    assert caught.value.reason.startswith("is incompatible with version 1 registered in ")
    assert "data.amount: written as a double, cannot be read as a string" in caught.value.reason
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_HOME": str(tmp_path)}
    by_cli = run_bus("apply", "-f", str(v3_path), env=env, timeout=120)
    assert by_cli.returncode == 2, by_cli.stderr
    assert by_cli.stderr == f"bus apply: {caught.value}\n"
    latest, _ = read_applied(kafka.settings(prefix), prefix)
    assert isinstance(latest, Applied)
    assert latest.version == 1, "the refused manifest was not stored"
    v3 = load_schema(tmp_path / "v3" / "schemas" / "order.avsc", where="v3")
    assert KafkaSchemaStore(kafka.settings(prefix)).lookup(v3.fingerprint) is None, "nor its schema"
    assert apply_file(kafka.settings(prefix), v2_path, prefix=None).startswith("applied version 2 ")


def test_a_bomb_on_a_function_topic_ends_in_the_dlq_and_the_worker_keeps_serving(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """Five bytes declaring ten million nulls are refused by the guard; the next event is handled."""
    rules = """
functions:
  echo: {handler: "handlers:echo", partitions: 1}
rules:
  - {name: orders, pattern: {type: [order.placed]}, targets: [echo]}
"""
    path = typed_manifest(tmp_path, kafka.prefix(), V1, rules)
    nulls = load_schema(tmp_path / "schemas" / "nulls.avsc", where="test")
    with running_platform(kafka, path, tmp_path / "home") as platform:
        prefix = platform.manifest.prefix
        topic = naming.function_topic(prefix, "echo")
        bomb = Record(
            b"bomb",
            BOMB,
            (
                ("ce_specversion", b"1.0"),
                ("ce_id", b"bomb-1"),
                ("ce_source", b"attacker"),
                ("ce_type", b"nulls.listed"),
                ("ce_dataschema", schema_uri("nulls.listed", nulls).encode()),
                ("content-type", AVRO_CONTENT_TYPE.encode()),
            ),
        )

        async def produce() -> None:
            async with AsyncProducer(kafka.settings(prefix)) as producer:
                await producer.send(topic, bomb)

        asyncio.run(produce())
        assert post(platform.url, order({"id": "after", "amount": 1, "currency": "EUR"})).status_code == 202
        (result,) = kafka.read_exactly(naming.result_topic(prefix, "echo"), 1)
        (dead,) = kafka.read_exactly(naming.dlq_topic(prefix, "echo"), 1)
    assert from_record(result.key(), result.value(), result.headers()).data["echo"]["id"] == "after"
    assert dead.value() == BOMB
    assert header(dead.headers(), "bus_error_type") == b"InvalidEvent"
    assert b"over the limit" in (header(dead.headers(), "bus_error_message") or b"")

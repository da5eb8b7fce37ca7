"""RELIABILITY R14: overlapping rules, an unknown target, the router `kill -9`ed under load.

Must hold: misroutes 0, exact fan-out counts, no duplicates in function topics (read_committed),
and the events for the missing target in the router DLQ, each once, while the rest flows.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from bus import naming
from bus.events import CloudEvent, to_json_dict
from bus.kafka.config import admin_config, build, producer_config
from bus.kafka_binding import header, to_record
from bus.manifest import read
from bus.routing import route
from bus.settings import KafkaSettings
from tests.support import KafkaEnv, RouterProcess, run_bus, wait_until, write_manifest

MANIFEST = """
functions:
  a: {handler: "handlers:echo", partitions: 3}
  b: {handler: "handlers:echo", partitions: 3}
  c: {handler: "handlers:echo", partitions: 3}
  gone: {handler: "handlers:echo", partitions: 1}
rules:
  - {name: orders, pattern: {type: [{prefix: order.}]}, targets: [a]}
  - {name: eu, pattern: {source: [shop/eu]}, targets: [a, b]}
  - {name: big, pattern: {data: {amount: [{numeric: [">", 100]}]}}, targets: [b, c]}
  - {name: users, pattern: {type: [user.created]}, targets: [gone]}
  - {name: shipped, pattern: {type: [order.shipped]}, tags: {none: [test]}, targets: [c]}
"""

AT_LEAST = 2000
"""Events published at the least; the load goes on until the last kill is done."""
KILLS = 3


def event(n: int) -> CloudEvent:
    rng = random.Random(n)
    return CloudEvent.create(
        id=f"e{n}",
        source=rng.choice(["shop/eu", "shop/us", "crm"]),
        type=rng.choice(["order.placed", "order.shipped", "user.created", "other"]),
        extensions={"partitionkey": f"k{n}", "tags": rng.choice(["prod", "prod,test", "eu"])},
        data={"amount": rng.randint(0, 200), "n": n},
    )


def delete_topic(settings: KafkaSettings, topic: str) -> None:
    """Delete `topic` behind bus's back, as an operator might, and wait until it is gone."""
    admin = build(AdminClient, admin_config(settings))
    admin.delete_topics([topic])[topic].result(30)
    wait_until(lambda: topic not in admin.list_topics(timeout=5).topics, timeout=30, what=f"{topic} deleted")


def test_r14_fan_out_is_exact_through_router_kills_and_a_missing_target(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": None}
    path = write_manifest(tmp_path, prefix, MANIFEST)
    assert run_bus("apply", "-f", str(path), env=env).returncode == 0
    manifest = read(path)
    settings = kafka.settings(prefix)
    delete_topic(settings, naming.function_topic(prefix, "gone"))

    router = RouterProcess(kafka, prefix, tmp_path, env={"BUS_SESSION_TIMEOUT": "6"})
    router.start()
    producer = build(Producer, producer_config(settings))
    ingress = naming.ingress_topic(prefix)

    sent: list[CloudEvent] = []
    killed = threading.Event()

    def load() -> None:
        while len(sent) < AT_LEAST or not killed.is_set():
            for n in range(len(sent), len(sent) + 50):
                sent.append(event(n))
                record = to_record(sent[-1])
                producer.produce(ingress, value=record.value, key=record.key, headers=list(record.headers))
            producer.flush(30)
            time.sleep(0.05)  # pacing the load generator (about 1,000 events/s), not a wait for a condition

    loader = threading.Thread(target=load)
    loader.start()
    kills: list[float] = []
    try:
        for _ in range(KILLS):
            # Each start is a fresh process: its counter starts at 0.
            wait_until(
                lambda: (router.metric("bus_router_events_total") or 0) > 0,
                timeout=60,
                what="the router to route some events before the kill",
            )
            router.kill()
            kills.append(time.monotonic())
            router.start()
        killed.set()
        loader.join()
        expected: dict[str, Counter[str]] = {name: Counter() for name in manifest.functions}
        for published in sent:
            for target in route(to_json_dict(published), manifest.rules):
                expected[target][published.id] += 1

        routed = {name: Counter[str]() for name in manifest.functions}
        for name in ("a", "b", "c"):
            want = sum(expected[name].values())
            records = kafka.read_exactly(naming.function_topic(prefix, name), want, timeout=120)
            routed[name].update(header(r.headers(), "ce_id").decode() for r in records)  # type: ignore[union-attr]
    finally:
        killed.set()
        loader.join()
        router.stop()
    dead = kafka.read_exactly(naming.router_dlq_topic(prefix), sum(expected["gone"].values()), timeout=60)
    dead_ids = Counter(header(r.headers(), "ce_id").decode() for r in dead)  # type: ignore[union-attr]
    reasons = {header(r.headers(), "bus_error_type") for r in dead}

    figures: dict[str, Any] = {
        "events": len(sent),
        "router_kills": len(kills),
        "misroutes": sum(len(routed[n] - expected[n]) for n in ("a", "b", "c")),
        "missing": sum(len(expected[n] - routed[n]) for n in ("a", "b", "c")),
        "duplicates": sum(1 for n in ("a", "b", "c") for count in routed[n].values() if count > 1),
        "fan_out": {n: sum(routed[n].values()) for n in ("a", "b", "c")},
        "dlq_unknown_target": sum(dead_ids.values()),
    }
    print("R14", orjson.dumps(figures).decode())
    for name in ("a", "b", "c"):
        assert routed[name] == expected[name], f"function {name}: routed differs from the rules' answer"
    assert dead_ids == expected["gone"]
    assert reasons == {b"UnknownTarget"}
    assert figures["misroutes"] == figures["missing"] == figures["duplicates"] == 0

"""Flow joins through router `kill -9`s: each run's join is published exactly once, on all its parts.

Two routers run, so two joiners share the join topic's partitions: a kill hands the victim's
partitions to the live one (a cooperative rebalance), and its restart takes some back.

The parts (results of the steps a join follows) are written straight to their results topics, as
workers would, with the second part of each run a chunk behind its first: whenever the router
(and the joiner inside it) is killed, joins wait half-done, and the next process must restore
them from the state topic.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import orjson
from confluent_kafka import Producer

from bus import naming
from bus.events import CloudEvent
from bus.kafka.config import build, producer_config
from bus.kafka_binding import from_record, to_record
from tests.support import KafkaEnv, RouterProcess, run_bus, wait_until, write_manifest

MANIFEST = """
functions:
  features: {handler: "handlers:echo", partitions: 3}
  stats: {handler: "handlers:echo", partitions: 2}
  model: {handler: "handlers:echo", partitions: 3}
flows:
  ml:
    start: {type: [dataset.ready]}
    steps:
      features: {function: features}
      stats: {function: stats}
      model: {function: model, after: [features, stats], timeout: 10m}
"""
RUNS = 600
CHUNK = 25
KILLS = 2


def part(run: int, step: str) -> CloudEvent:
    """What the worker of `step` publishes for run `run`: its result, carrying the flow's run."""
    return CloudEvent.create(
        id=f"{step}-{run}",
        source=f"bus://p/functions/{step}",
        type="bus.function.result",
        datacontenttype="application/json",
        extensions={
            "busflow": "ml",
            "busflowstep": step,
            "busflowrun": f"run-{run}",
            "partitionkey": f"k{run}",
        },
        data={"step": step, "run": run},
    )


def test_joins_are_exact_through_router_kills(kafka: KafkaEnv, tmp_path: Path) -> None:
    prefix = kafka.prefix()
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": None}
    path = write_manifest(tmp_path, prefix, MANIFEST)
    assert run_bus("apply", "-f", str(path), env=env).returncode == 0
    settings = kafka.settings(prefix)
    # Two routers, so two joiners share the join topic: each kill hands partitions to a live one.
    routers = [
        RouterProcess(kafka, prefix, tmp_path / name, env={"BUS_SESSION_TIMEOUT": "6"})
        for name in ("r1", "r2")
    ]
    for router in routers:
        router.start()
    producer = build(Producer, producer_config(settings))
    written = [0]

    def send(run: int, step: str) -> None:
        record = to_record(part(run, step))
        topic = naming.result_topic(prefix, step)
        producer.produce(topic, value=record.value, key=record.key, headers=list(record.headers))

    def load() -> None:
        # Chunk i's first parts go out with chunk i-1's second parts: a chunk of joins always waits.
        for start in range(0, RUNS + CHUNK, CHUNK):
            for run in range(start, min(start + CHUNK, RUNS)):
                send(run, "features")
            for run in range(max(start - CHUNK, 0), min(start, RUNS)):
                send(run, "stats")
            producer.flush(30)
            written[0] = min(start + CHUNK, RUNS)
            time.sleep(0.1)  # pacing the load (about 250 parts/s), not a wait for a condition

    loader = threading.Thread(target=load)
    loader.start()
    joined_metric = 'bus_flow_joins_total{outcome="joined"}'
    try:
        for kill in range(1, KILLS + 1):
            due = RUNS * kill // (KILLS + 1)
            victim = routers[(kill - 1) % len(routers)]

            def ready(due: int = due) -> bool:
                published = sum(router.metric(joined_metric) or 0 for router in routers)
                return published > 0 and written[0] >= due

            wait_until(ready, timeout=90, what=f"joins published before kill {kill}")
            victim.kill()
            victim.start()
        loader.join()
        records = kafka.read_exactly(naming.function_topic(prefix, "model"), RUNS, timeout=120)
    finally:
        loader.join()
        for router in routers:
            router.stop()
    joined = [from_record(r.key(), r.value(), r.headers()) for r in records]
    runs = Counter(event.extensions["busflowrun"] for event in joined)
    restored = [
        orjson.loads(line)["joins"]
        for router in routers
        for line in router.log.read_text().splitlines()
        if '"joins_restored"' in line
    ]
    figures = {
        "runs": RUNS,
        "router_kills": KILLS,
        "joined": len(joined),
        "duplicates": sum(1 for count in runs.values() if count > 1),
        "restored": restored,
    }
    print("joins through kills", orjson.dumps(figures).decode())
    assert runs == Counter(f"run-{n}" for n in range(RUNS))
    assert max(restored) > 0, "no restart found joins to restore"
    for event in joined:
        n = int(str(event.extensions["busflowrun"]).removeprefix("run-"))
        assert event.data == {
            "features": {"step": "features", "run": n},
            "stats": {"step": "stats", "run": n},
        }
        assert event.type == "bus.flow.joined"
    assert not kafka.read_all(naming.error_topic(prefix, "model"), idle=0.5)

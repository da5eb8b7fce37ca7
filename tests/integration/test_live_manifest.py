"""`bus apply` reaches a running platform's workers (SPEC §3: running components pick it up): a
function added gets replicas, a changed one restarts its replicas on the new spec, a dropped one
is stopped, all without restarting `bus up`'s stack."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import httpx

from bus import naming
from bus.kafka_binding import from_record
from bus.localkafka import free_port
from bus.manifest import read
from bus.stack import Stack
from tests.support import KafkaEnv, run_bus, unique, wait_until

HANDLERS = """
def echo(event, ctx):
    return {"echo": event.data}


def shout(event, ctx):
    return {"shout": str(event.data).upper()}
"""
SCALING = "partitions: 1, scaling: {min: 0, max: 1, cooldown: 30s}"
V1 = f"""
functions:
  a: {{handler: "live:echo", {SCALING}}}
rules:
  - {{name: to-a, pattern: {{type: [a.go]}}, targets: [a]}}
"""
V2 = f"""
functions:
  a: {{handler: "live:shout", {SCALING}}}
  b: {{handler: "live:echo", {SCALING}}}
rules:
  - {{name: to-a, pattern: {{type: [a.go]}}, targets: [a]}}
  - {{name: to-b, pattern: {{type: [b.go]}}, targets: [b]}}
"""
V3 = V1.replace("live:echo", "live:shout")


def test_apply_adds_changes_and_drops_functions_of_a_running_stack(kafka: KafkaEnv, tmp_path: Path) -> None:
    prefix = kafka.prefix()
    (tmp_path / "live.py").write_text(HANDLERS)
    path = tmp_path / "bus.yaml"
    path.write_text(f"prefix: {prefix}\n{V1}")
    port = free_port()
    environ = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_HOME": str(tmp_path / "home")}
    stack = Stack(path, read(path), http_port=port, environ=environ)
    stop = threading.Event()
    runner = threading.Thread(target=stack.run, args=(stop,), daemon=True)
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": None}

    def publish(type_: str, data: Any) -> None:
        event = {"specversion": "1.0", "id": unique("e"), "source": "tests/live", "type": type_, "data": data}
        answer = httpx.post(
            f"http://127.0.0.1:{port}/events",
            json=event,
            headers={"content-type": "application/cloudevents+json"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text

    def results(function: str) -> list[Any]:
        topic = naming.result_topic(prefix, function)
        return [from_record(m.key(), m.value(), m.headers()).data for m in kafka.read_all(topic, idle=0.3)]

    try:
        stack.start()
        runner.start()
        supervisor = stack.supervisor
        assert supervisor is not None
        publish("a.go", "one")
        wait_until(lambda: results("a") == [{"echo": "one"}], timeout=60, what="a's first result")

        # v2: a's handler changes, b is new. No restart of the stack.
        path.write_text(f"prefix: {prefix}\n{V2}")
        assert run_bus("apply", "-f", str(path), env=env).returncode == 0
        wait_until(lambda: "b" in supervisor.pools, timeout=30, what="a pool for the new function b")
        publish("a.go", "two")
        publish("b.go", "three")
        wait_until(
            lambda: {"shout": "TWO"} in results("a"), timeout=60, what="a's result from its new handler"
        )
        wait_until(lambda: results("b") == [{"echo": "three"}], timeout=60, what="b's result")
        dropped = supervisor.pools["b"]
        assert dropped.actual == 1

        # v3: b is dropped: its replica is stopped and its pool forgotten.
        path.write_text(f"prefix: {prefix}\n{V3}")
        assert run_bus("apply", "-f", str(path), env=env).returncode == 0
        wait_until(lambda: "b" not in supervisor.pools, timeout=30, what="b's pool gone")
        wait_until(
            lambda: all(slot.process is None for slot in dropped.slots.values()),
            timeout=60,
            what="b's replica stopped",
        )
        assert results("a") == [{"echo": "one"}, {"shout": "TWO"}]
    finally:
        stop.set()
        if runner.is_alive():
            runner.join(timeout=30)
        stack.shutdown()

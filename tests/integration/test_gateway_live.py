"""A running gateway follows `bus apply` (SPEC §3): a function added becomes invocable and a
schedule added fires, without restarting the gateway; credentials whose secret it lacks fail closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bus import naming
from bus.kafka_binding import from_record
from tests.support import GatewayProcess, KafkaEnv, run_bus, unique, wait_until

V1 = """
functions:
  a: {handler: "m:f"}
"""


def test_a_running_gateway_takes_new_functions_and_schedules_from_bus_apply(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    path = tmp_path / "bus.yaml"
    path.write_text(f"prefix: {prefix}\n{V1}")
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": None}
    assert run_bus("apply", "-f", str(path), env=env).returncode == 0
    gateway = GatewayProcess(kafka, prefix, tmp_path / "home", manifest=path)
    gateway.start()
    try:

        def invoke(name: str) -> int:
            url = f"{gateway.url}/functions/{name}/invoke?mode=async"
            return httpx.post(url, json={"n": 1}, timeout=30).status_code

        assert invoke("b") == 404
        # A new function and a one-time schedule, applied while the gateway runs.
        tick = unique("tick")
        at = (datetime.now(UTC) + timedelta(seconds=8)).strftime("%Y-%m-%dT%H:%M:%S")
        v2 = (
            f"prefix: {prefix}\n{V1}  b: {{handler: 'm:f'}}\n"
            f"schedules:\n  - {{name: once, at: '{at}', event: {{type: {tick}, data: {{x: 1}}}}}}\n"
        )
        path.write_text(v2)
        assert run_bus("apply", "-f", str(path), env=env).returncode == 0
        wait_until(lambda: invoke("b") == 202, timeout=30, what="function b invocable")

        def fired() -> list[object]:
            records = kafka.read_all(naming.ingress_topic(prefix), idle=0.3)
            events = [from_record(r.key(), r.value(), r.headers()) for r in records]
            return [e for e in events if e.type == tick]

        wait_until(fired, timeout=60, what="the schedule applied after start to fire")
        # Credentials whose secret the gateway lacks: taken, failing closed (every caller refused,
        # the variable named), never the last manifest kept with credentials off.
        bad = v2 + "sources:\n  http: {auth: jwt, jwt: {secret_env: BUS_TEST_ABSENT, audience: bus}}\n"
        path.write_text(bad)
        assert run_bus("apply", "-f", str(path), env=env).returncode == 0
        wait_until(lambda: invoke("b") == 401, timeout=30, what="invocations refused for lack of the secret")
        assert "BUS_TEST_ABSENT" in gateway.log.read_text()
    finally:
        gateway.stop()


KEYS = """
sources:
  http:
    auth: api_keys
    keys:
"""
ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef01"


def test_a_restarted_gateway_keeps_a_key_revoked_by_bus_apply(kafka: KafkaEnv, tmp_path: Path) -> None:
    """A gateway restarted with its old `-f` file still refuses the key `bus apply` removed (401)."""
    prefix = kafka.prefix()
    started_with = tmp_path / "v1.yaml"
    started_with.write_text(
        f"prefix: {prefix}\n{KEYS}      - {{id: alice, secret_env: ALICE_KEY}}\n"
        "      - {id: bob, secret_env: BOB_KEY}\n"
    )
    revoked = tmp_path / "v2.yaml"
    revoked.write_text(f"prefix: {prefix}\n{KEYS}      - {{id: bob, secret_env: BOB_KEY}}\n")
    env: dict[str, str | None] = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": None}
    assert run_bus("apply", "-f", str(started_with), env=env).returncode == 0
    gateway = GatewayProcess(
        kafka, prefix, tmp_path / "home", manifest=started_with, env={"ALICE_KEY": ALICE, "BOB_KEY": BOB}
    )

    def post(key: str) -> int:
        event = {"specversion": "1.0", "id": unique("ev"), "source": "s", "type": "t"}
        headers = {"authorization": f"Bearer {key}", "content-type": "application/cloudevents+json"}
        return httpx.post(f"{gateway.url}/events", json=event, headers=headers, timeout=30).status_code

    gateway.start()
    try:
        assert post(ALICE) == 202
        assert run_bus("apply", "-f", str(revoked), env=env).returncode == 0
        wait_until(lambda: post(ALICE) == 401, timeout=30, what="alice's key revoked")
        gateway.kill()  # crashed; bus up (or Kubernetes) starts it again with the same -f file
        gateway.start()
        assert post(ALICE) == 401
        assert post(BOB) == 202
    finally:
        gateway.stop()

"""RELIABILITY S1/S6 while a gateway runs: `bus apply` turning on API keys and a signed object store
whose secret variable the gateway lacks fails those items closed; auth never stays off."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import orjson

from bus.signatures import sign
from tests.support import GatewayProcess, KafkaEnv, run_bus, unique, wait_until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notifications"
MINIO_BODY = (FIXTURES / "minio_webhook_put.json").read_bytes()
SHOP_KEY = "shop-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
V2 = """
sources:
  http:
    auth: api_keys
    keys:
      - {id: shop, secret_env: BUS_TEST_SHOP_KEY}
      - {id: other, secret_env: BUS_TEST_OTHER_KEY}
  object_stores:
    - {name: uploads, provider: minio, secret_env: BUS_TEST_UPLOADS_SECRET}
"""


def _post(url: str, key: str | None = None) -> httpx.Response:
    event = {"specversion": "1.0", "id": unique("ev"), "source": "app://shop/web", "type": "order.placed"}
    headers = {"content-type": "application/cloudevents+json"}
    if key is not None:
        headers["x-api-key"] = key
    return httpx.post(f"{url}/events", content=orjson.dumps(event), headers=headers, timeout=30)


def test_applied_credentials_whose_secrets_are_missing_fail_closed_on_a_running_gateway(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """Auth off, then api_keys plus a minio store whose secret is unset: unauthenticated events get
    401 (never 202 again), the key whose variable is set works, the one unset is refused, minio
    notifications get 401 naming the variable, `bus apply` warned about both variables, and a restarted
    gateway starts the same way."""
    prefix = kafka.prefix()
    path = tmp_path / "bus.yaml"
    path.write_text(f"prefix: {prefix}\n")
    env: dict[str, str | None] = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "BUS_PREFIX": None,
        "BUS_TEST_SHOP_KEY": SHOP_KEY,
        "BUS_TEST_OTHER_KEY": None,
        "BUS_TEST_UPLOADS_SECRET": None,
    }
    assert run_bus("apply", "-f", str(path), env=env).returncode == 0
    gateway = GatewayProcess(kafka, prefix, tmp_path / "home", env={"BUS_TEST_SHOP_KEY": SHOP_KEY})
    gateway.start()
    try:
        assert _post(gateway.url).status_code == 202  # auth off
        path.write_text(f"prefix: {prefix}\n{V2}")
        applied = run_bus("apply", "-f", str(path), env=env)
        assert applied.returncode == 0, applied.stderr
        warnings = [line for line in applied.stderr.splitlines() if "warning" in line]
        assert len(warnings) == 2, applied.stderr
        assert all("gateway's environment" in line for line in warnings)
        assert {line.split()[3] for line in warnings} == {"BUS_TEST_OTHER_KEY", "BUS_TEST_UPLOADS_SECRET"}

        wait_until(lambda: _post(gateway.url).status_code == 401, timeout=30, what="auth turned on")
        for _ in range(5):  # and it stays on
            assert _post(gateway.url).status_code == 401
        assert _post(gateway.url, SHOP_KEY).status_code == 202
        assert _post(gateway.url, OTHER_KEY).status_code == 401

        signed = sign(b"any-secret-0123456789", MINIO_BODY, timestamp=int(time.time()), delivery="d-1")
        for headers in ({}, signed):
            refused = httpx.post(f"{gateway.url}/notifications/minio", content=MINIO_BODY, headers=headers)
            assert refused.status_code == 401
            assert "set BUS_TEST_UPLOADS_SECRET" in refused.json()["reason"]

        logged = [json.loads(line) for line in gateway.log.read_text().splitlines() if line.startswith("{")]
        missing = [doc for doc in logged if doc["event"] == "secret_missing"]
        assert {doc["variable"] for doc in missing} == {"BUS_TEST_OTHER_KEY", "BUS_TEST_UPLOADS_SECRET"}
        assert all(doc["level"] == "error" for doc in missing)
        assert not [doc for doc in logged if doc["event"] == "control_record_refused"]
        assert SHOP_KEY not in gateway.log.read_text()

        # A restart starts from the applied manifest the same way: failing closed, not exiting.
        gateway.stop()
        gateway.start()
        assert _post(gateway.url).status_code == 401
        assert _post(gateway.url, SHOP_KEY).status_code == 202
        restarted = httpx.post(f"{gateway.url}/notifications/minio", content=MINIO_BODY, timeout=30)
        assert restarted.status_code == 401
        assert "BUS_TEST_UPLOADS_SECRET" in restarted.json()["reason"]
    finally:
        gateway.stop()

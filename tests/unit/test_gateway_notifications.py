"""Signed notifications at the gateway, without a broker: a delivery id is refused as a replay (409)
only once its publish was acknowledged, and only for the sender that used it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from bus.errors import KafkaUnavailable
from bus.kafka_binding import Record
from bus.signatures import sign
from gateway.settings import GatewaySettings
from tests.support import serving_gateway

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notifications"
S3_BODY = (FIXTURES / "s3_put.json").read_bytes()
MINIO_BODY = (FIXTURES / "minio_webhook_put.json").read_bytes()
S3_SECRET, MINIO_SECRET = b"s3-secret-0123456789abcdef", b"minio-secret-0123456789abcd"


class _Stalling:
    """A publisher whose first publish waits until `let_go` is set, then fails; later ones succeed."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.let_go = asyncio.Event()
        self.published: list[tuple[str, Record]] = []
        self.calls = 0

    async def publish(self, records: Sequence[tuple[str, Record]]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            await self.let_go.wait()
            raise KafkaUnavailable("Kafka did not acknowledge in time")
        self.published.extend(records)

    async def connected(self, *, wait: float) -> bool:
        return True


def test_a_retry_while_the_first_attempt_is_publishing_gets_503_and_the_delivery_survives() -> None:
    """The retry of an unacknowledged delivery gets 503 with Retry-After, not 409: when the first
    attempt then fails, the next retry publishes it; once acknowledged, a replay gets 409."""
    headers = sign(S3_SECRET, S3_BODY, timestamp=int(time.time()), delivery="d-1")
    publisher = _Stalling()

    async def scenario() -> None:
        settings = GatewaySettings(webhook_secrets={"s3": (S3_SECRET,)})
        async with serving_gateway(publisher, settings) as client:

            async def post() -> httpx.Response:
                return await client.post("/notifications/s3", content=S3_BODY, headers=headers)

            first = asyncio.create_task(post())
            await asyncio.wait_for(publisher.entered.wait(), timeout=10)
            retry = await post()
            assert retry.status_code == 503
            assert retry.headers["retry-after"] == "1"
            assert retry.json()["error"] == "delivery_in_flight"
            publisher.let_go.set()
            assert (await first).status_code == 503  # the first attempt failed: nothing stored yet
            assert (await post()).status_code == 202
            replay = await post()
            assert replay.status_code == 409
            assert replay.json()["error"] == "duplicate_delivery"

    asyncio.run(scenario())
    assert len(publisher.published) == 1


def test_two_providers_may_use_the_same_delivery_id() -> None:
    """Delivery ids are unique per sender: s3's "42" and minio's "42" are two deliveries, both published."""
    publisher = _Stalling()
    publisher.calls = 1  # no stall: every publish succeeds
    now = int(time.time())

    async def scenario() -> None:
        settings = GatewaySettings(webhook_secrets={"s3": (S3_SECRET,), "minio": (MINIO_SECRET,)})
        async with serving_gateway(publisher, settings) as client:
            s3 = sign(S3_SECRET, S3_BODY, timestamp=now, delivery="42")
            minio = sign(MINIO_SECRET, MINIO_BODY, timestamp=now, delivery="42")
            assert (await client.post("/notifications/s3", content=S3_BODY, headers=s3)).status_code == 202
            response = await client.post("/notifications/minio", content=MINIO_BODY, headers=minio)
            assert response.status_code == 202, response.text
            replay = await client.post("/notifications/minio", content=MINIO_BODY, headers=minio)
            assert replay.status_code == 409

    asyncio.run(scenario())
    assert len(publisher.published) == 2

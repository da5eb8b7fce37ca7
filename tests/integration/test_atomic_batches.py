"""All-or-nothing batches (issue 3): a batch of events is published whole or not at all."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import orjson
import pytest
from starlette.testclient import TestClient

from bus import naming
from bus.errors import KafkaUnavailable, PublishError
from bus.kafka.admin import ensure_topics
from bus.kafka.batches import TransactionalPublisher
from bus.kafka_binding import Record, header
from bus.localkafka import free_port
from bus.settings import KafkaSettings
from bus.topology import TopicSpec
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support import KafkaEnv, unique

BATCH = {"content-type": "application/cloudevents-batch+json"}
TOPIC_LIMIT = 20_000
"""max.message.bytes of the test's ingress topic: lower than the gateway's own record limit."""


def _event(event_id: str, data: object = "small") -> dict[str, object]:
    return {"specversion": "1.0", "id": event_id, "source": "s", "type": "t", "data": data}


@pytest.fixture
def gateway(kafka: KafkaEnv) -> Iterator[tuple[TestClient, str]]:
    """A gateway whose ingress topic refuses records the gateway itself would let through."""
    settings = kafka.settings(kafka.prefix())
    ingress = naming.ingress_topic(settings.prefix)
    ensure_topics(settings, [TopicSpec(ingress, 3, {"max.message.bytes": str(TOPIC_LIMIT)})])
    with TestClient(create_app(GatewaySettings(kafka=settings, instance=unique("gw")))) as client:
        yield client, ingress


def test_a_batch_with_one_record_the_broker_refuses_publishes_none_of_it(
    kafka: KafkaEnv, gateway: tuple[TestClient, str]
) -> None:
    """The broker refuses one event of five: the caller gets an error, and no event of the batch is read."""
    client, ingress = gateway
    refused = os.urandom(TOPIC_LIMIT).hex()  # incompressible, over the topic's limit
    batch = [_event(f"a{i}") for i in range(4)] + [_event("a4", refused)]
    answer = client.post("/events", content=orjson.dumps(batch), headers=BATCH)
    assert answer.status_code == 503, answer.text
    good = client.post("/events", content=orjson.dumps([_event("b0"), _event("b1")]), headers=BATCH)
    assert good.status_code == 202, good.text
    # read_committed: the two events of the good batch, and nothing of the refused one.
    records = kafka.read_exactly(ingress, 2)
    assert sorted(header(r.headers(), "ce_id") or b"" for r in records) == [b"b0", b"b1"]


def test_a_single_event_and_a_batch_are_both_readable_after_their_202(
    kafka: KafkaEnv, gateway: tuple[TestClient, str]
) -> None:
    """A single event (idempotent producer) and a batch (one transaction) are both there after 202."""
    client, ingress = gateway
    single = client.post(
        "/events",
        content=orjson.dumps(_event("one")),
        headers={"content-type": "application/cloudevents+json"},
    )
    batch = client.post("/events", content=orjson.dumps([_event(f"m{i}") for i in range(50)]), headers=BATCH)
    assert (single.status_code, batch.status_code) == (202, 202)
    assert batch.json()["ids"] == [f"m{i}" for i in range(50)]
    assert len(kafka.read_exactly(ingress, 51)) == 51


def test_concurrent_batches_share_transactions_and_a_refused_one_fails_alone(kafka: KafkaEnv) -> None:
    """Batches queued together commit in shared transactions; a refused batch fails only its own caller."""
    topic = unique("t")
    settings = kafka.settings()
    ensure_topics(settings, [TopicSpec(topic, 2, {"max.message.bytes": str(TOPIC_LIMIT)})])

    async def scenario() -> tuple[int, list[str]]:
        async with TransactionalPublisher(settings, transactional_id=unique("tx")) as publisher:

            async def send(index: int, size: int = 10) -> str:
                records = [(topic, Record(key=f"k{index}".encode(), value=os.urandom(size), headers=()))] * 2
                try:
                    await publisher.send_batch(records)
                except PublishError:
                    return "refused"
                return "ok"

            together = await asyncio.gather(*(send(i) for i in range(200)))
            assert set(together) == {"ok"}
            shared = publisher.transactions
            sizes = [2 * TOPIC_LIMIT if i == 207 else 10 for i in range(200, 220)]
            mixed = await asyncio.gather(
                *(send(i, size) for i, size in zip(range(200, 220), sizes, strict=True))
            )
            return shared, list(mixed)

    shared, mixed = asyncio.run(scenario())
    assert shared < 20, f"200 concurrent batches took {shared} transactions"
    assert [i for i, outcome in enumerate(mixed, 200) if outcome == "refused"] == [207]
    records = kafka.read_exactly(topic, 2 * 219)
    assert b"k207" not in {r.key() for r in records}


def test_batches_are_answered_by_their_deadline_when_kafka_is_unreachable() -> None:
    """With no broker, every queued batch gets KafkaUnavailable by its deadline, none later."""
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", delivery_timeout=10.0)
    record = Record(key=b"k", value=b"v", headers=())

    async def scenario() -> tuple[float, list[object]]:
        async with TransactionalPublisher(dead, transactional_id=unique("tx")) as publisher:
            started = time.monotonic()
            sends = (publisher.send_batch([("t", record), ("t", record)], within=1.5) for _ in range(5))
            outcomes = await asyncio.gather(*sends, return_exceptions=True)
            return time.monotonic() - started, list(outcomes)

    elapsed, outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, KafkaUnavailable) for outcome in outcomes), outcomes
    assert elapsed < 4.0, f"answered after {elapsed:.1f} s"

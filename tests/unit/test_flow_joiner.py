"""The joiner's steps (bus.flow_joiner.Joiner.step) over stand-in Kafka clients: what one
transaction holds, what waits, and what an abort leaves. The broker-level guarantees (restore,
kills, fencing) are tested on the real broker in tests/integration/test_flow_join_faults.py."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from confluent_kafka import KafkaError as ClientError
from confluent_kafka import KafkaException, TopicPartition

from bus.events import CloudEvent
from bus.flow_joiner import UNKNOWN_GRACE_MS, Joiner
from bus.flow_joins import Waiting, state_key
from bus.kafka_binding import from_record, to_record
from bus.manifest import Manifest, parse
from bus.settings import KafkaSettings
from tests.support import JOIN_FLOW

NOW = 1_800_000_000.0
JOIN_TOPIC = "p.flows.joins"


class Message:
    def __init__(self, record: Any, *, partition: int, offset: int, timestamp_ms: int) -> None:
        self._record, self._partition, self._offset, self._ts = record, partition, offset, timestamp_ms

    def topic(self) -> str:
        return JOIN_TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._record.key  # type: ignore[no-any-return]

    def value(self) -> bytes | None:
        return self._record.value  # type: ignore[no-any-return]

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._record.headers)

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def error(self) -> None:
        return None


class Consumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[int, int]] = []

    def consumer_group_metadata(self) -> str:
        return "generation-1"

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(JOIN_TOPIC, p) for p in range(6)]


class Producer:
    def __init__(self, *, fail_commit: bool = False) -> None:
        self.open: list[tuple[str, Any, Any, int | None, Any]] = []
        self.committed: list[tuple[str, Any, Any, int | None, Any]] = []
        self.offsets: list[list[tuple[int, int]]] = []
        self.fail_commit = fail_commit
        self.aborts = 0

    def begin_transaction(self) -> None:
        self.open = []

    def produce(
        self, topic: str, value: Any = None, key: Any = None, headers: Any = None, partition: Any = None
    ) -> None:
        self.open.append((topic, key, value, partition, headers))

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: Any, timeout: float
    ) -> None:
        self.offsets.append([(tp.partition, tp.offset) for tp in offsets])

    def commit_transaction(self, timeout: float) -> None:
        if self.fail_commit:
            error = ClientError(ClientError._FENCED, "fenced", txn_requires_abort=True)
            raise KafkaException(error)
        self.committed.extend(self.open)

    def abort_transaction(self, timeout: float) -> None:
        self.aborts += 1


def manifest() -> Manifest:
    return parse(yaml.safe_load(JOIN_FLOW), prefix="p")


def joiner(
    producer: Producer | None = None, *, max_record_bytes: int = 1_000_000
) -> tuple[Joiner, Consumer, Producer]:
    settings = KafkaSettings(prefix="p", max_record_bytes=max_record_bytes)
    made = Joiner(settings, manifest(), clock=lambda: NOW)
    consumer, producer = Consumer(), producer or Producer()
    made._consumer, made._producer = consumer, producer  # type: ignore[assignment]
    return made, consumer, producer


def part(
    step: str, run: str, data: Any, *, partition: int = 0, offset: int = 0, join: str = "model"
) -> Message:
    event = CloudEvent.create(
        id=f"{step}-{run}",
        source=f"bus://p/functions/{step}",
        type="bus.function.result",
        extensions={"busflow": "ml", "busflowstep": step, "busflowrun": run, "busflowjoin": join},
        data=data,
    )
    return Message(to_record(event), partition=partition, offset=offset, timestamp_ms=int(NOW * 1000))


def sent(producer: Producer, topic: str) -> list[Any]:
    return [(key, value, partition) for t, key, value, partition, _ in producer.committed if t == topic]


def test_a_complete_join_publishes_once_with_its_state_and_offsets_in_one_transaction() -> None:
    made, _, producer = joiner()
    assert made.step([part("a", "r1", {"x": 1}, offset=4), part("b", "r1", [2], offset=5)]) is True
    ((_, key, value, _, headers),) = [out for out in producer.committed if out[0] == "p.fn.model"]
    joined = from_record(key, value, headers)
    assert key == b"r1"
    assert joined.data == {"a": {"x": 1}, "b": [2]}
    state = sent(producer, "p.flows.joins.state")
    assert [(k, orjson.loads(v)["done"], p) for k, v, p in state] == [
        (state_key("ml", "model", "r1"), True, 0)
    ]
    assert producer.offsets == [[(0, 6)]]


def test_a_part_of_a_join_not_in_the_rules_yet_waits_then_goes_to_the_dlq() -> None:
    made, consumer, producer = joiner()
    young = part("a", "r1", 1, join="other", offset=7)
    assert made.step([young]) is None
    assert consumer.seeks == [(0, 7)]
    assert producer.committed == []
    old = part("a", "r1", 1, join="other", offset=7)
    old._ts -= UNKNOWN_GRACE_MS + 1
    assert made.step([old]) is True
    ((_, _, _),) = sent(producer, "p.router.dlq")


def test_a_restored_deadline_fires_only_once_its_partition_was_read_to_the_end() -> None:
    made, _, producer = joiner()
    late = Waiting(
        flow="ml", step="model", run="r9", deadline_ms=int(NOW * 1000) - 1, parts={"a": {"data": 1}}
    )
    made._waiting = {1: {state_key("ml", "model", "r9"): late}}
    made._offsets = {1: 40}
    made._recount()
    assert made.step([]) is False  # partition 1 not read to its end yet: its backlog may hold b
    made._caught_up.add(1)
    assert made.step([]) is True
    ((_, value, _),) = sent(producer, "p.fn.model.errors")
    error = orjson.loads(value)
    assert (error["error_type"], error["message"]) == (
        "JoinTimeout",
        "join ml.model waited 60s for b (arrived: a)",
    )
    assert sent(producer, "p.flows.joins.state") == [(state_key("ml", "model", "r9"), None, 1)]
    # The timeout's transaction carries the partition's offset: a zombie's would be fenced.
    assert producer.offsets == [[(1, 40)]]


def test_an_aborted_transaction_keeps_the_joins_as_they_were_and_their_deadlines_due() -> None:
    made, consumer, producer = joiner(Producer(fail_commit=True))
    late = Waiting(
        flow="ml", step="model", run="r9", deadline_ms=int(NOW * 1000) - 1, parts={"a": {"data": 1}}
    )
    made._waiting = {0: {state_key("ml", "model", "r9"): late}}
    made._offsets, made._caught_up = {0: 3}, {0}
    made._recount()
    assert made.step([part("a", "r2", 1, offset=3)]) is False
    assert (producer.aborts, consumer.seeks) == (1, [(0, 3)])
    assert made._waiting[0] == {state_key("ml", "model", "r9"): late}
    producer.fail_commit = False
    assert made.step([part("a", "r2", 1, offset=3)]) is True
    assert len(sent(producer, "p.fn.model.errors")) == 1


def test_a_join_too_large_ends_with_an_error_that_leaves_the_data_out() -> None:
    made, _, producer = joiner(max_record_bytes=3_000)
    big = "x" * 2_000
    assert made.step([part("a", "r1", big, offset=0), part("b", "r1", big, offset=1)]) is True
    assert sent(producer, "p.fn.model") == []
    ((_, value, _),) = sent(producer, "p.fn.model.errors")
    error = orjson.loads(value)
    assert error["error_type"] == "JoinTooLarge"
    assert error["event_truncated"] is True
    assert "data" not in error["event"]


def test_a_part_without_a_run_goes_to_the_dlq() -> None:
    made, _, producer = joiner()
    message = part("a", "r1", 1)
    message._record = message._record._replace(
        headers=tuple(h for h in message._record.headers if h[0] != "ce_busflowrun")
    )
    assert made.step([message]) is True
    assert len(sent(producer, "p.router.dlq")) == 1

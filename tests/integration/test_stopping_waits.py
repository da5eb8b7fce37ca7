"""A process told to stop gives up its waits on Kafka at once, on the real broker.

The joiner of flow joins restores a partition's state by waiting until no transaction is open on
its state partition, then reading it to the end (bus.flow_joiner). A transaction left open by a
crashed owner holds that wait for up to its timeout; a router stopping meanwhile must not wait
with it (a SIGTERM is answered in moments, RELIABILITY's graceful shutdown).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import yaml
from confluent_kafka import Producer

from bus import naming
from bus.errors import Stopped
from bus.flow_joiner import JoinService
from bus.kafka.admin import ensure_topics, wait_settled
from bus.kafka.config import build, producer_config
from bus.kafka.reader import read_to_end
from bus.manifest import parse
from bus.topology import join_topics
from tests.support import JOIN_FLOW, KafkaEnv, unique, wait_until


@contextmanager
def open_transaction(kafka: KafkaEnv, topic: str, partitions: int) -> Iterator[None]:
    """A transaction with a record on every partition of `topic`, open until the block ends (aborted)."""
    producer = build(Producer, producer_config(kafka.settings(), transactional_id=unique("open-txn")))
    producer.init_transactions(30)
    producer.begin_transaction()
    for partition in range(partitions):
        producer.produce(topic, b"left open", b"key", partition=partition)
    assert producer.flush(10) == 0
    try:
        yield
    finally:
        producer.abort_transaction(30)


def stop_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.daemon = True
    timer.start()
    return stop


def test_waits_for_open_transactions_end_when_told_to_stop(kafka: KafkaEnv) -> None:
    topic = kafka.topic(partitions=2)
    settings = kafka.settings()
    with open_transaction(kafka, topic, 2):
        started = time.monotonic()
        with pytest.raises(Stopped):
            wait_settled(settings, topic, [0, 1], timeout=60, stop=stop_after(0.3))
        assert time.monotonic() - started < 5

        # read_committed stops at the open transaction: the end is never reached while it stays.
        started = time.monotonic()
        with pytest.raises(Stopped):
            read_to_end(settings, topic, timeout=60, stop=stop_after(0.3))
        assert time.monotonic() - started < 5


def test_a_joiner_stopping_during_its_restore_ends_at_once_without_processing(
    kafka: KafkaEnv, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = kafka.prefix()
    manifest = parse(yaml.safe_load(JOIN_FLOW), prefix=prefix)
    specs = join_topics(prefix)
    ensure_topics(kafka.settings(prefix), specs)
    state = naming.flow_join_state_topic(prefix)
    caplog.set_level(logging.INFO)
    with open_transaction(kafka, state, specs[1].partitions):
        service = JoinService(kafka.settings(prefix))
        service.__enter__()
        service.update(manifest)
        # The joiner's group takes the partitions, then the restore waits on the open transaction.
        wait_until(lambda: "joins_restoring" in caplog.text or None, timeout=30, what="the restore began")
        started = time.monotonic()
        service.__exit__(None, None, None)
        stopped_in = time.monotonic() - started
    assert stopped_in < 5, f"the joiner took {stopped_in:.1f}s to stop"
    assert "joins_restored" not in caplog.text  # nothing restored, so nothing processed on part of it

"""`bus kafka start|stop|status`: a real KRaft broker as a child process that keeps its data."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from confluent_kafka.admin import AdminClient

from bus import localkafka
from bus.kafka.admin import ensure_topics
from bus.kafka.producer import AsyncProducer
from bus.kafka.reader import read_topic
from bus.kafka_binding import Record
from bus.settings import KafkaSettings
from bus.topology import TopicSpec
from tests.support import run_bus


def _bus(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return run_bus(*args, env={"BUS_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": None})


def test_stopped_and_restarted_broker_keeps_topics_and_data(tmp_path: Path) -> None:
    """A record written before `bus kafka stop` is read back after `bus kafka start`."""
    port = localkafka.free_port()
    started = _bus("kafka", "start", "--port", str(port), home=tmp_path)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == f"127.0.0.1:{port}"
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    try:
        ensure_topics(settings, [TopicSpec("kept", 2)])

        async def produce() -> None:
            async with AsyncProducer(settings) as producer:
                await producer.send("kept", Record(b"k", b"survives a restart", ()))

        asyncio.run(produce())
        stopped = _bus("kafka", "stop", home=tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        assert _bus("kafka", "status", home=tmp_path).returncode == 1
        restarted = _bus("kafka", "start", home=tmp_path)
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout.strip() == f"127.0.0.1:{port}", "the restarted broker reuses its port"
        status = _bus("kafka", "status", home=tmp_path)
        assert status.returncode == 0
        assert f"127.0.0.1:{port}" in status.stdout
        values = [m.value() for m in read_topic(settings, "kept", timeout=30, idle_timeout=3)]
        assert values == [b"survives a restart"]
        formatted = localkafka._cluster_id(tmp_path / "kafka")
        assert formatted, "the data dir names its cluster"
        assert localkafka._answering_cluster(settings.bootstrap_servers) == formatted, "the broker is ours"
        admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
        admin.list_topics("never-created-by-accident", timeout=10)
        assert "never-created-by-accident" not in admin.list_topics(timeout=10).topics, "auto-creation is off"
    finally:
        _bus("kafka", "stop", home=tmp_path)


def test_starting_twice_returns_the_running_broker(tmp_path: Path) -> None:
    """`start` on a data dir whose broker runs answers with that broker instead of a second one."""
    first = localkafka.start(tmp_path, environ=os.environ, port=localkafka.free_port())
    try:
        second = localkafka.start(tmp_path, environ=os.environ)
        assert second == first
        assert localkafka.status(tmp_path) == first
    finally:
        assert localkafka.stop(tmp_path) == first
    assert localkafka.status(tmp_path) is None

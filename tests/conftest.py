"""The session's Kafka broker: `KAFKA_BOOTSTRAP_SERVERS`, else testcontainers, else `bus kafka start`."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import localkafka
from tests.support import KafkaEnv

# testcontainers' KafkaContainer drives Confluent's image layout (its start script edits
# /etc/confluent/docker/*), so the Docker path uses cp-kafka 7.9 (Apache Kafka 3.9) in KRaft mode.
# Untested on the development machine, which has no Docker daemon.
KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--events N` sets the size of the reliability scenarios (CI: 2,000; soak: 100,000)."""
    parser.addoption("--events", type=int, default=2000, help="events per reliability scenario")


@pytest.fixture(scope="session")
def events_n(request: pytest.FixtureRequest) -> int:
    """Number of events a reliability scenario publishes."""
    return int(request.config.getoption("--events"))


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Apache Kafka broker for the whole test session."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        container = (
            KafkaContainer(KAFKA_IMAGE)
            .with_kraft()
            # What bus's own broker sets: transactions on one node, no topics created on demand.
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        )
        with container:
            yield str(container.get_bootstrap_server())
        return
    data_dir: Path = tmp_path_factory.mktemp("kafka")
    state = localkafka.start(data_dir, environ=os.environ, port=localkafka.free_port())
    try:
        yield state.bootstrap
    finally:
        localkafka.stop(data_dir)


@pytest.fixture(scope="session")
def kafka(kafka_bootstrap: str) -> KafkaEnv:
    """The broker plus helpers for unique topics, groups and prefixes."""
    return KafkaEnv(kafka_bootstrap)

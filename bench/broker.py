"""The broker a bench run measures, and the names of the topics and groups it creates there.

Without `KAFKA_BOOTSTRAP_SERVERS`, a fresh local KRaft broker is started in a temporary data
dir and stopped (its data deleted) when the run ends, however it ends.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import local_broker_pid
from bus import localkafka
from bus.kafka.admin import ensure_topics, wait_for_broker
from bus.logs import log_event
from bus.settings import KafkaSettings, load_kafka
from bus.topology import TopicSpec

__all__ = ["BenchKafka", "open_broker"]

logger = logging.getLogger("bench")


@dataclass(frozen=True, slots=True)
class BenchKafka:
    """A reachable broker and the run id that keeps this run's topics and groups apart."""

    settings: KafkaSettings
    run: str
    """Random hex shared by every name this run creates."""
    started: bool
    """True when the bench started (and will stop) this broker."""
    broker_pid: int | None = None
    """The broker's process when it runs on this machine and can be told apart (bench.cpu)."""

    @property
    def bootstrap(self) -> str:
        """The bootstrap address every client of the run uses."""
        return self.settings.bootstrap_servers

    @property
    def platform_prefix(self) -> str:
        """Topic prefix of the platform processes the thin path starts (no dots allowed there)."""
        return f"bench-{self.run}"

    def topic(self, label: str, partitions: int) -> str:
        """Create the topic of one measurement; fail if it already existed (it must be fresh)."""
        name = f"bench.{self.run}.{label}"
        created = ensure_topics(self.settings, [TopicSpec(name, partitions)])
        if name not in created:
            raise RuntimeError(f"topic {name!r} already existed: each measurement needs a fresh topic")
        return name

    def group(self, label: str) -> str:
        """Consumer group of one measurement."""
        return f"bench.{self.run}.{label}"


@contextmanager
def open_broker(environ: Mapping[str, str]) -> Iterator[BenchKafka]:
    """The broker of `KAFKA_BOOTSTRAP_SERVERS`, else a local one started for this run only."""
    run = uuid.uuid4().hex[:8]
    if environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        settings = load_kafka(environ, prefix=f"bench-{run}")
        wait_for_broker(settings, timeout=30.0)
        local = local_broker_pid(settings.bootstrap_servers)
        yield BenchKafka(settings, run, started=False, broker_pid=local)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="bus-bench-"))
    try:
        state = localkafka.start(data_dir, environ=environ, port=localkafka.free_port())
        log_event(logger, "bench_broker_started", bootstrap=state.bootstrap, data_dir=str(data_dir))
        settings = KafkaSettings(bootstrap_servers=state.bootstrap, prefix=f"bench-{run}")
        yield BenchKafka(settings, run, started=True, broker_pid=state.pid)
    finally:
        localkafka.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)

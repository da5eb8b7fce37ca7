"""librdkafka configurations with every safety-relevant option set explicitly."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import KafkaException

from bus.errors import ConfigError
from bus.logs import RepeatFilter
from bus.settings import KafkaSettings

__all__ = ["admin_config", "build", "consumer_config", "producer_config"]

T = TypeVar("T")

_CLIENT_LOGS = logging.getLogger("bus.librdkafka")
_CLIENT_LOGS.addFilter(RepeatFilter())  # a broker down: one line a minute per kind, not hundreds


def build(factory: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    """Create a client, turning a rejected option into a ConfigError that names it."""
    try:
        return factory(config)
    except (KafkaException, ValueError, TypeError) as exc:
        reason = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        raise ConfigError(f"Kafka client option rejected: {reason} (check BUS_KAFKA_* variables)") from exc


def _base(settings: KafkaSettings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.dns.lookup": "use_all_dns_ips",
        # librdkafka's own log lines go through `logging`, so they come out as structured JSON too.
        "logger": _CLIENT_LOGS,
        **settings.extra,
    }


def admin_config(settings: KafkaSettings) -> dict[str, Any]:
    """Admin client options."""
    return _base(settings)


def producer_config(
    settings: KafkaSettings, *, transactional_id: str | None = None, linger_ms: float = 2.0
) -> dict[str, Any]:
    """An idempotent acks=all producer; transactional when `transactional_id` is given."""
    config: dict[str, Any] = {
        **_base(settings),
        # librdkafka's defaults are acks=all but idempotence off: a retried batch could duplicate.
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": linger_ms,
        "compression.type": "lz4",
        # Room for the record framing above bus's own per-record limit, checked before producing.
        "message.max.bytes": settings.max_record_bytes + 65_536,
        # A record not acknowledged by then fails its delivery report: callers answer 503, never hang.
        "message.timeout.ms": int(settings.delivery_timeout * 1000),
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        # A transaction spans produce + commit only (never handler calls): a crashed process's
        # open transaction holds back read_committed readers at most this long.
        config["transaction.timeout.ms"] = 15_000
        # Back-to-back transactions meet CONCURRENT_TRANSACTIONS while the previous one completes;
        # librdkafka's 100 ms default backoff then stalls every batch (measured: 94 ms -> 12 ms
        # per send_offsets_to_transaction at 10 ms; confluent-kafka-python#967).
        config["retry.backoff.ms"] = 10
    return config


def consumer_config(
    settings: KafkaSettings,
    group: str,
    *,
    offset_reset: str = "earliest",
    assignment: str = "cooperative-sticky",
) -> dict[str, Any]:
    """A group consumer that commits only what was processed, reading committed records only.

    `assignment` is cooperative-sticky unless a caller needs same-numbered partitions of its
    topics kept together (`range`, eager: the function runtime and its retry topics).
    """
    return {
        **_base(settings),
        "group.id": group,
        # Offsets are committed by bus after processing (or inside a transaction), never auto-committed.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": offset_reset,
        "isolation.level": "read_committed",
        # Incremental cooperative rebalancing: partitions not moving keep flowing during a rebalance.
        "partition.assignment.strategy": assignment,
        "session.timeout.ms": int(settings.session_timeout * 1000),
        "heartbeat.interval.ms": max(1000, int(settings.session_timeout * 1000) // 4),
        "max.poll.interval.ms": 300_000,
    }

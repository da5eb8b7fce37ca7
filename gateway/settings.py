"""Gateway settings, loaded once in `main()`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bus.errors import ConfigError
from bus.settings import KafkaSettings, load_kafka

__all__ = ["GatewaySettings", "load"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """How the gateway listens and what it accepts."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = 8080
    """HTTP port."""
    max_body_bytes: int = 1_048_576
    """Largest accepted request body in bytes (1 MiB, as EventBridge's PutEvents allows 1 MiB)."""
    shutdown_grace: float = 10.0
    """Seconds in-flight requests may take to finish after SIGTERM."""


def load(environ: Mapping[str, str], *, port: int | None = None, host: str | None = None) -> GatewaySettings:
    """Settings from `BUS_HTTP_HOST`, `BUS_HTTP_PORT`, `BUS_MAX_BODY_BYTES` and the Kafka variables."""
    return GatewaySettings(
        kafka=load_kafka(environ),
        host=host or environ.get("BUS_HTTP_HOST", "127.0.0.1"),
        port=port or _int(environ, "BUS_HTTP_PORT", 8080, high=65535),
        max_body_bytes=_int(environ, "BUS_MAX_BODY_BYTES", 1_048_576, high=2**31),
    )


def _int(environ: Mapping[str, str], name: str, default: int, *, high: int) -> int:
    raw = environ.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= high:
        raise ConfigError(f"{name}={raw!r} must be a whole number from 1 to {high}")
    return int(raw)

"""Settings every bus process shares, loaded once from the environment in `main()`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bus import naming
from bus.errors import ConfigError

__all__ = ["DEFAULT_BOOTSTRAP", "KafkaSettings", "bus_home", "load_kafka"]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
_EXTRA_PREFIX = "BUS_KAFKA_"


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSettings:
    """How to reach Kafka."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    """Comma-separated host:port list; default: the local broker of `bus kafka start`."""
    prefix: str = naming.DEFAULT_PREFIX
    """Topic namespace (tenant)."""
    delivery_timeout: float = 10.0
    """Seconds a produced record may wait for the broker's acknowledgement before it fails."""
    max_record_bytes: int = 1_000_000
    """Largest record bus produces (key + value + headers), in bytes; the broker's default limit."""
    session_timeout: float = 10.0
    """Seconds after which a silent consumer leaves its group."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """librdkafka options passed through as given (SASL/TLS: `security.protocol`, `sasl.*`, `ssl.*`)."""


def bus_home(environ: Mapping[str, str]) -> Path:
    """Folder for bus's local state (the local broker's data, pid and log): `$BUS_HOME` or ~/.bus."""
    home = environ.get("BUS_HOME")
    return Path(home) if home else Path(environ.get("HOME", "~")).expanduser() / ".bus"


def load_kafka(environ: Mapping[str, str], *, prefix: str | None = None) -> KafkaSettings:
    """Settings from `KAFKA_BOOTSTRAP_SERVERS`, `BUS_PREFIX`, `BUS_SESSION_TIMEOUT` (seconds) and
    `BUS_KAFKA_<OPTION>` variables.

    `BUS_KAFKA_SECURITY_PROTOCOL=SASL_SSL` becomes the client option `security.protocol`.
    Without `KAFKA_BOOTSTRAP_SERVERS`, the broker of `bus kafka start` is used when it runs.
    """
    from bus.localkafka import running_bootstrap  # noqa: PLC0415 - avoids an import cycle

    bootstrap = environ.get("KAFKA_BOOTSTRAP_SERVERS") or running_bootstrap(bus_home(environ))
    extra = {
        name[len(_EXTRA_PREFIX) :].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(_EXTRA_PREFIX)
    }
    chosen_prefix = prefix or environ.get("BUS_PREFIX") or naming.DEFAULT_PREFIX
    return KafkaSettings(
        bootstrap_servers=bootstrap or DEFAULT_BOOTSTRAP,
        prefix=naming.check_name("prefix", chosen_prefix),
        session_timeout=_seconds(environ, "BUS_SESSION_TIMEOUT", 10.0),
        extra=extra,
    )


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ConfigError(f"{name}={raw!r} must be a number of seconds from 0 to 3600, e.g. 10")
    return value

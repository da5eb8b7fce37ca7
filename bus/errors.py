"""Errors raised by bus.

    BusError                      root of everything bus raises on purpose
    ├── InvalidEvent              an event breaks CloudEvents or bus rules (names the field)
    ├── ManifestError             bus.yaml is invalid (names the path in the manifest)
    ├── ConfigError               a name, flag, variable or client option is invalid (also a ValueError)
    ├── KafkaError                a Kafka client call failed (wraps the client's error)
    │   ├── KafkaUnavailable      the broker cannot be reached in time (retriable)
    │   └── PublishError          the broker refused a record (retriable if the client says so)
    ├── LocalKafkaError           the local broker cannot be fetched, started or stopped
    ├── RegistryError             a schema registry call failed
    │   └── RegistryUnavailable   the registry cannot be reached or answered 5xx (retriable)
    ├── RefusedError              a request the sender can fix; `reason` says what and how
    │   ├── SignatureError        a webhook signature is missing, wrong or stale (HTTP 401)
    │   ├── AuthError             a credential is missing, unknown, revoked or expired (HTTP 401)
    │   └── ForbiddenError        a credential does not cover this event; names the field (HTTP 403)
    └── HandlerLoadError          a function's `module:callable` cannot be imported

Retryability is a property of the error: check ``exc.retriable``.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BusError",
    "ConfigError",
    "ForbiddenError",
    "HandlerLoadError",
    "InvalidEvent",
    "KafkaError",
    "KafkaUnavailable",
    "LocalKafkaError",
    "ManifestError",
    "PublishError",
    "RefusedError",
    "RegistryError",
    "RegistryUnavailable",
    "SignatureError",
]


class BusError(Exception):
    """Root of every error bus raises on purpose."""

    retriable: bool = False


class InvalidEvent(BusError):
    """An event breaks the CloudEvents spec or a bus rule; `field` names where."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ManifestError(BusError):
    """The manifest is invalid; `path` names the offending entry (e.g. `functions.hello.handler`)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ConfigError(BusError, ValueError):
    """A name, flag, environment variable or Kafka client option is invalid; the message says which."""


class KafkaError(BusError):
    """A Kafka client call failed."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class KafkaUnavailable(KafkaError):
    """The broker could not be reached before the deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=True)

    @classmethod
    def at(cls, bootstrap: str, reason: object) -> KafkaUnavailable:
        """No broker answers at `bootstrap`: the message names it, the client's reason and the fix."""
        return cls(
            f"cannot reach Kafka at {bootstrap}: {reason}; start it (`bus up`, or `bus kafka start`) "
            "or point KAFKA_BOOTSTRAP_SERVERS at a running broker"
        )


class Stopped(BusError):
    """A wait given up because its process is stopping (a graceful shutdown, not a failure)."""


class PublishError(KafkaError):
    """The broker did not acknowledge a record."""


class LocalKafkaError(BusError):
    """The local broker could not be fetched, started or stopped."""


class RegistryError(BusError):
    """A schema registry call failed."""


class RegistryUnavailable(RegistryError):
    """The schema registry could not be reached, timed out or answered with a server error."""

    retriable = True


class HandlerLoadError(BusError):
    """A function handler `module:callable` could not be loaded."""


class RefusedError(BusError):
    """A request refused for a reason its sender can fix; `reason` says what and how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignatureError(RefusedError):
    """A notification's signature headers are missing, malformed, stale or do not match (HTTP 401)."""


class AuthError(RefusedError):
    """The request's credentials are missing, malformed, unknown or invalid (HTTP 401)."""


class ForbiddenError(RefusedError):
    """Valid credentials that do not cover this event (HTTP 403); `field` is `source`, `type` or `tenant`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"

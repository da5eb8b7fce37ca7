"""Gateway settings, loaded once in `main()`."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bus import naming
from bus.auth import ApiKeys, JwtVerifier, Principal
from bus.errors import ConfigError
from bus.manifest import Function, HttpAuth, ObjectStore
from bus.schedules import Schedule
from bus.settings import KafkaSettings, load_kafka
from bus.typed_events import EdgeSchemas

__all__ = ["GatewaySettings", "InvokeTarget", "authenticator", "invoke_targets", "load", "webhook_secrets"]


@dataclass(frozen=True, slots=True)
class InvokeTarget:
    """Where an invocation of one function goes, and how long it may run."""

    topic: str
    timeout: float
    """The function's own timeout, in seconds."""
    retry_after: float | None = None
    """The first backoff of the function's retry policy, in seconds: the `Retry-After` of a `Retry`
    that names no delay (None: unknown, 1 s)."""


def invoke_targets(prefix: str, functions: Mapping[str, Function]) -> dict[str, InvokeTarget]:
    """The invocable functions of a manifest."""
    return {
        name: InvokeTarget(
            naming.function_topic(prefix, name),
            function.timeout,
            function.retry.backoff[0] if function.retry.backoff else None,
        )
        for name, function in functions.items()
    }


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
    max_header_bytes: int = 16_384
    """Largest request line plus headers in bytes (16 KiB, h11's default); larger is answered 431."""
    header_timeout: float = 10.0
    """Seconds a request's line and headers may take to arrive; slower is answered 408."""
    body_timeout: float = 10.0
    """Seconds a request body may take to arrive in full; slower is answered 408."""
    shutdown_grace: float = 10.0
    """Seconds in-flight requests may take to finish after SIGTERM."""
    webhook_secrets: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    """Provider -> accepted webhook secrets; a provider listed here only takes signed notifications."""
    signature_tolerance: float = 300.0
    """Seconds a signed notification's timestamp may differ from the gateway's clock."""
    auth: ApiKeys | JwtVerifier | None = None
    """Who may `POST /events` (`sources.http` in the manifest); None: anyone."""
    schedules: tuple[Schedule, ...] = ()
    """The manifest's schedules; the replica that leads the timer group fires them."""
    schemas: EdgeSchemas = field(default_factory=EdgeSchemas)
    """Schemas of typed events, registered at start (`gateway.__main__`); default: none, all JSON."""
    functions: Mapping[str, InvokeTarget] = field(default_factory=dict)
    """Functions `POST /functions/{name}/invoke` may call, by name (the manifest's)."""
    instance: str = "gateway"
    """This replica's name, unique among the prefix's gateways; default `<hostname>-<port>`.

    It names the transactional id of batch publishing, so a restarted replica aborts at once
    whatever transaction its crashed predecessor left open."""


def load(
    environ: Mapping[str, str],
    *,
    port: int | None = None,
    host: str | None = None,
    object_stores: Sequence[ObjectStore] = (),
    http_auth: HttpAuth | None = None,
    schedules: Sequence[Schedule] = (),
) -> GatewaySettings:
    """Settings from `BUS_HTTP_HOST`, `BUS_HTTP_PORT`, `BUS_MAX_BODY_BYTES`, `BUS_GATEWAY_INSTANCE`,
    `BUS_MAX_HEADER_BYTES`, `BUS_HEADER_TIMEOUT` and `BUS_BODY_TIMEOUT` (whole seconds),
    the Kafka variables and the webhook secrets the manifest's object stores name (`secret_env`,
    comma-separated to rotate)."""
    kafka = load_kafka(environ)
    port = port or _int(environ, "BUS_HTTP_PORT", 8080, high=65535)
    return GatewaySettings(
        webhook_secrets=webhook_secrets(environ, object_stores),
        auth=authenticator(environ, http_auth or HttpAuth(), default_tenant=kafka.prefix),
        kafka=kafka,
        schedules=tuple(schedules),
        host=host or environ.get("BUS_HTTP_HOST", "127.0.0.1"),
        port=port,
        instance=naming.check_name(
            "BUS_GATEWAY_INSTANCE", environ.get("BUS_GATEWAY_INSTANCE") or _default_instance(port)
        ),
        max_body_bytes=_int(environ, "BUS_MAX_BODY_BYTES", 1_048_576, high=2**31),
        max_header_bytes=_int(environ, "BUS_MAX_HEADER_BYTES", 16_384, high=2**20),
        header_timeout=_int(environ, "BUS_HEADER_TIMEOUT", 10, high=3600),
        body_timeout=_int(environ, "BUS_BODY_TIMEOUT", 10, high=3600),
    )


def _default_instance(port: int) -> str:
    host = re.sub(r"[^a-zA-Z0-9_-]", "-", socket.gethostname())[:80] or "gateway"
    return f"{host}-{port}"


def webhook_secrets(
    environ: Mapping[str, str], object_stores: Sequence[ObjectStore]
) -> dict[str, tuple[bytes, ...]]:
    """Provider -> the secrets of its stores that declare `secret_env`; a missing variable is an error."""
    secrets: dict[str, list[bytes]] = {}
    for store in object_stores:
        if store.secret_env is None:
            continue
        value = environ.get(store.secret_env, "")
        parts = [part.strip().encode() for part in value.split(",") if part.strip()]
        if not parts:
            raise ConfigError(
                f"object store {store.name!r}: set {store.secret_env} to its webhook secret "
                "(comma-separated to rotate)"
            )
        secrets.setdefault(store.provider, []).extend(parts)
    return {provider: tuple(values) for provider, values in secrets.items()}


def authenticator(
    environ: Mapping[str, str], http_auth: HttpAuth, *, default_tenant: str
) -> ApiKeys | JwtVerifier | None:
    """The credential check `sources.http` asks for, with its secrets read from the environment."""
    if http_auth.mode == "api_keys" and not http_auth.keys:
        return ApiKeys(_environment_keys(environ, default_tenant))
    if http_auth.mode == "api_keys":
        return ApiKeys(
            [
                (
                    _secret(environ, key.secret_env, f"API key {key.id!r}"),
                    Principal(
                        key_id=key.id,
                        tenant=key.tenant or default_tenant,
                        sources=key.sources,
                        types=key.types,
                        rate=key.rate,
                        burst=key.burst,
                    ),
                )
                for key in http_auth.keys
            ]
        )
    if http_auth.mode == "jwt":
        assert http_auth.jwt_secret_env is not None  # the manifest requires both for auth: jwt
        assert http_auth.jwt_audience is not None
        secret = _secret(environ, http_auth.jwt_secret_env, "JWT verification")
        return JwtVerifier(secret, http_auth.jwt_audience, issuer=http_auth.jwt_issuer)
    return None


def _environment_keys(environ: Mapping[str, str], tenant: str) -> list[tuple[bytes, Principal]]:
    """Unscoped keys from `BUS_API_KEYS=id:key[,id:key]`, for `auth: api_keys` without listed keys."""
    raw = environ.get("BUS_API_KEYS", "")
    keys: list[tuple[bytes, Principal]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key_id, sep, key = item.partition(":")
        if not sep or not key_id or not key:
            raise ConfigError(
                "BUS_API_KEYS must be id:key[,id:key], e.g. shop:3f9c...; an entry lacks its ':'"
            )
        keys.append((key.encode(), Principal(key_id=key_id, tenant=tenant)))
    if not keys:
        raise ConfigError(
            "auth: api_keys: list keys under sources.http.keys or set BUS_API_KEYS=id:key[,id:key]"
        )
    return keys


def _secret(environ: Mapping[str, str], name: str, what: str) -> bytes:
    value = environ.get(name, "")
    if not value:
        raise ConfigError(f"{what}: set {name} (sources.http in bus.yaml names it)")
    return value.encode()


def _int(environ: Mapping[str, str], name: str, default: int, *, high: int) -> int:
    raw = environ.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= high:
        raise ConfigError(f"{name}={raw!r} must be a whole number from 1 to {high}")
    return int(raw)

"""Gateway settings, loaded once in `main()`."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bus import naming
from bus.auth import ApiKeys, FailClosed, JwtVerifier, Principal
from bus.errors import ConfigError
from bus.manifest import Function, HttpAuth, ObjectStore
from bus.schedules import Schedule
from bus.settings import KafkaSettings, load_kafka
from bus.typed_events import EdgeSchemas

__all__ = [
    "GatewaySettings",
    "InvokeTarget",
    "Unusable",
    "authenticator",
    "invoke_targets",
    "load",
    "webhook_secrets",
]


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
    webhook_missing: Mapping[str, tuple[Unusable, ...]] = field(default_factory=dict)
    """Provider -> its stores whose secret variable is missing; a provider listed here only takes
    notifications signed with another of its secrets, and refuses all when it has none (fail closed)."""
    signature_tolerance: float = 300.0
    """Seconds a signed notification's timestamp may differ from the gateway's clock."""
    auth: ApiKeys | JwtVerifier | FailClosed | None = None
    """Who may `POST /events` (`sources.http` in the manifest); None: anyone; FailClosed: nobody."""
    unusable: tuple[Unusable, ...] = ()
    """The manifest's secret variables the environment could not supply (logged as errors)."""
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
    the Kafka variables, the webhook secrets the manifest's object stores name (`secret_env`,
    comma-separated to rotate) and the credentials `sources.http` names. A missing secret variable
    fails its item closed (see `Unusable`), never the whole manifest."""
    kafka = load_kafka(environ)
    port = port or _int(environ, "BUS_HTTP_PORT", 8080, high=65535)
    secrets, missing = webhook_secrets(environ, object_stores)
    auth, unusable = authenticator(environ, http_auth or HttpAuth(), default_tenant=kafka.prefix)
    return GatewaySettings(
        webhook_secrets=secrets,
        webhook_missing=missing,
        auth=auth,
        unusable=(*(item for items in missing.values() for item in items), *unusable),
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


@dataclass(frozen=True, slots=True)
class Unusable:
    """A secret variable the manifest names that the gateway's environment cannot supply: its item
    fails closed (refused notifications, a key left out, or every credential refused)."""

    variable: str
    """The variable's name (never its value)."""
    reason: str
    """What fails closed and the fix, for the log and the 401 answers."""
    missing: bool = True
    """True: the variable is not set; False: it is set to something unusable (e.g. too short)."""


def webhook_secrets(
    environ: Mapping[str, str], object_stores: Sequence[ObjectStore]
) -> tuple[dict[str, tuple[bytes, ...]], dict[str, tuple[Unusable, ...]]]:
    """(provider -> the secrets of its stores that declare `secret_env`, provider -> its stores
    whose variable is missing). A store without its secret fails closed: its provider's
    notifications must then be signed with another store's secret, else they are refused."""
    secrets: dict[str, list[bytes]] = {}
    missing: dict[str, list[Unusable]] = {}
    for store in object_stores:
        if store.secret_env is None:
            continue
        value = environ.get(store.secret_env, "")
        parts = [part.strip().encode() for part in value.split(",") if part.strip()]
        if not parts:
            reason = (
                f"object store {store.name!r}: {store.secret_env} is not set in the gateway's environment, "
                f"so its {store.provider} notifications are refused; set {store.secret_env} there to its "
                "webhook secret (comma-separated to rotate)"
            )
            missing.setdefault(store.provider, []).append(Unusable(store.secret_env, reason))
            continue
        secrets.setdefault(store.provider, []).extend(parts)
    return (
        {provider: tuple(values) for provider, values in secrets.items()},
        {provider: tuple(values) for provider, values in missing.items()},
    )


def authenticator(
    environ: Mapping[str, str], http_auth: HttpAuth, *, default_tenant: str
) -> tuple[ApiKeys | JwtVerifier | FailClosed | None, tuple[Unusable, ...]]:
    """The credential check `sources.http` asks for, with its secrets read from the environment,
    and the secrets it had to do without. Fails closed: a key whose variable is missing is left
    out; with no usable key (or no usable JWT secret) every request is refused (`FailClosed`)."""
    if http_auth.mode == "api_keys" and not http_auth.keys:
        return _environment_keys(environ, default_tenant)
    if http_auth.mode == "api_keys":
        keys: list[tuple[bytes, Principal]] = []
        unusable: list[Unusable] = []
        for key in http_auth.keys:
            principal = Principal(
                key_id=key.id,
                tenant=key.tenant or default_tenant,
                sources=key.sources,
                types=key.types,
                rate=key.rate,
                burst=key.burst,
            )
            value = environ.get(key.secret_env, "")
            if not value:
                reason = (
                    f"API key {key.id!r}: {key.secret_env} is not set in the gateway's environment, so the "
                    f"key is refused; set {key.secret_env} there"
                )
                unusable.append(Unusable(key.secret_env, reason))
                continue
            try:
                ApiKeys([(value.encode(), principal)])  # checks this key alone: a bad one is left out
            except ConfigError as exc:
                unusable.append(Unusable(key.secret_env, f"{exc} (set in {key.secret_env})", missing=False))
                continue
            keys.append((value.encode(), principal))
        return _keys_or_closed(keys, unusable)
    if http_auth.mode == "jwt":
        assert http_auth.jwt_secret_env is not None  # the manifest requires both for auth: jwt
        assert http_auth.jwt_audience is not None
        name = http_auth.jwt_secret_env
        value = environ.get(name, "")
        if not value:
            reason = (
                f"JWT verification: {name} is not set in the gateway's environment, so every token "
                f"is refused; set {name} there"
            )
            return FailClosed(reason), (Unusable(name, reason),)
        try:
            return JwtVerifier(value.encode(), http_auth.jwt_audience, issuer=http_auth.jwt_issuer), ()
        except ConfigError as exc:
            reason = f"JWT verification: {exc} (set in {name}), so every token is refused"
            return FailClosed(reason), (Unusable(name, reason, missing=False),)
    return None, ()


def _keys_or_closed(
    keys: list[tuple[bytes, Principal]], unusable: list[Unusable]
) -> tuple[ApiKeys | FailClosed, tuple[Unusable, ...]]:
    """The usable keys, or (none usable, or two alike) a check that refuses every request."""
    if not keys:
        fixes = "; ".join(item.reason for item in unusable) or "list keys under sources.http.keys"
        return FailClosed(f"auth: api_keys has no usable key: {fixes}"), tuple(unusable)
    try:
        return ApiKeys(keys), tuple(unusable)
    except ConfigError as exc:  # the same key given twice: which principal it is cannot be told
        return FailClosed(f"auth: api_keys: {exc}"), tuple(unusable)


def _environment_keys(
    environ: Mapping[str, str], tenant: str
) -> tuple[ApiKeys | FailClosed, tuple[Unusable, ...]]:
    """Unscoped keys from `BUS_API_KEYS=id:key[,id:key]`, for `auth: api_keys` without listed keys."""
    raw = environ.get("BUS_API_KEYS", "")
    keys: list[tuple[bytes, Principal]] = []
    unusable: list[Unusable] = []
    for index, item in enumerate(filter(None, (part.strip() for part in raw.split(","))), 1):
        key_id, sep, key = item.partition(":")
        if not sep or not key_id or not key:
            reason = f"BUS_API_KEYS entry {index} lacks its ':' (left out); write id:key[,id:key]"
            unusable.append(Unusable("BUS_API_KEYS", reason, missing=False))
            continue
        principal = Principal(key_id=key_id, tenant=tenant)
        try:
            ApiKeys([(key.encode(), principal)])
        except ConfigError as exc:
            unusable.append(Unusable("BUS_API_KEYS", f"{exc} (in BUS_API_KEYS, left out)", missing=False))
            continue
        keys.append((key.encode(), principal))
    if not raw.strip():
        reason = (
            "auth: api_keys without sources.http.keys: BUS_API_KEYS is not set in the gateway's "
            "environment, so every request is refused; set BUS_API_KEYS=id:key[,id:key] there"
        )
        unusable.append(Unusable("BUS_API_KEYS", reason))
    return _keys_or_closed(keys, unusable)


def _int(environ: Mapping[str, str], name: str, default: int, *, high: int) -> int:
    raw = environ.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= high:
        raise ConfigError(f"{name}={raw!r} must be a whole number from 1 to {high}")
    return int(raw)

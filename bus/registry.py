"""A Confluent Schema Registry REST client (adapter; standard library only, safe across threads).

Subjects: one per tenant and event type, `<prefix>.<event type>`. Every type shares the ingress
topic, so Confluent's default `<topic>-value` would force all types into one version history; a
record name would not fit schemas that are not records (`bus.function.result`) or that several
types share (`bus.object.*`). The event type is what the manifest versions, so it names the subject.

Ids are cached both ways (registration per subject and fingerprint, schemas per id): a registry
id never changes meaning, so the cache needs no expiry.
"""

from __future__ import annotations

import base64
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson

from bus.avro_codec import BookRef, RegistryRef, registry_uri
from bus.avro_compat import DEFAULT_COMPATIBILITY, Compatibility
from bus.avro_schema import Schema, parse
from bus.errors import BusError, ConfigError, InvalidEvent, ManifestError, RegistryUnavailable

__all__ = ["CONTENT_TYPE", "SchemaRegistry", "subject_name"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_MAX_RESPONSE = 4 * 1024 * 1024


def subject_name(prefix: str, event_type: str) -> str:
    """The registry subject of an event type: `<prefix>.<event type>`."""
    return f"{prefix}.{event_type}"


class SchemaRegistry:
    """Register, fetch and check Avro schemas in a Confluent-compatible schema registry."""

    def __init__(self, url: str, *, prefix: str = "bus", timeout: float = 5.0) -> None:
        """`url` may carry `user:password@` for HTTP basic auth (Confluent Cloud's API key and secret)."""
        parts = urlsplit(url)
        try:
            base = _public(url).rstrip("/")
        except ValueError:  # a port that is not a number
            base = ""
        if parts.scheme not in ("http", "https") or not parts.hostname or not base:
            raise ConfigError(
                f"schema registry URL {url.rsplit('@', maxsplit=1)[-1]!r} must be "
                "http(s)://[user:password@]host[:port][/path]"
            )
        self.url = base
        """The registry's base URL without credentials (what dataschema URIs start with)."""
        self.prefix = prefix
        self.timeout = timeout
        self._auth: str | None = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Schema] = {}

    def subject(self, event_type: str) -> str:
        """This registry client's subject for an event type."""
        return subject_name(self.prefix, event_type)

    def register(
        self, event_type: str, schema: Schema, *, compatibility: Compatibility | None = DEFAULT_COMPATIBILITY
    ) -> int:
        """The registry id of `schema` under the type's subject, registering it if new.

        With `compatibility` set, the subject is made at least that strict first (a stricter
        setting is kept), so the registry refuses an incompatible version:
        ManifestError(`schemas.<type>`, ...) with the registry's reasons.
        """
        subject = self.subject(event_type)
        key = (subject, schema.fingerprint)
        with self._lock:
            known = self._ids.get(key)
        if known is not None:
            return known
        where = f"schemas.{event_type}"
        if compatibility is not None:
            self.ensure_compatibility(event_type, compatibility)
        answer = self._call(
            "POST",
            f"/subjects/{quote(subject, safe='')}/versions",
            {"schema": schema.text, "schemaType": "AVRO"},
            refused=lambda status, message: _manifest_refusal(where, status, message),
        )
        schema_id = _integer(answer, "id", self.url)
        with self._lock:
            self._ids[key] = schema_id
            self._schemas.setdefault(schema_id, schema)
        return schema_id

    def check(self, event_type: str, schema: Schema) -> list[str]:
        """Why the registry would refuse `schema` as the type's next version; empty if it would not."""
        subject = quote(self.subject(event_type), safe="")
        answer = self._call(
            "POST",
            f"/compatibility/subjects/{subject}/versions/latest?verbose=true",
            {"schema": schema.text, "schemaType": "AVRO"},
            refused=lambda status, message: _manifest_refusal(f"schemas.{event_type}", status, message),
            missing_ok=True,
        )
        if answer is None or answer.get("is_compatible") is True:
            return []  # no version yet: anything is compatible with nothing
        messages = answer.get("messages") or ["the registry says it is incompatible"]
        return [str(message) for message in messages]

    def ensure_compatible(
        self, event_type: str, schema: Schema, *, compatibility: Compatibility | None = DEFAULT_COMPATIBILITY
    ) -> None:
        """Raise the ManifestError `register` would raise for `schema`, registering nothing.

        The subject is made at least as strict as `compatibility` first, as `register` does, so
        the registry checks by the rule it will enforce.
        """
        if compatibility is not None:
            self.ensure_compatibility(event_type, compatibility)
        problems = self.check(event_type, schema)
        if problems:
            raise _manifest_refusal(f"schemas.{event_type}", 409, "; ".join(problems))

    def compatibility(self, event_type: str) -> str | None:
        """The compatibility set on the type's subject itself; None if none is (the global one applies)."""
        subject = self.subject(event_type)
        answer = self._call(
            "GET",
            f"/config/{quote(subject, safe='')}",
            None,
            refused=lambda status, message: ConfigError(
                f"schema registry at {self.url} refused GET /config/{subject} (HTTP {status}): {message}"
            ),
            denied=lambda message: ConfigError(
                f"schema registry at {self.url} denied GET /config/{subject} (HTTP 403): {message}; "
                "grant the registry user permission to read the subject's config"
            ),
            missing_ok=True,  # 40401 no such subject, 40408 no subject-level config
        )
        if answer is None:
            return None
        # GET answers `compatibilityLevel` (Confluent); some compatible registries answer as PUT does.
        level = answer.get("compatibilityLevel", answer.get("compatibility"))
        return str(level).upper() if level else None

    def ensure_compatibility(self, event_type: str, mode: Compatibility) -> None:
        """Make the type's subject at least as strict as `mode`, keeping a stricter setting."""
        current = self.compatibility(event_type)
        wanted = _stricter_of(current, mode)
        if wanted != current:
            self.set_compatibility(event_type, wanted)

    def set_compatibility(self, event_type: str, mode: str) -> None:
        """Set the compatibility the registry enforces for the type's subject."""
        subject = self.subject(event_type)
        self._call(
            "PUT",
            f"/config/{quote(subject, safe='')}",
            {"compatibility": mode},
            refused=lambda status, message: ConfigError(
                f"schema registry at {self.url} refused compatibility {mode} (HTTP {status}): {message}"
            ),
            denied=lambda message: ConfigError(
                f"schema registry at {self.url} denied PUT /config/{subject} (HTTP 403): {message}; "
                "grant the registry user permission to alter the subject's config, or set its "
                f"compatibility to {mode} (or stricter) yourself"
            ),
        )

    def schema(self, schema_id: int) -> Schema:
        """The Avro schema with this registry id; InvalidEvent("dataschema", ...) if there is none."""
        with self._lock:
            known = self._schemas.get(schema_id)
        if known is not None:
            return known
        answer = self._call(
            "GET",
            f"/schemas/ids/{int(schema_id)}",
            None,
            refused=lambda status, message: InvalidEvent(
                "dataschema", f"schema id {schema_id} is not in the registry at {self.url} (HTTP {status})"
            ),
        )
        kind = answer.get("schemaType", "AVRO") if answer is not None else "AVRO"
        if kind != "AVRO":
            raise InvalidEvent("dataschema", f"registry schema {schema_id} is a {kind} schema, not Avro")
        text = answer.get("schema") if answer is not None else None
        if not isinstance(text, str):
            raise _unavailable(self.url, f"GET /schemas/ids/{schema_id} answered without a schema")
        try:
            schema = parse(text, where=f"registry schema {schema_id}", check_defaults=False)
        except ManifestError as exc:
            raise InvalidEvent("dataschema", str(exc)) from None
        with self._lock:
            self._schemas[schema_id] = schema
        return schema

    def writer_schema(self, ref: BookRef | RegistryRef) -> Schema:
        """The schema a `<url>/schemas/ids/<id>` dataschema names, from this registry only.

        bus never fetches a URL an event names: a dataschema naming another registry is refused,
        and a `bus:schema:` fingerprint is not a registry id (`SchemaStore.writer_schema`).
        """
        if isinstance(ref, BookRef):
            raise InvalidEvent(
                "dataschema",
                f"names schema {ref.fingerprint} by fingerprint, which the schema registry at {self.url} "
                "cannot look up; records written without a registry need the schemas topic "
                "(unset BUS_SCHEMA_REGISTRY_URL to read them)",
            )
        if ref.registry_url.rstrip("/") != self.url:
            raise InvalidEvent(
                "dataschema",
                f"names the schema registry {ref.registry_url[:100]!r}, but this bus uses {self.url!r}",
            )
        return self.schema(ref.schema_id)

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        refused: Callable[[int, str], BusError],
        denied: Callable[[str], BusError] | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """One request; 4xx answers become `refused(status, message)`, the rest a retriable BusError.

        401 means wrong credentials; 403 that they lack a permission for this call: `denied(message)`.
        """
        headers = {"Accept": CONTENT_TYPE}
        data = None
        if body is not None:
            headers["Content-Type"] = CONTENT_TYPE
            data = orjson.dumps(body)
        if self._auth is not None:
            headers["Authorization"] = self._auth
        # S310: self.url is checked to be http(s) in __init__; `path` is built here, never from input.
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read(_MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            status, message = exc.code, _message(exc)
            exc.close()
            if status == 404 and missing_ok:
                return None
            if status == 401:
                raise ConfigError(
                    f"schema registry at {self.url} refused the credentials (HTTP {status}): "
                    "check the user and password in the registry URL"
                ) from None
            if status == 403:
                raise (denied or _denied(self.url, method, path))(message) from None
            if 400 <= status < 500:
                raise refused(status, message) from None
            raise _unavailable(self.url, f"HTTP {status} for {method} {path}: {message}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise _unavailable(self.url, f"{method} {path} failed: {reason}") from None
        if len(raw) > _MAX_RESPONSE:
            raise _unavailable(self.url, f"{method} {path} answered more than {_MAX_RESPONSE} bytes")
        try:
            answer = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise _unavailable(
                self.url, f"{method} {path} answered with something that is not JSON"
            ) from None
        if not isinstance(answer, dict):
            raise _unavailable(self.url, f"{method} {path} answered with JSON that is not an object")
        return answer


# What each compatibility level guarantees; a level is at least as strict as another when it
# guarantees all the other does. BACKWARD_TRANSITIVE and FULL, say, are each stricter in one way.
_GUARANTEES: dict[str, frozenset[str]] = {
    "NONE": frozenset(),
    "BACKWARD": frozenset({"backward"}),
    "FORWARD": frozenset({"forward"}),
    "FULL": frozenset({"backward", "forward"}),
    "BACKWARD_TRANSITIVE": frozenset({"backward", "backward-all"}),
    "FORWARD_TRANSITIVE": frozenset({"forward", "forward-all"}),
    "FULL_TRANSITIVE": frozenset({"backward", "forward", "backward-all", "forward-all"}),
}


def _stricter_of(current: str | None, wanted: Compatibility | str) -> str:
    """The level a subject set to `current` (None: not set) needs so it is at least as strict as `wanted`.

    `current` when it already is (or is a level bus does not know: an operator's choice is not
    overridden on a guess); otherwise the least level guaranteeing both, e.g. BACKWARD_TRANSITIVE
    and FULL need FULL_TRANSITIVE.
    """
    wanted = str(wanted)
    if current is None:
        return wanted
    have = _GUARANTEES.get(current)
    need = _GUARANTEES[wanted]
    if have is None or need <= have:
        return current
    both = need | have
    return min(
        (level for level, guarantees in _GUARANTEES.items() if both <= guarantees),
        key=lambda level: len(_GUARANTEES[level]),
    )


def _denied(url: str, method: str, path: str) -> Callable[[str], BusError]:
    return lambda message: ConfigError(
        f"schema registry at {url} denied {method} {path} (HTTP 403): {message}; "
        "grant the registry user that permission"
    )


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        answer = orjson.loads(exc.read(64 * 1024))
    except (orjson.JSONDecodeError, OSError):
        return exc.reason if isinstance(exc.reason, str) else "no message"
    if isinstance(answer, dict) and "message" in answer:
        return str(answer["message"])[:500]
    return "no message"


def _manifest_refusal(where: str, status: int, message: str) -> BusError:
    if status == 409:
        return ManifestError(
            where,
            f"the schema registry refuses it as incompatible with the registered versions: {message}; "
            "add new fields with defaults (or register a new event type)",
        )
    if status == 422:
        return ManifestError(where, f"the schema registry refuses it as invalid: {message}")
    return ManifestError(where, f"the schema registry refused it (HTTP {status}): {message}")


def _integer(answer: dict[str, Any] | None, name: str, url: str) -> int:
    value = (answer or {}).get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _unavailable(url, f"answered without an integer {name!r}")
    return value


def _unavailable(url: str, reason: str) -> RegistryUnavailable:
    return RegistryUnavailable(f"schema registry at {url} is unavailable: {reason}")


def _public(url: str) -> str:
    """A URL without its credentials, query or fragment (as `registry_uri` writes it)."""
    return registry_uri(url, 0).removesuffix("/schemas/ids/0")

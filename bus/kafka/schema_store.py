"""Writer schemas registered in Kafka, on the compacted `<prefix>.schemas` topic (adapter).

Without a schema registry a reader still needs the writer schema of records it did not write (a
worker whose manifest has v1 reading a record written with v2). Every gateway registers its
book's schemas here before it publishes; readers find writers here by fingerprint.

One record per (type, schema): key `<event type>:<fingerprint>`, value JSON `{"type", "schema",
"version"}`. The key names the type too, so types that share a schema each keep their own
history. `schema` is the schema as written, not its canonical form: the canonical form drops
defaults and logical types, which compatibility checks and JSON-typed fields need.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import KafkaError as ClientError
from confluent_kafka import KafkaException, Message, Producer

from bus import naming
from bus.avro_codec import BookRef, RegistryRef
from bus.avro_compat import DEFAULT_COMPATIBILITY, Compatibility, check_compatible
from bus.avro_schema import Schema, parse
from bus.avro_store import SchemaStore
from bus.errors import BusError, InvalidEvent, KafkaError, KafkaUnavailable, ManifestError, PublishError
from bus.kafka.admin import ensure_topics
from bus.kafka.config import build, producer_config
from bus.kafka.reader import read_to_end
from bus.logs import log_event
from bus.registry import SchemaRegistry
from bus.settings import KafkaSettings
from bus.topology import ingress_topics

__all__ = ["REGISTRY_URL_VARIABLE", "KafkaSchemaStore", "open_store"]

REGISTRY_URL_VARIABLE = "BUS_SCHEMA_REGISTRY_URL"

logger = logging.getLogger("bus.schemas")


def open_store(settings: KafkaSettings, environ: Mapping[str, str], *, create: bool = True) -> SchemaStore:
    """The Confluent-compatible registry at `BUS_SCHEMA_REGISTRY_URL` if set, else the schemas topic.

    `create=False` for readers: a schemas topic that does not exist then holds no schemas.
    """
    url = environ.get(REGISTRY_URL_VARIABLE, "").strip()
    if url:
        return SchemaRegistry(url, prefix=settings.prefix)
    return KafkaSchemaStore(settings, create=create)


class KafkaSchemaStore:
    """Register and look up writer schemas on `<prefix>.schemas` (safe across threads)."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        compatibility: Compatibility = DEFAULT_COMPATIBILITY,
        create: bool = True,
        timeout: float = 30.0,
        min_refresh: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`create`: create the topic if missing (False: a missing topic holds no schemas, as for
        `bus tail`, which must not create topics). `min_refresh`: seconds between two re-reads of
        the topic for schemas not found."""
        self._settings = settings
        self._topic = naming.schema_topic(settings.prefix)
        self._compatibility = compatibility
        self._create = create
        self._timeout = timeout
        self._min_refresh = min_refresh
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._schemas: dict[str, Schema] = {}
        self._versions: dict[str, dict[str, int]] = {}
        self._ensured = False
        self._last_read: float | None = None

    def register(self, event_type: str, schema: Schema) -> None:
        """Write `schema` as the type's next version unless it is registered already.

        ManifestError(`schemas.<type>`) when it is incompatible with the type's latest version.
        """
        with self._lock:
            self._refresh()
            versions = self._versions.get(event_type, {})
            if schema.fingerprint in versions:
                return
            self._refuse_incompatible(event_type, schema)
            version = max(versions.values(), default=0) + 1
            value = {"type": event_type, "schema": schema.text, "version": version}
            self._produce(f"{event_type}:{schema.fingerprint}".encode(), orjson.dumps(value))
            self._add(event_type, schema, version)
        log_event(
            logger, "schema_registered", type=event_type, fingerprint=schema.fingerprint, version=version
        )

    def ensure_compatible(self, event_type: str, schema: Schema) -> None:
        """Raise the ManifestError `register` would raise for `schema`; writes nothing."""
        with self._lock:
            self._refresh()
            if schema.fingerprint not in self._versions.get(event_type, {}):
                self._refuse_incompatible(event_type, schema)

    def _refuse_incompatible(self, event_type: str, schema: Schema) -> None:
        """ManifestError when `schema` cannot follow the type's latest version (the caller holds the lock)."""
        versions = self._versions.get(event_type, {})
        if not versions:
            return
        latest_fingerprint, latest = max(versions.items(), key=lambda item: item[1])
        problems = check_compatible(schema, self._schemas[latest_fingerprint], self._compatibility)
        if problems:
            raise ManifestError(
                f"schemas.{event_type}",
                f"is incompatible with version {latest} registered in {self._topic} "
                f"({self._compatibility.value} compatibility): {'; '.join(problems)}; "
                "add or remove only fields that have defaults, or give the changed event a new type",
            )

    def lookup(self, fingerprint: str) -> Schema | None:
        """The registered schema with this fingerprint; the topic is read again once if it is unknown."""
        fingerprint = fingerprint.lower()
        with self._lock:
            found = self._schemas.get(fingerprint)
            if found is not None:
                return found
            if self._last_read is not None:
                # A record is written after its schema was registered, so a read that starts now
                # finds it; waiting out `min_refresh` bounds what unknown fingerprints cost.
                wait = self._last_read + self._min_refresh - self._clock()
                if wait > 0:
                    self._sleep(wait)
            self._refresh()
            return self._schemas.get(fingerprint)

    def writer_schema(self, ref: BookRef | RegistryRef) -> Schema:
        """The schema a `bus:schema:<type>:<fingerprint>` dataschema names."""
        if isinstance(ref, RegistryRef):
            raise InvalidEvent(
                "dataschema",
                f"names the schema registry {ref.registry_url[:100]!r}, but this bus uses none; "
                "set BUS_SCHEMA_REGISTRY_URL to read records written with a registry",
            )
        found = self.lookup(ref.fingerprint)
        if found is None:
            raise InvalidEvent(
                "dataschema",
                f"names schema {ref.fingerprint} of {ref.event_type!r}, which is not registered in "
                f"{self._topic}",
            )
        return found

    def _refresh(self) -> None:
        """Read the whole topic again (the caller holds the lock)."""
        if self._create and not self._ensured:
            spec = [s for s in ingress_topics(self._settings.prefix) if s.name == self._topic]
            ensure_topics(self._settings, spec, timeout=self._timeout)
            self._ensured = True
        self._last_read = self._clock()
        records = read_to_end(self._settings, self._topic, timeout=self._timeout, missing_ok=not self._create)
        for message in records:
            entry = _entry(message.key(), message.value())
            if entry is not None:
                self._add(*entry)

    def _add(self, event_type: str, schema: Schema, version: int) -> None:
        self._schemas.setdefault(schema.fingerprint, schema)
        self._versions.setdefault(event_type, {})[schema.fingerprint] = version

    def _produce(self, key: bytes, value: bytes) -> None:
        producer = build(Producer, producer_config(self._settings))
        reports: list[ClientError | None] = []

        def on_delivery(err: ClientError | None, msg: Message) -> None:
            reports.append(err)

        try:
            producer.produce(self._topic, key=key, value=value, on_delivery=on_delivery)
        except KafkaException as exc:
            raise KafkaError(f"cannot write to {self._topic!r}: {exc.args[0].str()}") from exc
        producer.flush(self._settings.delivery_timeout + 1)
        if not reports:
            raise KafkaUnavailable(f"Kafka did not acknowledge the schema written to {self._topic!r} in time")
        if reports[0] is not None:
            raise PublishError(
                f"Kafka refused the schema written to {self._topic!r}: {reports[0].str()}",
                retriable=reports[0].retriable(),
            )


def _entry(key: bytes | None, value: bytes | None) -> tuple[str, Schema, int] | None:
    """(type, schema, version) of one record; None for a tombstone or a record that is not one."""
    if not key or not value:
        return None
    try:
        doc: Any = orjson.loads(value)
        event_type, text, version = doc["type"], doc["schema"], doc["version"]
        schema = parse(text, where=f"{event_type} in the schemas topic", check_defaults=False)
    except (orjson.JSONDecodeError, KeyError, TypeError, BusError):
        return None
    if not isinstance(event_type, str) or not isinstance(version, int):
        return None
    if key.decode("utf-8", "replace") != f"{event_type}:{schema.fingerprint}":
        return None  # the key must be the schema's own identity: a mislabelled schema is ignored
    return event_type, schema, version

"""The applied manifest on `<prefix>.control` (adapter): read it, store a new version, follow it."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from bus import manifest, naming, packages
from bus.avro_schema import load_book
from bus.clock import now_rfc3339
from bus.control import (
    CONTROL_KEY,
    Applied,
    Refused,
    checked_document,
    decode,
    encode,
    newly_followed,
    next_applied,
    next_starts,
    read_record,
)
from bus.errors import BusError, ConfigError, KafkaError, KafkaUnavailable
from bus.kafka.admin import end_offsets, ensure_topics
from bus.kafka.config import build, consumer_config, producer_config
from bus.kafka.reader import read_to_end
from bus.kafka.schema_store import open_store
from bus.logs import log_event
from bus.settings import KafkaSettings, load_kafka
from bus.topology import manifest_topics

__all__ = [
    "ControlWatcher",
    "applied_manifest",
    "apply_file",
    "manifest_in_force",
    "read_applied",
    "starting_manifest",
    "store_applied",
]

logger = logging.getLogger("bus.control")


def starting_manifest(
    applied: Applied | Refused | None, prefix: str, *, has_file: bool
) -> tuple[manifest.Manifest, Applied] | None:
    """The applied manifest a process starts with (the router, a gateway), when it can be used.

    None when nothing was applied, or when the latest record cannot be used and the process has
    a `-f` file to fall back to (logged: `control_record_refused`). Without a file such a record
    is a ConfigError naming the fix: never start on an older version, nor on nothing.
    """
    if applied is None:
        return None
    if isinstance(applied, Refused):
        reason = applied.reason
        log_event(
            logger,
            "control_record_refused",
            offset=applied.offset,
            version=applied.version,
            reason=reason,
            level=logging.ERROR,
        )
        if not has_file:
            raise ConfigError(f"{applied.describe(prefix)}; apply a valid one with `bus apply` or pass -f")
        return None
    try:
        return applied.manifest(prefix=prefix), applied
    except BusError as exc:
        log_event(
            logger, "control_record_refused", version=applied.version, reason=str(exc), level=logging.ERROR
        )
        if not has_file:
            raise ConfigError(
                f"applied manifest version {applied.version} of prefix {prefix!r} cannot be used "
                f"({exc}); apply a valid one with `bus apply` or pass -f"
            ) from None
        return None


def read_applied(
    settings: KafkaSettings, prefix: str, *, timeout: float = 15.0
) -> tuple[Applied | Refused | None, int]:
    """The latest applied manifest (None if never applied) and the offset after it.

    A latest record this bus cannot read is `Refused`, never passed over for an older one: that
    older version is not the one in force, and numbering from it would reuse a version.
    """
    latest: Applied | Refused | None = None
    after = OFFSET_BEGINNING
    for message in read_to_end(settings, naming.control_topic(prefix), timeout=timeout, missing_ok=True):
        after = message.offset() + 1
        if message.key() != CONTROL_KEY or message.value() is None:
            continue
        latest = read_record(message.value(), offset=message.offset())
    return latest, after


def store_applied(settings: KafkaSettings, prefix: str, applied: Applied) -> None:
    """Write a new applied version; returns once Kafka acknowledged it (acks=all)."""
    topic = naming.control_topic(prefix)
    value = encode(applied)
    if len(value) > settings.max_record_bytes:
        raise KafkaError(
            f"the applied manifest is {len(value)} bytes, over the {settings.max_record_bytes}-byte "
            "record limit (BUS_MAX_RECORD_BYTES); split rules over prefixes or raise the limit"
        )
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(error.str())

    producer = build(Producer, producer_config(settings))
    try:
        producer.produce(topic, value=value, key=CONTROL_KEY, on_delivery=delivered)
    except KafkaException as exc:
        raise KafkaError(f"cannot store the manifest on {topic!r}: {exc.args[0].str()}") from exc
    if producer.flush(settings.delivery_timeout + 5) > 0:
        raise KafkaUnavailable(f"Kafka at {settings.bootstrap_servers} did not acknowledge the manifest")
    if failures:
        raise KafkaError(f"cannot store the manifest on {topic!r}: {failures[0]}")


class ControlWatcher:
    """A thread that follows the control topic from `start` and hands each new version to `on_change`.

    A record that cannot be read, or that `on_change` refuses (raises BusError), is logged and
    skipped: the rules in force stay as they were.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        prefix: str,
        *,
        start: int,
        on_change: Callable[[Applied], None],
        poll_timeout: float = 0.1,
    ) -> None:
        self._settings = settings
        self._topic = naming.control_topic(prefix)
        self._start = start
        self._on_change = on_change
        self._poll_timeout = poll_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control-watcher", daemon=True)

    def __enter__(self) -> ControlWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        consumer = build(Consumer, consumer_config(self._settings, naming.reader_group(uuid.uuid4().hex)))
        try:
            consumer.assign([TopicPartition(self._topic, 0, self._start)])
            while not self._stop.is_set():
                message = consumer.poll(self._poll_timeout)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    log_event(logger, "control_read_error", reason=error.str())
                    continue
                if message.key() == CONTROL_KEY and message.value() is not None:
                    self._apply(message)
        finally:
            consumer.close()

    def _apply(self, message: Any) -> None:
        version: int | None = None  # unknown until the record is decoded
        try:
            applied = decode(message.value())
            version = applied.version
            self._on_change(applied)
        except BusError as exc:
            # The version in force stays: an operator must learn that the one applied is not.
            log_event(
                logger,
                "control_record_refused",
                offset=message.offset(),
                version=version,
                reason=str(exc),
                level=logging.ERROR,
            )
        except Exception as exc:  # the watcher must outlive any one record: the rules in force stay
            log_event(
                logger,
                "control_record_failed",
                offset=message.offset(),
                reason=repr(exc),
                level=logging.ERROR,
            )


def apply_file(
    settings: KafkaSettings,
    path: Path,
    *,
    prefix: str | None,
    environments: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Validate `path`, check its schemas against the versions registered for the prefix, build
    its packaged functions' environments (in `environments`, default `$BUS_HOME/envs`), create its
    topics and store it as the next version, with where routers start the results topics it newly
    follows (`Applied.starts`); return a summary. `environ` (default `os.environ`) says which
    schema store gateways use (`BUS_SCHEMA_REGISTRY_URL`)."""
    environ = os.environ if environ is None else environ
    base_dir = path.resolve().parent
    stored, checked = checked_document(manifest.read_document(path), base_dir, prefix=prefix)
    _ensure_registrable(settings, checked, environ)
    packages.prepare(checked, environments or packages.environments_home(environ))
    created = ensure_topics(settings, manifest_topics(checked))
    made = _created(created)
    previous, _ = read_applied(settings, checked.prefix)
    # A results topic a flow step starts following is read from its end as of now (the topics
    # exist: created above): recorded, so that a router started later starts there too.
    new = newly_followed(previous, checked)
    starts = next_starts(previous, checked, end_offsets(settings, new) if new else {})
    step = next_applied(previous, stored, base_dir=str(base_dir), now=now_rfc3339(), starts=starts)
    if step is None:
        assert isinstance(previous, Applied)
        return f"unchanged: version {previous.version} of prefix {checked.prefix!r} is this manifest{made}"
    applied, change = step
    store_applied(settings, checked.prefix, applied)
    return (
        f"applied version {applied.version} to prefix {checked.prefix!r}: "
        f"{len(checked.rules)} rules ({change.describe()}), {len(checked.functions)} functions{made}"
    )


def _created(topics: list[str]) -> str:
    """What an apply's summary says of the topics it created ("" for none)."""
    if not topics:
        return ""
    return f"; created {len(topics)} topic{'s' * (len(topics) != 1)}: {', '.join(sorted(topics))}"


def _ensure_registrable(
    settings: KafkaSettings, checked: manifest.Manifest, environ: Mapping[str, str]
) -> None:
    """ManifestError(`schemas.<type>`) when a gateway would refuse to register one of the schemas.

    Stored anyway, such a manifest would be refused by running gateways, which keep the old one
    in force (a revoked key among its changes would not be), and stop restarted ones.
    """
    if not checked.schemas:
        return
    book = load_book(checked.schemas, Path(checked.base_dir))
    store = open_store(replace(settings, prefix=checked.prefix), environ)
    for event_type in checked.schemas:
        store.ensure_compatible(event_type, book.types[event_type])


def manifest_in_force(environ: Mapping[str, str], path: Path | None, prefix: str | None) -> manifest.Manifest:
    """The manifest at `path`, else the one applied for the prefix (`prefix`, else `$BUS_PREFIX`).

    Raises ConfigError with the fix when neither is there.
    """
    chosen = prefix or environ.get("BUS_PREFIX") or None
    if path is not None:
        return manifest.read(path, prefix=chosen)
    where = chosen or naming.DEFAULT_PREFIX
    applied, _ = read_applied(load_kafka(environ, prefix=chosen), where)
    return applied_manifest(applied, where, prefix=chosen)


def applied_manifest(
    applied: Applied | Refused | None, where: str, *, prefix: str | None
) -> manifest.Manifest:
    """The manifest `read_applied` found for prefix `where`; ConfigError with the fix when there is none."""
    if applied is None:
        raise ConfigError(f"no manifest was applied for prefix {where!r}: run `bus apply` or pass -f")
    if isinstance(applied, Refused):
        raise ConfigError(f"{applied.describe(where)}; apply a valid one with `bus apply` or pass -f")
    return applied.manifest(prefix=prefix)

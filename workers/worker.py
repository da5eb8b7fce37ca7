"""Composition root of one worker replica: the handler host, the Kafka replica, the metrics."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from bus import naming
from bus.avro_schema import SchemaBook, load_book
from bus.avro_store import SchemaStore, TypedReader
from bus.errors import ConfigError
from bus.kafka.admin import ensure_topics, partition_counts, topic_names
from bus.logs import log_event
from bus.manifest import Function, Manifest
from bus.metrics import Registry
from bus.metrics_http import MetricsServer
from bus.packages import environments_home, handler_dir, host_python
from bus.registry import SchemaRegistry
from bus.settings import KafkaSettings
from bus.topology import function_topics, retry_topics
from bus.typed_events import EdgeSchemas, register_book
from workers.invocation import Finished
from workers.runtime import Replica, WorkerMetrics
from workers.sandbox import Sandbox

__all__ = ["check_copartitioned", "secret_names", "serve"]

logger = logging.getLogger("bus.worker")


def _emit_schemas(book: SchemaBook, store: SchemaStore | None) -> EdgeSchemas:
    """What emitted events of typed types are written with: the book, registered as the gateway
    registers it, so readers find the writer (and a registry frames values with its ids)."""
    if store is None:
        return EdgeSchemas(book=book)
    return register_book(book, store, registry_url=store.url if isinstance(store, SchemaRegistry) else None)


def secret_names(manifest: Manifest) -> set[str]:
    """Environment variables the manifest names as secrets: never visible to handlers."""
    names = {store.secret_env for store in manifest.object_stores if store.secret_env}
    names |= {key.secret_env for key in manifest.http_auth.keys}
    if manifest.http_auth.jwt_secret_env:
        names.add(manifest.http_auth.jwt_secret_env)
    return names


def check_copartitioned(
    settings: KafkaSettings, prefix: str, function: Function, retries: Sequence[str]
) -> None:
    """Refuse to start when a retry topic's partitions (of `retries`) differ from the function topic's.

    A retry goes back to its event's partition number and the replica owning a function
    partition must own its retry partitions (key order): both need equal partition counts.
    """
    main = naming.function_topic(prefix, function.name)
    counts = partition_counts(settings, [main, *retries])
    wrong = {name: n for name, n in counts.items() if n != counts.get(main)}
    if wrong:
        listed = ", ".join(f"{name} has {n}" for name, n in sorted(wrong.items()))
        raise ConfigError(
            f"{main} has {counts.get(main)} partitions but {listed}: give them the same count "
            "(kafka-topics --alter --partitions, or delete the retry topics when none is pending)"
        )


def serve(
    settings: KafkaSettings,
    manifest: Manifest,
    function_name: str,
    stop: threading.Event,
    *,
    store: SchemaStore | None = None,
    environ: Mapping[str, str] | None = None,
    metrics_port: int | None = None,
) -> None:
    """Run one replica of a function's worker group until `stop` is set.

    `store` holds the writer schemas of typed events this manifest's book lacks (newer versions).
    `BUS_INSTANCE` in the environment names the replica (see Replica); supervisors set it per slot.
    """
    function = manifest.functions[function_name]
    ensure_topics(settings, function_topics(manifest.prefix, function))
    # Read every retry topic of the function on the broker, not only the policy's: retries wait
    # in the levels a policy used before it was changed to fewer.
    retries = retry_topics(manifest.prefix, function, topic_names(settings))
    check_copartitioned(settings, manifest.prefix, function, retries)
    outcomes: queue.SimpleQueue[list[Finished]] = queue.SimpleQueue()
    registry = Registry()
    metrics = WorkerMetrics(registry)
    book = load_book(manifest.schemas, Path(manifest.base_dir))
    emit_schemas = _emit_schemas(book, store)  # before the sandbox starts: this may refuse the manifest
    sandbox = Sandbox(
        handler=function.handler,
        base_dir=handler_dir(manifest, function),
        function=function.name,
        prefix=manifest.prefix,
        concurrency=function.concurrency,
        memory_mb=function.memory,
        on_outcomes=outcomes.put,
        environ=dict(os.environ if environ is None else environ),
        secret_names=secret_names(manifest),
        python=host_python(manifest, function, environments_home(environ or os.environ)),
        results=function.destinations.on_success is not None,
        max_record_bytes=settings.max_record_bytes,
    )
    sandbox.start()
    metrics.cold_start.set(sandbox.cold_start_seconds, function=function.name)
    replica = Replica(
        settings,
        prefix=manifest.prefix,
        function=function,
        retry_topics=retries,
        sandbox=sandbox,
        outcomes=outcomes,
        reader=TypedReader(book=book, store=store, max_bytes=settings.max_record_bytes),
        schemas=emit_schemas,
        metrics=metrics,
        instance=(environ if environ is not None else os.environ).get("BUS_INSTANCE") or None,
    )
    with contextlib.ExitStack() as stack:
        stack.callback(sandbox.close)
        if metrics_port is not None:
            stack.enter_context(MetricsServer(registry, metrics_port))
        log_event(
            logger,
            "worker_ready",
            function=function.name,
            group=naming.function_group(manifest.prefix, function.name),
            ordering=function.ordering,
            concurrency=function.concurrency,
            cold_start_ms=round(sandbox.cold_start_seconds * 1000, 1),
        )
        replica.run(stop)

"""`python -m gateway [--port N]`: run the gateway until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bus.avro_schema import load_book
from bus.avro_store import SchemaStore
from bus.control import Applied, Refused
from bus.errors import BusError
from bus.kafka.admin import ensure_topics
from bus.kafka.control_store import ControlWatcher, read_applied, starting_manifest
from bus.kafka.schema_store import open_store
from bus.logs import configure, log_event
from bus.manifest import Manifest, read
from bus.registry import SchemaRegistry
from bus.settings import load_kafka
from bus.topology import ingress_topics
from bus.typed_events import register_book
from gateway.app import create_app
from gateway.server import serve
from gateway.settings import GatewaySettings, invoke_targets, load
from gateway.timers import check_templates

logger = logging.getLogger("bus.gateway")


def main(argv: list[str] | None = None) -> int:
    """Load settings, create the ingress topics, register the typed events' schemas, serve HTTP.

    The gateway starts from the applied manifest (`bus apply`) when there is one, else from its
    `-f` file: a restart never undoes an apply (a revoked key stays revoked). A schema incompatible
    with its type's registered version stops the gateway (exit 1) before it accepts anything: the new
    version is refused when it is registered. Manifests applied later are followed: a secret
    variable the environment lacks fails only its item closed (`gateway.settings.Unusable`); any
    other change the gateway cannot take is logged as an error and the last one kept.
    """
    parser = argparse.ArgumentParser(prog="python -m gateway")
    parser.add_argument("--port", type=int, help="HTTP port (default $BUS_HTTP_PORT or 8080)")
    parser.add_argument("--host", help="interface (default $BUS_HTTP_HOST or 127.0.0.1)")
    parser.add_argument("-f", "--manifest", help="bus.yaml, used only while none was applied (`bus apply`)")
    args = parser.parse_args(argv)
    configure(os.environ.get("BUS_LOG_LEVEL", "INFO"))
    try:
        file = read(args.manifest) if args.manifest else None
        kafka = load_kafka(os.environ)
        ensure_topics(kafka, ingress_topics(kafka.prefix))
        store = open_store(kafka, os.environ)

        def configured(manifest: Manifest) -> GatewaySettings:
            return _settings(manifest, store, port=args.port, host=args.host)

        applied, after = read_applied(kafka, kafka.prefix)
        settings = configured(_starting_manifest(applied, file, kafka.prefix))
    except BusError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1

    def follow(reconfigure: Callable[[GatewaySettings], None]) -> ControlWatcher:
        def on_change(new: Applied) -> None:
            reconfigure(configured(new.manifest(prefix=kafka.prefix)))

        return ControlWatcher(kafka, kafka.prefix, start=after, on_change=on_change)

    serve(create_app(settings, follow=follow), settings)
    return 0


def _starting_manifest(applied: Applied | Refused | None, file: Manifest | None, prefix: str) -> Manifest:
    """The manifest to start with: the applied one, else the `-f` file's, else an empty one
    (never an empty one in place of an applied record that cannot be used: no credentials)."""
    started = starting_manifest(applied, prefix, has_file=file is not None)
    if started is None:
        return file if file is not None else Manifest()
    manifest, used = started
    if file is not None:
        log_event(logger, "manifest_file_ignored", version=used.version)
    return manifest


def _settings(
    manifest: Manifest, store: SchemaStore, *, port: int | None, host: str | None
) -> GatewaySettings:
    """The gateway's settings for `manifest`: secrets from the environment, schemas registered,
    schedule templates checked against them (BusError when any of it fails)."""
    settings = load(
        os.environ,
        port=port,
        host=host,
        object_stores=manifest.object_stores,
        schedules=manifest.schedules,
        http_auth=manifest.http_auth,
    )
    book = load_book(manifest.schemas, Path(manifest.base_dir))
    registry_url = store.url if isinstance(store, SchemaRegistry) else None
    settings = replace(
        settings,
        schemas=register_book(book, store, registry_url=registry_url),
        functions=invoke_targets(settings.kafka.prefix, manifest.functions),
    )
    check_templates(
        settings.schedules,
        settings.schemas,
        datetime.now(UTC),
        max_record_bytes=settings.kafka.max_record_bytes,
    )
    return settings


if __name__ == "__main__":
    sys.exit(main())

"""The router process: ingress topic → rules → function topics, exactly once.

Each ingress record is forwarded unchanged (same key, value and headers) to the topic of every
target its rules select; outputs and the ingress offsets commit in one Kafka transaction.
Typed events are matched on their data as written: the Avro is decoded for matching only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from bus import naming
from bus.avro_schema import load_book
from bus.avro_store import SchemaStore, TypedReader
from bus.deadletter import dead_letter
from bus.errors import BusError, InvalidEvent
from bus.events import to_json_dict
from bus.kafka.admin import ensure_topics
from bus.kafka.schema_store import open_store
from bus.kafka.txloop import InMessage, Output, TransactionalLoop
from bus.kafka_binding import Record, from_record
from bus.logs import configure, log_event
from bus.manifest import Manifest, read
from bus.routing import route
from bus.settings import KafkaSettings, load_kafka
from bus.topology import manifest_topics

__all__ = ["Router", "main"]

logger = logging.getLogger("bus.router")


class Router:
    """Turns batches of ingress records into function-topic records (the loop's transform)."""

    def __init__(self, manifest: Manifest, reader: TypedReader | None = None) -> None:
        """`reader` decodes typed events for matching; None: the platform's and manifest's book only."""
        self._manifest = manifest
        self._reader = reader or TypedReader(
            book=load_book(manifest.schemas, Path(manifest.base_dir)), resolve=False
        )
        # Rules that never name `data` are decided from the Kafka headers: the value is not decoded.
        self._with_data = any("data" in rule.pattern.top_fields for rule in manifest.rules)
        self._dlq = naming.router_dlq_topic(manifest.prefix)
        self._topics = {name: naming.function_topic(manifest.prefix, name) for name in manifest.functions}

    def __call__(self, batch: Sequence[InMessage]) -> list[Output]:
        """Route every record of a batch; undecodable records go to the router DLQ with the reason."""
        outputs: list[Output] = []
        for message in batch:
            headers = message.headers() or []
            record = Record(message.key(), message.value(), tuple(headers))
            try:
                event = from_record(record.key, record.value, headers, with_data=self._with_data)
            except InvalidEvent as exc:
                outputs.append(
                    self._dead_letter(message, record, "InvalidEvent", f"not a valid CloudEvent: {exc}")
                )
                continue
            try:
                if self._with_data:
                    event = self._reader.read(event)
            except InvalidEvent as exc:
                reason = f"typed event cannot be read: {exc}"
                outputs.append(self._dead_letter(message, record, "InvalidEvent", reason))
                continue
            for target in route(to_json_dict(event), self._manifest.rules):
                topic = self._topics.get(target)
                if topic is None:
                    outputs.append(
                        self._dead_letter(message, record, "UnknownTarget", f"unknown target {target!r}")
                    )
                else:
                    outputs.append(Output(topic, record))
        return outputs

    def _dead_letter(self, message: InMessage, record: Record, error_type: str, reason: str) -> Output:
        origin = f"{message.topic()}/{message.partition()}/{message.offset()}"
        log_event(logger, "routed_to_dlq", error_type=error_type, reason=reason, origin=origin)
        return Output(self._dlq, dead_letter(record, error_type=error_type, reason=reason, origin=origin))


def serve(
    settings: KafkaSettings, manifest: Manifest, stop: threading.Event, *, store: SchemaStore | None = None
) -> None:
    """Run one router instance until `stop` is set; `store` holds writer schemas the book lacks."""
    group = naming.router_group(manifest.prefix)
    ensure_topics(settings, manifest_topics(manifest))
    reader = TypedReader(
        book=load_book(manifest.schemas, Path(manifest.base_dir)),
        store=store,
        resolve=False,
        max_bytes=settings.max_record_bytes,
    )
    with TransactionalLoop(
        settings,
        group=group,
        topics=[naming.ingress_topic(manifest.prefix)],
        transactional_id=naming.transactional_id(group, uuid.uuid4().hex[:12]),
    ) as loop:
        log_event(logger, "router_ready", group=group, rules=len(manifest.rules))
        loop.run(Router(manifest, reader), stop)
        log_event(logger, "router_stopped", batches=loop.batches, records_in=loop.records_in)


def main(argv: list[str] | None = None) -> int:
    """`python -m bus.router -f bus.yaml`: route until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bus.router")
    parser.add_argument("-f", "--manifest", required=True, help="path of bus.yaml")
    args = parser.parse_args(argv)
    configure(os.environ.get("BUS_LOG_LEVEL", "INFO"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        manifest = read(args.manifest, prefix=os.environ.get("BUS_PREFIX") or None)
        settings = load_kafka(os.environ, prefix=manifest.prefix)
        serve(settings, manifest, stop, store=open_store(settings, os.environ))
    except BusError as exc:
        print(f"router: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

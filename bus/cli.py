"""The `bus` command line (SPEC §9). Errors go to stderr in one line; exit 0 on success."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from bus import (
    cli_deploy,
    cli_dlq,
    cli_flows,
    cli_rules,
    cli_status,
    cli_ui,
    localkafka,
    manifest,
    naming,
    replay,
)
from bus.avro_schema import load_book
from bus.avro_store import TypedReader
from bus.cli_args import port, positive
from bus.clock import now_rfc3339
from bus.dashboard_server import pick_port
from bus.errors import BusError, ConfigError, HandlerLoadError, InvalidEvent, ManifestError
from bus.events import CloudEvent, parse_json, to_json_dict
from bus.kafka.admin import ensure_topics
from bus.kafka.control_store import read_applied, starting_manifest
from bus.kafka.producer import AsyncProducer
from bus.kafka.reader import read_topic
from bus.kafka.schema_store import open_store
from bus.kafka_binding import from_record, to_record
from bus.logs import configure
from bus.registry import SchemaRegistry
from bus.settings import KafkaSettings, bus_home, load_kafka
from bus.stack import Stack, bundled_example, current_environ, install_stop_handlers, interrupt_on_signals
from bus.topology import ingress_topics
from bus.typed_events import EdgeSchemas, register_book, typed

__all__ = ["main"]


_port = port()
_any_port = port(any_free=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bus", description="EventBridge + Lambda on your own Kafka.")
    parser.add_argument("--prefix", help="topic namespace (default $BUS_PREFIX or 'bus')")
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="manage the local Kafka broker").add_subparsers(
        dest="kafka_command", required=True
    )
    start = kafka.add_parser("start", help="fetch (if missing) and start a single-node KRaft broker")
    start.add_argument("--port", type=_port, help="client port (default 9092, or a free one)")
    start.add_argument("--data-dir", type=Path, help="data folder (default $BUS_HOME/kafka)")
    for name, text in (
        ("stop", "stop the broker cleanly"),
        ("status", "say whether it runs and where"),
    ):
        cmd = kafka.add_parser(name, help=text)
        cmd.add_argument("--data-dir", type=Path, help="data folder (default $BUS_HOME/kafka)")

    up = sub.add_parser("up", help="run the whole platform on this machine")
    up.add_argument("-f", "--file", type=Path, help="manifest (default: the bundled example)")
    up.add_argument("--http-port", type=_port, default=8080, help="gateway port (default 8080)")
    up.add_argument(
        "--ui-port", type=_any_port, help="dashboard port (default 8089, or a free one; 0: any free)"
    )

    publish = sub.add_parser("publish", help="publish one event; print its id")
    publish.add_argument("--type", required=True, help="event type")
    publish.add_argument("--source", required=True, help="event source (a URI reference)")
    publish.add_argument("--data", help="JSON data")
    publish.add_argument("--key", help="partition key (the partitionkey extension)")
    publish.add_argument("--subject", help="event subject")
    publish.add_argument("--tags", help="comma-separated tags")
    publish.add_argument("--id", help="event id (default: a new UUID)")
    publish.add_argument(
        "-f", "--file", type=Path, help="type the event by this manifest's schemas (default: the applied one)"
    )

    tail = sub.add_parser("tail", help="print the events of a topic, one per line")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest event")
    tail.add_argument(
        "--max", type=positive(), metavar="N", help="stop after N events (exit 1 if fewer came)"
    )
    tail.add_argument("--timeout", type=float, help="stop after S seconds")
    tail.add_argument("--json", action="store_true", help="CloudEvents JSON format")

    redo = sub.add_parser("replay", help="re-drive ingested events through the current rules to one function")
    redo.add_argument("--function", required=True, metavar="F", help="the one function to re-drive events to")
    redo.add_argument(
        "--from", dest="start", required=True, metavar="T", help="RFC 3339 time with zone, or ago: 30m, 2h"
    )
    redo.add_argument(
        "--to", dest="end", metavar="T", help="same forms (default: the ingress end as of the start)"
    )
    redo.add_argument(
        "--rate", metavar="N", help="events per second, e.g. 100 or 100/s (default: unthrottled)"
    )
    redo.add_argument("--dry-run", action="store_true", help="produce nothing; count what would go")
    redo.add_argument("-f", "--file", type=Path, help="route by this manifest (default: the applied one)")

    cli_rules.add_commands(sub)
    cli_dlq.add_commands(sub)
    cli_status.add_commands(sub)
    cli_deploy.add_commands(sub)
    cli_ui.add_commands(sub)
    cli_flows.add_commands(sub)
    _prefix_anywhere(parser)
    return parser


def _prefix_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept `--prefix` after the subcommand too (`bus rules list --prefix shop`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if "--prefix" not in child._option_string_actions:
                    child.add_argument("--prefix", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                _prefix_anywhere(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `bus` command; return its exit status."""
    args = _parser().parse_args(argv)
    environ = current_environ()
    try:
        if args.command in _WITH_ENVIRON:
            return _WITH_ENVIRON[args.command](args, environ)
        settings = load_kafka(environ, prefix=args.prefix)
        if args.command == "apply":
            return cli_rules.run_apply(args, settings, prefix=args.prefix or environ.get("BUS_PREFIX"))
        return _WITH_SETTINGS[args.command](args, settings)
    except BusError as exc:
        print(f"bus {args.command}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, _BAD_INPUT) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`bus tail | head`): what it took is out; stop quietly, as cat does.
        sys.stderr.close()  # nothing more can be written; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


_BAD_INPUT = (ManifestError, ConfigError, InvalidEvent, HandlerLoadError)
"""Errors that mean the command cannot run as given (exit 2): a manifest, an argument or an input
to fix; any other BusError is the world failing (Kafka, a registry; exit 1)."""


def _kafka(args: argparse.Namespace, environ: dict[str, str]) -> int:
    data_dir = args.data_dir or bus_home(environ) / "kafka"
    if args.kafka_command == "start":
        state = localkafka.start(data_dir, environ=environ, port=args.port)
        print(state.bootstrap)
        return 0
    if args.kafka_command == "stop":
        stopped = localkafka.stop(data_dir)
        print(f"stopped Kafka at {stopped.bootstrap}" if stopped else "Kafka was not running")
        return 0
    running = localkafka.status(data_dir)
    if running is None:
        print(f"Kafka is not running (data dir {data_dir})")
        return 1
    print(f"Kafka is running at {running.bootstrap} (pid {running.pid}, data dir {running.data_dir})")
    return 0


def _up(args: argparse.Namespace, environ: dict[str, str]) -> int:
    path = (args.file or bundled_example()).resolve()
    parsed = manifest.read(path, prefix=args.prefix or environ.get("BUS_PREFIX") or None)
    configure(environ.get("BUS_LOG_LEVEL", "WARNING"))  # supervision decisions (restarts) reach stderr
    stack = Stack(path, parsed, http_port=args.http_port, environ=environ, ui_port=pick_port(args.ui_port))
    stop = threading.Event()
    interrupt_on_signals()  # while starting, a signal interrupts the start; shutdown still runs
    try:
        where = stack.start()
        install_stop_handlers(stop)
        functions = ", ".join(parsed.functions) or "none"
        print(
            f"bus is up\n"
            f"  kafka     {where['kafka']}\n"
            f"  gateway   {where['gateway']}  (POST /events)\n"
            f"  dashboard {where['dashboard']}\n"
            f"  functions {functions}\n"
            f"  ingress   {naming.ingress_topic(parsed.prefix)}\n"
            f"  logs      {where['logs']}\n"
            f"  manifest  {where['manifest']}\n"
            f"Ctrl-C stops everything.",
            flush=True,
        )
        stack.run(stop)
    finally:
        stack.shutdown()
        print("bus is down", flush=True)
    return 0


def _publish(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """Publish one event as the gateway would: a typed type's data validated and written as Avro."""
    extensions: dict[str, str | int | bool] = {}
    if args.key:
        extensions["partitionkey"] = args.key
    if args.tags:
        extensions["tags"] = args.tags
    try:
        data = parse_json(args.data, field_name="--data") if args.data is not None else None
        event = CloudEvent.create(
            id=args.id or str(uuid.uuid4()),
            source=args.source,
            type=args.type,
            time=now_rfc3339(),
            subject=args.subject,
            datacontenttype="application/json" if data is not None else None,
            extensions=extensions,
            data=data,
        )
        chosen = args.prefix or environ.get("BUS_PREFIX") or None
        parsed = manifest.read(args.file, prefix=chosen) if args.file is not None else None
        settings = load_kafka(environ, prefix=parsed.prefix if parsed is not None else chosen)
        if parsed is None:
            parsed = _applied_manifest(settings)
        (event,) = typed([event], _edge_schemas(parsed, event.type, settings, environ))
    except InvalidEvent as exc:
        print(f"bus publish: invalid event: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, ManifestError) as exc:
        print(f"bus publish: {exc}", file=sys.stderr)
        return 2
    ensure_topics(settings, ingress_topics(settings.prefix))

    async def send() -> None:
        async with AsyncProducer(settings) as producer:
            await producer.send(naming.ingress_topic(settings.prefix), to_record(event))

    asyncio.run(send())
    print(event.id)
    return 0


def _applied_manifest(settings: KafkaSettings) -> manifest.Manifest:
    """The manifest the prefix's gateways type events by: the applied one, else none (platform types only)."""
    applied, _ = read_applied(settings, settings.prefix)
    started = starting_manifest(applied, settings.prefix, has_file=False)
    return started[0] if started is not None else manifest.Manifest(prefix=settings.prefix)


def _edge_schemas(
    parsed: manifest.Manifest, event_type: str, settings: KafkaSettings, environ: dict[str, str]
) -> EdgeSchemas:
    """The gateway's schemas for `parsed`, registered as it registers them when `event_type` is typed."""
    book = load_book(parsed.schemas, Path(parsed.base_dir))
    if book.for_type(event_type) is None:
        return EdgeSchemas(book=book)  # stays JSON: no need to reach the schema store
    store = open_store(settings, environ)
    return register_book(book, store, registry_url=store.url if isinstance(store, SchemaRegistry) else None)


def _tail(args: argparse.Namespace, settings: KafkaSettings) -> int:
    # Typed (Avro) events are shown as the JSON they were sent as, read with their writer schema,
    # from the schemas of the prefix the topic belongs to unless --prefix says otherwise.
    prefix = settings.prefix if args.prefix else (naming.prefix_of(args.topic) or settings.prefix)
    store = open_store(dataclasses.replace(settings, prefix=prefix), current_environ(), create=False)
    reader = TypedReader(store=store, resolve=False)
    messages = read_topic(settings, args.topic, from_beginning=args.from_beginning, timeout=args.timeout)
    for count, message in enumerate(messages, start=1):
        print(_render(message, reader, as_json=args.json), flush=True)
        if args.max is not None and count >= args.max:
            return 0
    return 1 if args.max is not None else 0


def _render(message: Any, reader: TypedReader, *, as_json: bool) -> str:
    try:
        event = reader.read(from_record(message.key(), message.value(), message.headers()))
    except InvalidEvent as exc:
        raw = (message.value() or b"").decode("utf-8", "replace")
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        why = f"cannot read it: {_shorten(str(exc))}"
        if as_json:
            return orjson.dumps({"raw": raw, "at": where, "error": why}).decode()
        printable = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in raw)
        return f"{where}  ({why})  {printable}"
    doc = to_json_dict(event)
    if as_json:
        return orjson.dumps(doc).decode()
    data = doc.get("data", doc.get("data_base64"))
    shown = orjson.dumps(data).decode() if data is not None else ""
    return f"{event.time or '-'}  {event.type}  {event.source}  {event.id}  {shown}"


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _replay(args: argparse.Namespace, environ: dict[str, str]) -> int:
    return replay.command(
        environ,
        function=args.function,
        start=args.start,
        end=args.end,
        rate=args.rate,
        dry_run=args.dry_run,
        manifest_path=args.file,
        prefix=args.prefix,
    )


_WITH_ENVIRON: dict[str, Callable[[argparse.Namespace, dict[str, str]], int]] = {
    "kafka": _kafka,
    "up": _up,
    "publish": _publish,
    "replay": _replay,
    "dlq": cli_dlq.run,
    "status": cli_status.run,
    "deploy": cli_deploy.run,
    "ui": cli_ui.run,
    "flows": cli_flows.run,
}
"""Commands that read the environment themselves (local broker, manifest prefix), by name."""


_WITH_SETTINGS: dict[str, Callable[[argparse.Namespace, KafkaSettings], int]] = {
    "tail": _tail,
    "rules": cli_rules.run_rules,
}
"""Commands that only need the Kafka settings, by name."""


if __name__ == "__main__":
    sys.exit(main())

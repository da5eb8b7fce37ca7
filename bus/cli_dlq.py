"""`bus dlq list F|--router` and `bus dlq redrive F|--router [--filter PATTERN]` (SPEC §9).

Arguments and printing. `F` browses and redrives a function's DLQ, `--router` the router's
(redriven to the ingress topic, or to the one target a dead letter failed for: bus.dlq).

Exit status: 0 done; 1 Kafka failed (one line on stderr); 2 the command cannot be run as given
(neither or both of F and --router, unknown function, no manifest, invalid filter, the topic of a
target that router dead letters go back to missing: `bus apply` creates it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from bus import dlq
from bus.avro_schema import load_book
from bus.avro_store import TypedReader
from bus.cli_args import positive
from bus.cli_rules import _json_arg  # the same JSON-or-@file reading as `bus rules test --pattern`
from bus.clock import now_rfc3339
from bus.errors import ConfigError, ManifestError
from bus.kafka import dead_letters
from bus.kafka.control_store import manifest_in_force
from bus.kafka.schema_store import open_store
from bus.patterns import Pattern, PatternError
from bus.patterns import compile as compile_pattern
from bus.settings import load_kafka

__all__ = ["add_commands", "run"]

MESSAGE_WIDTH = 80
"""Characters of the error message `bus dlq list` shows (the full one is in `--json`)."""


_count = positive()
"""An argparse type: a positive number of dead letters."""


def add_commands(sub: Any) -> None:
    """Register `dlq list` and `dlq redrive` on the top-level subparsers."""
    commands = sub.add_parser(
        "dlq", help="browse and re-drive dead letters: a function's, or the router's"
    ).add_subparsers(dest="dlq_command", required=True)
    listing = commands.add_parser(
        "list", help="every dead letter of a function (or the router), oldest first"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line, with the full event")
    listing.add_argument("--max", type=_count, metavar="N", help="show the oldest N only")
    redrive = commands.add_parser(
        "redrive",
        help="re-publish dead letters, each at most once: to the function's topic; with --router, to ingress,"
        " or to the one target a dead letter names",
    )
    redrive.add_argument(
        "--filter", metavar="PATTERN", help="an event pattern (JSON, or @file): redrive the events it matches"
    )
    redrive.add_argument("--dry-run", action="store_true", help="produce nothing; count what would go")
    redrive.add_argument("--max", type=_count, metavar="N", help="redrive at most N (the oldest)")
    for command in (listing, redrive):
        command.add_argument("function", metavar="F", nargs="?", help="the function (or --router)")
        command.add_argument(
            "--router", action="store_true", help="the router's dead letters instead of a function's"
        )
        command.add_argument("-f", "--file", type=Path, help="the manifest (default: the applied one)")


def run(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO | None = None) -> int:
    """`bus dlq list|redrive` (printing to `out`, default stdout); Kafka errors propagate (exit 1)."""
    out = out or sys.stdout
    try:
        _check_choice(args)
        pattern = _filter(args.filter) if args.dlq_command == "redrive" and args.filter else None
        targets: dlq.Targets | None = None
        if args.router:
            parsed = manifest_in_force(environ, args.file, args.prefix)
            queue = dlq.router_queue(parsed.prefix)
        else:
            parsed, function = dead_letters.find_function(
                environ, args.function, manifest_path=args.file, prefix=args.prefix
            )
            queue = dlq.function_queue(parsed.prefix, function)
        settings = load_kafka(environ, prefix=parsed.prefix)
        reader = TypedReader(  # typed events are shown, and matched, as the JSON they were sent as
            book=load_book(parsed.schemas, Path(parsed.base_dir)),
            store=open_store(settings, environ),
            resolve=False,
            max_bytes=settings.max_record_bytes,
        )
        if args.router:  # dead letters for one target go back to it, routed by the rules in force
            targets = dlq.Targets(manifest=parsed, reader=reader, max_record_bytes=settings.max_record_bytes)
    except (ConfigError, ManifestError) as exc:
        print(f"bus dlq: {exc}", file=sys.stderr)
        return 2
    if args.dlq_command == "list":
        letters = dead_letters.read_dead_letters(settings, queue, read=reader.read)
        shown = letters[: args.max] if args.max is not None else letters
        if args.json:
            for letter in shown:
                print(orjson.dumps(letter.to_json()).decode(), file=out)
        else:
            _table(shown, out, router=args.router)
        print(_listed(letters, shown, queue.source), file=sys.stderr)
        return 0
    try:
        dead_letters.redrive(
            settings,
            queue,
            pattern=pattern,
            max_count=args.max,
            dry_run=args.dry_run,
            time=now_rfc3339,
            read=reader.read,
            targets=targets,
            report=lambda summary: print(orjson.dumps(summary).decode(), file=out, flush=True),
        )
    except ConfigError as exc:  # a target's topic is missing: nothing was produced
        print(f"bus dlq: {exc}", file=sys.stderr)
        return 2
    return 0


def _check_choice(args: argparse.Namespace) -> None:
    """Exactly one of F and --router; ConfigError naming the fix otherwise."""
    command = f"bus dlq {args.dlq_command}"
    if args.router and args.function is not None:
        raise ConfigError(
            f"give a function F or --router, not both: `{command} {args.function}` or `{command} --router`"
        )
    if not args.router and args.function is None:
        raise ConfigError(f"name the function (`{command} F`) or pass --router for the router's dead letters")


def _filter(text: str) -> Pattern:
    try:
        return compile_pattern(_json_arg(text, "--filter"))
    except PatternError as exc:
        raise ConfigError(f"--filter: {exc}") from None


_COLUMNS = ("OFFSET", "TIME", "ERROR", "ATTEMPTS", "REDRIVEN", "ID", "TYPE", "ORIGIN", "MESSAGE")
_ROUTER_COLUMNS = (*_COLUMNS[:-1], "TARGET", _COLUMNS[-1])
"""The router's listing adds TARGET: the one target a dead letter failed for ('-': all of them)."""


def _table(letters: Sequence[dlq.DeadLetterView], out: TextIO, *, router: bool = False) -> None:
    """One aligned line per dead letter under a header; nothing at all when there is none."""
    if not letters:
        return
    columns = _ROUTER_COLUMNS if router else _COLUMNS
    rows = [
        (
            letter.position,
            letter.time,
            letter.error_type or "-",
            "-" if letter.attempts is None else str(letter.attempts),
            "no" if letter.redriven is None else "yes",
            letter.id or "-",
            letter.type,
            letter.origin or "-",
            *((letter.target or "-",) if router else ()),
            letter.summary_line(MESSAGE_WIDTH) or "-",
        )
        for letter in letters
    ]
    widths = [max(len(row[i]) for row in (columns, *rows)) for i in range(len(columns) - 1)]
    for row in (columns, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=out)


def _listed(letters: Sequence[dlq.DeadLetterView], shown: Sequence[dlq.DeadLetterView], topic: str) -> str:
    """The one-line summary on stderr: `N dead letters in TOPIC (R redriven)`."""
    redriven = sum(1 for letter in letters if letter.redriven is not None)
    text = f"{len(letters)} dead letter{'' if len(letters) == 1 else 's'} in {topic}"
    if letters:
        text += f" ({redriven} redriven)"
    if len(shown) < len(letters):
        text += f"; showing the oldest {len(shown)}"
    return text

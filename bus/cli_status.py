"""`bus status [--json] [--watch] [-f bus.yaml] [--interval S]` (SPEC §7, §9): arguments and printing.

Rates need two samples: the first table comes one second after the first sample, so even the
one-shot command shows events per second (over that second); `--watch` then redraws every
`--interval` seconds with rates over the last interval. Replicas, their reason and p99 come from
the supervisor's decision log; `-` when no supervisor ran for the prefix.

Exit status: 0 done (also after Ctrl-C in `--watch`); 1 Kafka failed (one line on stderr);
2 the command cannot be run as given (no manifest).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson

from bus import manifest
from bus.clock import now_rfc3339
from bus.errors import ConfigError, ManifestError
from bus.kafka.control_store import manifest_in_force
from bus.kafka.lag import DeadLetterCounter, DecisionLog, LagMonitor
from bus.settings import load_kafka
from bus.status import function_status, render_table, router_line, to_json

__all__ = ["RATE_GAP", "add_commands", "run"]

RATE_GAP = 1.0
"""Seconds between the first two samples: what the first rates span."""

_CLEAR = "\x1b[H\x1b[2J"
"""ANSI: cursor home, clear screen (only written to a terminal)."""


def _seconds(text: str) -> float:
    """An argparse type: a redraw interval, 0.5 to 3600 seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.5 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.5 to 3600")
    return value


def add_commands(sub: Any) -> None:
    """Register `status` on the top-level subparsers."""
    status = sub.add_parser(
        "status", help="per function: lag, replicas, events/s in and out, p99, retries, dead letters"
    )
    status.add_argument("--json", action="store_true", help="a JSON list of per-function objects")
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C")
    status.add_argument(
        "--interval", type=_seconds, default=2.0, metavar="S", help="redraw interval (default 2)"
    )
    status.add_argument("-f", "--file", type=Path, help="the manifest (default: the applied one)")


def run(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO | None = None) -> int:
    """`bus status` (printing to `out`, default stdout); Kafka errors propagate (exit 1)."""
    out = out or sys.stdout
    try:
        parsed = _manifest(environ, args.file, args.prefix)
    except (ConfigError, ManifestError) as exc:
        print(f"bus status: {exc}", file=sys.stderr)
        return 2
    settings = load_kafka(environ, prefix=parsed.prefix)
    names = sorted(parsed.functions)
    interval = args.interval if args.watch else RATE_GAP
    with (
        LagMonitor(settings, functions=parsed.functions, rate_window=max(interval, RATE_GAP)) as monitor,
        DecisionLog(settings) as decisions,
        DeadLetterCounter(settings) as dead_letters,
    ):
        monitor.sample()
        due = time.monotonic() + RATE_GAP
        try:
            while True:
                time.sleep(max(0.0, due - time.monotonic()))  # pacing, not waiting for a condition
                samples = monitor.sample()
                latest = decisions.read()
                statuses = [
                    function_status(samples[name], latest.get(name), dead_letters.count(name))
                    for name in names
                ]
                if args.json:
                    print(
                        orjson.dumps([to_json(status) for status in statuses]).decode(), file=out, flush=True
                    )
                else:
                    table = render_table(statuses)
                    footer = router_line(parsed.prefix, dead_letters.count_router())
                    _draw(
                        f"{table}\n{footer}" if footer else table, out, watch=args.watch, prefix=parsed.prefix
                    )
                if not args.watch:
                    return 0
                due += interval
        except KeyboardInterrupt:
            return 0


def _draw(table: str, out: TextIO, *, watch: bool, prefix: str) -> None:
    """One frame: the table, under a time line when watching; a terminal is cleared first."""
    if not watch:
        print(table, file=out, flush=True)
        return
    clear = _CLEAR if out.isatty() else ""
    print(f"{clear}{now_rfc3339()}  prefix {prefix}\n{table}\n", file=out, flush=True)


def _manifest(environ: Mapping[str, str], path: Path | None, prefix: str | None) -> manifest.Manifest:
    """The manifest at `path`, else the one applied for the prefix."""
    return manifest_in_force(environ, path, prefix)

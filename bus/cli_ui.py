"""`bus ui [-f bus.yaml] [--host H] [--port N] [--interval S]`: the web dashboard (SPEC §7).

Serves `bus.dashboard_server.Dashboard` for the manifest's functions until Ctrl-C or SIGTERM.
Exit status: 0 stopped; 1 Kafka or the port failed (one line on stderr); 2 the command cannot be
run as given (no manifest).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bus.cli_args import port
from bus.dashboard_server import DEFAULT_PORT, Dashboard
from bus.errors import ConfigError, ManifestError
from bus.kafka.control_store import manifest_in_force
from bus.logs import configure
from bus.settings import load_kafka
from bus.stack import install_stop_handlers

__all__ = ["add_commands", "run"]


_port = port(any_free=True)


def _interval(text: str) -> float:
    """An argparse type: a sampling interval, 0.1 to 60 seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.1 to 60")
    return value


def add_commands(sub: Any) -> None:
    """Register `ui` on the top-level subparsers."""
    ui = sub.add_parser(
        "ui", help="web dashboard: lag and replicas over time, scaling decisions and reasons, dead letters"
    )
    ui.add_argument("-f", "--file", type=Path, help="the manifest (default: the applied one)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )
    ui.add_argument(
        "--interval", type=_interval, default=2.0, metavar="S", help="sampling interval (default 2)"
    )


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """`bus ui`: serve until a stop signal; Kafka and port errors propagate (exit 1)."""
    try:
        parsed = manifest_in_force(environ, args.file, args.prefix)
    except (ConfigError, ManifestError) as exc:
        print(f"bus ui: {exc}", file=sys.stderr)
        return 2
    configure(environ.get("BUS_LOG_LEVEL", "INFO"))  # the start line, and failed samples, on stderr
    settings = load_kafka(environ, prefix=parsed.prefix)
    stop = threading.Event()
    install_stop_handlers(stop)
    with Dashboard(settings, parsed, host=args.host, port=args.port, interval=args.interval) as dashboard:
        print(f"dashboard at {dashboard.url} (prefix {parsed.prefix}); Ctrl-C stops it", flush=True)
        while not stop.wait(1.0):
            pass
    return 0

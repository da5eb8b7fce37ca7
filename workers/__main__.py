"""`python -m workers [-f bus.yaml] --function NAME`: one worker replica, until SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from bus.errors import BusError
from bus.kafka.control_store import manifest_in_force
from bus.kafka.schema_store import open_store
from bus.logs import configure
from bus.settings import load_kafka
from workers.worker import serve


def main(argv: list[str] | None = None) -> int:
    """Load the manifest and serve one function; SIGTERM finishes the batch in hand and leaves."""
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument(
        "-f", "--manifest", type=Path, help="path of bus.yaml (default: the manifest applied for $BUS_PREFIX)"
    )
    parser.add_argument("--function", required=True, help="name of the function to serve")
    args = parser.parse_args(argv)
    configure(os.environ.get("BUS_LOG_LEVEL", "INFO"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        manifest = manifest_in_force(os.environ, args.manifest, None)
        if args.function not in manifest.functions:
            known = ", ".join(sorted(manifest.functions)) or "none"
            where = args.manifest or f"the manifest applied for {manifest.prefix!r}"
            print(
                f"worker: function {args.function!r} is not in {where} (functions: {known})",
                file=sys.stderr,
            )
            return 2
        settings = load_kafka(os.environ, prefix=manifest.prefix)
        port = os.environ.get("BUS_METRICS_PORT")
        serve(
            settings,
            manifest,
            args.function,
            stop,
            store=open_store(settings, os.environ),
            metrics_port=int(port) if port else None,
        )
    except BusError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

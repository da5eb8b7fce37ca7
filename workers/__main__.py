"""`python -m workers [-f bus.yaml] --function NAME`: one worker replica, until SIGTERM."""

from __future__ import annotations

import argparse
import gc
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

GC_THRESHOLD = 100_000
"""Net new containers (allocated minus freed) that start a young-generation collection
(Python's default is 700)."""


def quiet_gc() -> None:
    """Collect cycles only when many accumulate, and never look at what startup made again.

    A replica's records, headers and bookkeeping live from their fetch to their commit, tens of
    thousands of containers that reference counting frees. At Python's pace each was walked by
    the collector on the way (about 12 us per event in key mode at a threshold of 10,000, most
    of a full collection over the imported modules before `freeze`); at this one the live set's
    swings never start a collection, and the replica's own code makes almost no cycles. The
    handler host keeps Python's threshold: a handler's cycles may hold large objects under its
    memory limit. Startup's garbage is collected before the freeze, which would keep it for good.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


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
        quiet_gc()
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

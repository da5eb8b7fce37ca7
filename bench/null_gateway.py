"""`python -m bench.null_gateway --port N`: the gateway's HTTP server with a publisher that needs no Kafka.

The baseline of the gateway benchmark: the same app, protocol and settings as `python -m gateway`,
answering 202 as soon as an event is decoded, so the figure of the real gateway divided by this
one is what publishing to Kafka costs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import TracebackType

from bus.kafka_binding import Record
from bus.logs import configure
from gateway.app import create_app
from gateway.server import serve
from gateway.settings import load


class NullPublisher:
    """Accepts every record at once and never talks to Kafka."""

    async def __aenter__(self) -> NullPublisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def publish(self, records: Sequence[tuple[str, Record]]) -> None:
        """Nothing to wait for."""

    async def connected(self, *, wait: float) -> bool:
        """Always ready."""
        return True


def main(argv: list[str] | None = None) -> int:
    """Serve the null gateway until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.null_gateway")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    configure(os.environ.get("BUS_LOG_LEVEL", "INFO"))
    settings = load(os.environ, port=args.port)
    serve(create_app(settings, publisher=NullPublisher), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

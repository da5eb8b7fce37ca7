"""`GET /metrics` for processes without an HTTP server of their own (router, workers): a tiny thread."""

from __future__ import annotations

import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bus.logs import log_event
from bus.metrics import Registry

__all__ = ["MetricsServer"]

logger = logging.getLogger("bus.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsServer:
    """Serves `registry` at `http://host:port/metrics` while the `with` block runs (port 0: any free)."""

    def __init__(self, registry: Registry, port: int, host: str | None = None) -> None:
        """`host` None: `$BUS_METRICS_HOST`, else 127.0.0.1 (`0.0.0.0` in a container, for Prometheus)."""
        host = host or os.environ.get("BUS_METRICS_HOST") or "127.0.0.1"
        self._registry = registry
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        log_event(logger, "metrics_serving", port=self.port)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self._registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = registry.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Scrapes are not logged."""

        return Handler

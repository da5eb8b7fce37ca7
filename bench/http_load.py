"""A lean HTTP/1.1 load generator: keep-alive connections on raw asyncio streams.

httpx costs the sender about 2 ms of CPU per request, so with it the client, not the gateway,
sets the figure (see docs/decisions/thin-path.md). Here each connection writes one prebuilt
request and reads its response (status line, headers, Content-Length body) before the next.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["LoadResult", "post_all"]


@dataclass(slots=True)
class LoadResult:
    """What a load run saw: counts by status, per-request latencies (ms), and its wall time."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)
    accepted_events: int = 0
    seconds: float = 0.0


def request_bytes(host: str, port: int, path: str, content_type: str, body: bytes) -> bytes:
    """One keep-alive POST request, ready to write."""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def post_all(
    host: str,
    port: int,
    requests: Iterator[tuple[bytes, int]],
    *,
    connections: int,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> LoadResult:
    """Send every (request, events in it) over `connections` keep-alive connections until `deadline`."""
    result = LoadResult()
    started = clock()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            # `requests` is shared by every connection; next() never awaits, so each request goes once.
            for request, events in requests:
                if clock() >= deadline:
                    return
                sent = clock()
                writer.write(request)
                status = await _read_response(reader)
                result.latencies_ms.append((clock() - sent) * 1000)
                result.statuses[str(status)] += 1
                if status == 202:
                    result.accepted_events += events
        finally:
            writer.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(connections):
            group.create_task(connection())
    result.seconds = clock() - started
    return result


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status

"""The handler host: a child process that imports one handler once and runs its invocations.

Started by `workers.sandbox` as `python -P -m workers.host CONFIG_JSON`; never forked from the
worker. It talks to its parent over its stdin and stdout pipes in frames of a 4-byte big-endian
length and an orjson payload:

- host -> parent, first: `{"ready": import_seconds, "pid": pid}` or `{"error": reason}`;
- parent -> host: a list of invocations, each `[id, attempt, timeout, event_json_text]`;
- host -> parent: a list of outcomes, each the fields of `Outcome` in order (bytes as text);
- end of stdin: exit at once. The parent ends it after its in-flight invocations were answered
  (a graceful close) or because it died; either way nobody waits for what still runs, and a
  handler left running by a dead worker would run a second time beside its re-delivery.

Before the handler is imported the host caps its data segment (RLIMIT_DATA), makes every thread
it starts from then on take a 1 MiB stack (`STACK_BYTES`), and moves the protocol off fds 0 and
1, so a handler's `print` or child process cannot corrupt the frames.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import resource
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import IO, Any, BinaryIO

import orjson

from bus.events import CloudEvent, from_json_dict
from bus.logs import configure
from workers.handlers import Context, Handler, load_handler
from workers.invocation import Outcome, describe, failed, is_async, run_async, run_sync, utf8_safe

__all__ = [
    "EXIT_MEMORY",
    "STACK_BYTES",
    "data_limit",
    "decode_outcomes",
    "encode_invocations",
    "encode_outcome",
    "main",
    "read_frame",
]

EXIT_MEMORY = 86
"""Exit code of a host that ran out of memory outside a handler (its own bookkeeping)."""
STACK_BYTES = 1 << 20
"""Stack of every thread the host starts, its handler's own included (`threading.stack_size`).

Recursion to the default limit of 1000 through C at each level (a `__getattr__` slot) needs
about 0.75 MiB; pure Python calls need almost none. A handler that raises the recursion limit
and recurses deeper crashes its host (SIGSEGV), which is charged to it like any crash.
"""
SPARE_THREADS = 8
"""Threads beyond the handler pool whose stacks the data limit leaves room for (loop, user threads)."""

_LENGTH = struct.Struct(">I")


def data_limit(memory_mb: int, concurrency: int) -> int:
    """RLIMIT_DATA bytes for a host: the memory budget plus the thread stacks it reserves.

    Thread stacks count as data although they are mostly never touched: `STACK_BYTES` for each
    handler thread and for `SPARE_THREADS` more.
    """
    return (memory_mb << 20) + (concurrency + SPARE_THREADS) * STACK_BYTES


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's payload from a buffered stream; None at its end."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = _LENGTH.unpack(head)
    payload = stream.read(length)
    return payload if len(payload) == length else None


def frame(payload: bytes) -> bytes:
    """`payload` with its length in front."""
    return _LENGTH.pack(len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to a blocking fd."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def encode_invocations(items: Sequence[tuple[int, int, float, bytes]]) -> bytes:
    """The frame carrying `(id, attempt, timeout, event)` invocations to a host."""
    return frame(
        orjson.dumps(
            [
                [id, attempt, timeout, event.decode("utf-8", "replace")]
                for id, attempt, timeout, event in items
            ]
        )
    )


def decode_outcomes(payload: bytes) -> list[Outcome]:
    """The outcomes in a frame a host sent."""
    return [
        Outcome(
            id=id,
            kind=kind,
            value=value.encode() if value is not None else None,
            emitted=tuple(text.encode() for text in emitted),
            error_type=error_type,
            message=message,
            traceback=trace,
            retry_after=retry_after,
            cause=cause,
            duration=duration,
        )
        for (id, kind, value, emitted, error_type, message, trace, retry_after, cause, duration) in (
            orjson.loads(payload)
        )
    ]


def encode_outcome(outcome: Outcome) -> bytes:
    """One outcome as JSON for a host's frame, whatever its text holds.

    Lone surrogates (a file name that is not UTF-8, in a message) are escaped; an outcome that
    still cannot be encoded becomes a failure of its own invocation, never of its neighbours'.
    """
    try:
        return orjson.dumps(_fields(outcome))
    except (TypeError, ValueError):  # orjson.JSONEncodeError: surrogates in the text, most likely
        pass
    escaped = replace(
        outcome,
        error_type=utf8_safe(outcome.error_type),
        message=utf8_safe(outcome.message),
        traceback=utf8_safe(outcome.traceback),
    )
    try:
        return orjson.dumps(_fields(escaped))
    except MemoryError:
        raise
    except Exception as exc:  # anything else in it: the value or an emitted event
        unsendable = failed(
            outcome.id,
            error_type="OutcomeNotSerializable",
            message=utf8_safe(f"the host cannot send this outcome ({outcome.kind}): {exc!r}"),
            cause="result" if outcome.kind == "ok" else "exception",
        )
        return orjson.dumps(_fields(replace(unsendable, duration=outcome.duration)))


def _fields(outcome: Outcome) -> list[Any]:
    return [
        outcome.id,
        outcome.kind,
        outcome.value.decode() if outcome.value is not None else None,
        [raw.decode() for raw in outcome.emitted],
        outcome.error_type,
        outcome.message,
        outcome.traceback,
        outcome.retry_after,
        outcome.cause,
        outcome.duration,
    ]


class _Host:
    """Runs invocations as they arrive and writes their outcomes back, batching what is ready."""

    def __init__(
        self, handler: Handler, *, function: str, prefix: str, concurrency: int, memory_mb: int, out_fd: int
    ) -> None:
        self._handler = handler
        self._function = function
        self._prefix = prefix
        self._memory_mb = memory_mb
        self._out_fd = out_fd
        self._logger = logging.getLogger(f"bus.fn.{function}")
        self._lock = threading.Lock()
        self._outbox: list[bytes] = []
        self._writing = False
        self._inbox: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        if is_async(handler):
            self._loop = asyncio.new_event_loop()
            self._slots = asyncio.Semaphore(concurrency)
            self._tasks: set[asyncio.Task[None]] = set()
            threading.Thread(target=self._loop.run_forever, name="bus-host-loop", daemon=True).start()
        else:
            # Exactly `concurrency` threads taking invocations first in, first out. Not a
            # ThreadPoolExecutor: its per-call Future and semaphore cost a third of the host's
            # throughput with a no-op handler (docs/decisions/handler-isolation.md).
            for n in range(concurrency):
                threading.Thread(target=self._work, name=f"bus-handler-{n}", daemon=True).start()

    def serve(self, stream: BinaryIO) -> None:
        """Start every invocation read from `stream` until it ends (then the caller exits at once)."""
        while (payload := read_frame(stream)) is not None:
            items = orjson.loads(payload)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._start_tasks, items)
            else:
                for item in items:
                    self._inbox.put(item)

    def _prepare(self, item: list[Any]) -> tuple[CloudEvent, Context]:
        _, attempt, timeout, text = item
        event = from_json_dict(orjson.loads(text))
        ctx = Context(
            function=self._function,
            attempt=attempt,
            deadline=time.monotonic() + timeout,
            idempotency_key=event.id,
            logger=self._logger,
            prefix=self._prefix,
        )
        return event, ctx

    def _work(self) -> None:
        while True:
            self._run_sync(self._inbox.get())

    def _run_sync(self, item: list[Any]) -> None:
        try:
            event, ctx = self._prepare(item)
        except Exception as exc:
            self._finish(_unreadable(item[0], exc))
            return
        try:
            outcome = run_sync(self._handler, event, ctx, id=item[0], memory_mb=self._memory_mb)
        except BaseException as exc:  # a KeyboardInterrupt raised by the handler itself
            outcome = _raised_outside(item[0], exc)
        self._finish(outcome)

    def _start_tasks(self, items: list[list[Any]]) -> None:
        assert self._loop is not None
        for item in items:
            task = self._loop.create_task(self._run_async(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_async(self, item: list[Any]) -> None:
        async with self._slots:
            try:
                event, ctx = self._prepare(item)
            except Exception as exc:
                self._finish(_unreadable(item[0], exc))
                return
            try:
                outcome = await run_async(self._handler, event, ctx, id=item[0], memory_mb=self._memory_mb)
            except BaseException as exc:  # a KeyboardInterrupt raised by the handler itself
                outcome = _raised_outside(item[0], exc)
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        try:
            if self._loop is not None:
                self._queue(encode_outcome(outcome))
            else:
                self._send(encode_outcome(outcome))
        except MemoryError:
            os._exit(EXIT_MEMORY)  # not even an outcome fits: the parent reports the memory cause
        except OSError:
            os._exit(0)  # the parent is gone: nobody to report to

    def _queue(self, item: bytes) -> None:
        """On the loop: the outcomes of one loop iteration go out in one frame, after it."""
        self._outbox.append(item)
        if not self._writing:
            self._writing = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._outbox, self._writing = self._outbox, [], False
        try:
            write_all(self._out_fd, _batch_frame(batch))
        except MemoryError:
            os._exit(EXIT_MEMORY)
        except OSError:
            os._exit(0)

    def _send(self, item: bytes) -> None:
        """Queue an outcome; the first thread to find nobody writing writes everything queued."""
        with self._lock:
            self._outbox.append(item)
            if self._writing:
                return
            self._writing = True
        while True:
            with self._lock:
                batch, self._outbox = self._outbox, []
                if not batch:
                    self._writing = False
                    return
            try:
                write_all(self._out_fd, _batch_frame(batch))
            except BaseException:
                with self._lock:
                    self._writing = False
                raise


def _batch_frame(outcomes: list[bytes]) -> bytes:
    """The frame of a list of outcomes, each encoded already."""
    return frame(b"[" + b",".join(outcomes) + b"]")


def _unreadable(id: int, exc: Exception) -> Outcome:
    error_type, message, trace = describe(exc)
    message = f"the host cannot read the event: {message}"
    return failed(id, error_type=error_type, message=message, cause="exception", traceback=trace)


def _raised_outside(id: int, exc: BaseException) -> Outcome:
    error_type, message, trace = describe(exc)
    cause = "memory" if isinstance(exc, MemoryError) else "exception"
    return failed(id, error_type=error_type, message=message, cause=cause, traceback=trace)


def main(argv: Sequence[str] | None = None) -> int:
    """Host one handler as configured by the JSON in argv[1]; see the module docstring."""
    args = sys.argv if argv is None else argv
    config = orjson.loads(args[1])
    # The protocol moves to private fds; fd 1 becomes stderr and fd 0 /dev/null for user code.
    in_fd, out_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a TextIOWrapper on fd 1
    configure(os.environ.get("BUS_LOG_LEVEL", "INFO"))
    memory_mb, concurrency = int(config["memory_mb"]), int(config["concurrency"])
    limit = data_limit(memory_mb, concurrency)
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))  # the hard limit too: no raising it back
    threading.stack_size(STACK_BYTES)  # what the limit counts, for threads the handler starts too
    started = time.perf_counter()
    try:
        handler = load_handler(config["handler"], base_dir=config["base_dir"])
    except BaseException as exc:  # HandlerLoadError, but also SystemExit or MemoryError at import
        _, message, _ = describe(exc)
        if isinstance(exc, MemoryError):
            message = f"handler {config['handler']!r}: importing it needs more than {memory_mb} MiB"
        elif not message.startswith("handler "):
            message = f"handler {config['handler']!r}: importing it raised {type(exc).__name__} ({message})"
        write_all(out_fd, frame(orjson.dumps({"error": message})))
        return 1
    host = _Host(
        handler,
        function=config["function"],
        prefix=config["prefix"],
        concurrency=concurrency,
        memory_mb=memory_mb,
        out_fd=out_fd,
    )
    write_all(out_fd, frame(orjson.dumps({"ready": time.perf_counter() - started, "pid": os.getpid()})))
    with open(in_fd, "rb", buffering=1 << 16) as stream:
        try:
            host.serve(stream)
        except MemoryError:
            os._exit(EXIT_MEMORY)
    # Handlers may have left non-daemon threads behind; they must not keep the host alive.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

"""The worker process of one function: consume its topic, invoke the handler, publish outcomes.

Results, error records, dead letters and the input offsets commit in one Kafka transaction
per batch, so each input's outcome is published once even when a worker is killed mid-batch.
This is the thin runtime; per-key concurrency, delayed retries and isolation grow from here.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from bus import naming
from bus.avro_schema import load_book
from bus.avro_store import SchemaStore, TypedReader
from bus.clock import now_rfc3339
from bus.deadletter import dead_letter
from bus.errors import InvalidEvent
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.txloop import InMessage, Output, TransactionalLoop
from bus.kafka_binding import Record, from_record, record_size, to_record
from bus.logs import log_event
from bus.manifest import Function, Manifest
from bus.settings import KafkaSettings
from bus.topology import function_topics
from workers.handlers import Context, Handler, load_handler
from workers.outcome import Failure, error_event, result_event

__all__ = ["AsyncRunner", "Invoker", "serve"]

logger = logging.getLogger("bus.worker")

WORKER_BATCH = 50
"""Most records a worker takes into one transaction."""


class AsyncRunner:
    """An event loop on a thread of its own, for async handlers called from the consume loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bus-handlers", daemon=True)

    def __enter__(self) -> AsyncRunner:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def run(self, awaitable: Awaitable[Any], timeout: float) -> Any:
        """Await `awaitable` on the runner's loop; raise TimeoutError after `timeout` seconds."""
        future = asyncio.run_coroutine_threadsafe(_bounded(awaitable, timeout), self._loop)
        return future.result()


async def _bounded(awaitable: Awaitable[Any], seconds: float) -> Any:
    return await asyncio.wait_for(awaitable, seconds)


class Invoker:
    """The loop's transform for one function: each input record becomes its outcome records."""

    def __init__(
        self,
        *,
        prefix: str,
        function: Function,
        handler: Handler,
        runner: AsyncRunner,
        max_record_bytes: int,
        reader: TypedReader | None = None,
        clock: Callable[[], str] = now_rfc3339,
    ) -> None:
        """`reader` turns typed (Avro) inputs into JSON data for the handler; None: JSON inputs only."""
        self._prefix = prefix
        self._function = function
        self._handler = handler
        self._runner = runner
        self._max_record_bytes = max_record_bytes
        self._reader = reader or TypedReader()
        self._clock = clock
        self._dlq = naming.dlq_topic(prefix, function.name)
        self._log = logging.getLogger(f"bus.fn.{function.name}")

    def __call__(self, batch: Sequence[InMessage]) -> list[Output]:
        """Invoke the handler on every record of the batch, in order."""
        outputs: list[Output] = []
        for message in batch:
            outputs.extend(self._invoke(message))
        return outputs

    def _invoke(self, message: InMessage) -> list[Output]:
        headers = message.headers() or []
        original = Record(message.key(), message.value(), tuple(headers))
        try:
            # A typed event is read with this function's own schema for its type (Avro resolution),
            # under the bomb guard's limits; one that cannot be read is a poison event.
            event = self._reader.read(from_record(original.key, original.value, headers))
        except InvalidEvent as exc:
            return [self._dead_letter(message, original, "InvalidEvent", str(exc))]
        started = self._clock()
        ctx = Context(
            function=self._function.name,
            attempt=1,
            deadline=time.monotonic() + self._function.timeout,
            idempotency_key=event.id,
            logger=self._log,
        )
        try:
            value = self._call(event, ctx)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit and friends from user code are failures too
            return self._failed(message, original, event, exc, started)
        target = self._function.destinations.on_success
        if target is None:
            return []
        try:
            record = to_record(
                result_event(
                    prefix=self._prefix,
                    function=self._function.name,
                    cause=event,
                    value=value,
                    time=self._clock(),
                )
            )
        except (InvalidEvent, TypeError) as exc:
            return self._failed(message, original, event, ResultNotSerializable(str(exc)), started)
        size = record_size(record)
        if size > self._max_record_bytes:
            too_large = ResultTooLarge(
                f"result is {size} bytes; records are limited to {self._max_record_bytes}"
            )
            return self._failed(message, original, event, too_large, started)
        return [Output(target, record)]

    def _call(self, event: CloudEvent, ctx: Context) -> Any:
        value = self._handler(event, ctx)
        if inspect.isawaitable(value):  # async def, or an object whose __call__ is async
            return self._runner.run(value, self._function.timeout)
        return value

    def _failed(
        self, message: InMessage, original: Record, event: CloudEvent, exc: BaseException, started: str
    ) -> list[Output]:
        error_type, reason, trace = _describe(exc)
        failure = Failure(
            error_type=error_type,
            message=reason,
            traceback=trace,
            attempts=1,
            first_attempt_time=started,
            last_attempt_time=started,
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
        )
        log_event(
            logger,
            "invocation_failed",
            function=self._function.name,
            event_id=event.id,
            error_type=error_type,
            reason=reason,
            level=logging.WARNING,
        )
        outputs = [self._dead_letter(message, original, error_type, reason)]
        target = self._function.destinations.on_failure
        if target:
            outputs.append(Output(target, self._error_record(event, failure)))
        return outputs

    def _error_record(self, event: CloudEvent, failure: Failure) -> Record:
        """The error event as a record, embedding the input's data only when it fits."""
        build = functools.partial(
            error_event, prefix=self._prefix, function=self._function.name, cause=event, failure=failure
        )
        record = to_record(build(time=self._clock()))
        if record_size(record) > self._max_record_bytes:
            record = to_record(build(time=self._clock(), embed_data=False))
        return record

    def _dead_letter(self, message: InMessage, original: Record, error_type: str, reason: str) -> Output:
        origin = f"{message.topic()}/{message.partition()}/{message.offset()}"
        return Output(self._dlq, dead_letter(original, error_type=error_type, reason=reason, origin=origin))


class ResultNotSerializable(Exception):
    """The handler returned a value that is not JSON (the result event cannot carry it)."""


class ResultTooLarge(Exception):
    """The handler's result does not fit in one Kafka record."""


def _describe(exc: BaseException) -> tuple[str, str, str]:
    """(type, message, traceback) of a user exception, even one whose __str__ raises."""
    error_type = type(exc).__name__
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not crash the worker
        message = f"<unprintable {error_type}>"
    try:
        trace = "".join(traceback.format_exception(exc))
    except Exception:  # same for a broken traceback
        trace = ""
    return error_type, message, trace


def serve(
    settings: KafkaSettings,
    manifest: Manifest,
    function_name: str,
    stop: threading.Event,
    *,
    store: SchemaStore | None = None,
) -> None:
    """Run one replica of a function's worker group until `stop` is set.

    `store` holds the writer schemas of typed events this manifest's book lacks (newer versions).
    """
    function = manifest.functions[function_name]
    handler = load_handler(function.handler, base_dir=manifest.base_dir)
    group = naming.function_group(manifest.prefix, function.name)
    ensure_topics(settings, function_topics(manifest.prefix, function))
    with (
        AsyncRunner() as runner,
        TransactionalLoop(
            settings,
            group=group,
            topics=[naming.function_topic(manifest.prefix, function.name)],
            transactional_id=naming.transactional_id(group, uuid.uuid4().hex[:12]),
            # Handlers run inline until the runtime issue: keep a batch well inside the poll interval
            # and the shutdown grace period.
            max_batch=WORKER_BATCH,
        ) as loop,
    ):
        invoker = Invoker(
            prefix=manifest.prefix,
            function=function,
            handler=handler,
            runner=runner,
            max_record_bytes=settings.max_record_bytes,
            reader=TypedReader(
                book=load_book(manifest.schemas, Path(manifest.base_dir)),
                store=store,
                max_bytes=settings.max_record_bytes,
            ),
        )
        log_event(logger, "worker_ready", function=function.name, group=group)
        loop.run(invoker, stop)
        log_event(logger, "worker_stopped", function=function.name, records_in=loop.records_in)

"""The worker process of one function: consume its topic, invoke the handler, publish outcomes.

Results, error records, dead letters and the input offsets commit in one Kafka transaction
per batch, so each input's outcome is published once even when a worker is killed mid-batch.
This is the thin runtime; per-key concurrency, delayed retries and isolation grow from here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

from bus import naming
from bus.clock import now_rfc3339
from bus.errors import InvalidEvent
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.txloop import InMessage, Output, TransactionalLoop
from bus.kafka_binding import Record, from_record, to_record
from bus.logs import log_event
from bus.manifest import Function, Manifest
from bus.settings import KafkaSettings
from bus.topology import function_topics
from workers.handlers import Context, Handler, load_handler
from workers.outcome import Failure, error_event, result_event

__all__ = ["AsyncRunner", "Invoker", "serve"]

logger = logging.getLogger("bus.worker")


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

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        """Run `coro` on the runner's loop; raise TimeoutError after `timeout` seconds."""
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        return future.result()


class Invoker:
    """The loop's transform for one function: each input record becomes its outcome records."""

    def __init__(
        self,
        *,
        prefix: str,
        function: Function,
        handler: Handler,
        runner: AsyncRunner | None,
        clock: Callable[[], str] = now_rfc3339,
    ) -> None:
        self._prefix = prefix
        self._function = function
        self._handler = handler
        self._is_async = inspect.iscoroutinefunction(handler)
        if self._is_async and runner is None:
            raise ValueError("an async handler needs an AsyncRunner")
        self._runner = runner
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
            event = from_record(original.key, original.value, headers)
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
            result = result_event(
                prefix=self._prefix,
                function=self._function.name,
                cause=event,
                value=value,
                time=self._clock(),
            )
            target = self._function.destinations.on_success
            return [Output(target, to_record(result))] if target else []
        except Exception as exc:
            return self._failed(message, original, event, exc, started)

    def _call(self, event: CloudEvent, ctx: Context) -> Any:
        if self._is_async:
            assert self._runner is not None
            return self._runner.run(self._handler(event, ctx), self._function.timeout)
        return self._handler(event, ctx)

    def _failed(
        self, message: InMessage, original: Record, event: CloudEvent, exc: Exception, started: str
    ) -> list[Output]:
        failure = Failure(
            error_type=type(exc).__name__,
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
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
            error_type=failure.error_type,
            reason=failure.message,
            level=logging.WARNING,
        )
        outputs = [self._dead_letter(message, original, failure.error_type, failure.message)]
        target = self._function.destinations.on_failure
        if target:
            error = error_event(
                prefix=self._prefix,
                function=self._function.name,
                cause=event,
                failure=failure,
                time=self._clock(),
            )
            outputs.append(Output(target, to_record(error)))
        return outputs

    def _dead_letter(self, message: InMessage, original: Record, error_type: str, reason: str) -> Output:
        headers = (
            *original.headers,
            ("bus_error_type", error_type.encode()),
            ("bus_error_message", reason.encode("utf-8", "replace")[:4096]),
            ("bus_origin", f"{message.topic()}/{message.partition()}/{message.offset()}".encode()),
        )
        return Output(self._dlq, Record(original.key, original.value, headers))


def serve(settings: KafkaSettings, manifest: Manifest, function_name: str, stop: threading.Event) -> None:
    """Run one replica of a function's worker group until `stop` is set."""
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
        ) as loop,
    ):
        invoker = Invoker(prefix=manifest.prefix, function=function, handler=handler, runner=runner)
        log_event(logger, "worker_ready", function=function.name, group=group)
        loop.run(invoker, stop)
        log_event(logger, "worker_stopped", function=function.name, records_in=loop.records_in)

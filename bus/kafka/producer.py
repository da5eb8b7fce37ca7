"""An asyncio producer: `await send(...)` returns once the broker acknowledged the record."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError as ClientError
from confluent_kafka import KafkaException, Message, Producer

from bus.errors import KafkaUnavailable, PublishError
from bus.kafka.config import build, producer_config
from bus.kafka_binding import Record
from bus.logs import log_event
from bus.settings import KafkaSettings

__all__ = ["UNAVAILABLE", "AsyncProducer", "Delivered"]

logger = logging.getLogger("bus.kafka")

Delivered = tuple[str, int, int]
"""(topic, partition, offset) of an acknowledged record."""

UNAVAILABLE = {
    ClientError._MSG_TIMED_OUT,
    ClientError._TRANSPORT,
    ClientError._ALL_BROKERS_DOWN,
    ClientError._TIMED_OUT,
    ClientError.NOT_ENOUGH_REPLICAS,
    ClientError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ClientError.REQUEST_TIMED_OUT,
}


class AsyncProducer:
    """Idempotent acks=all producer bridged to asyncio; owns the thread that serves its callbacks.

    Use as `async with AsyncProducer(settings) as producer:`; leaving the block flushes.
    """

    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        self._config = {**producer_config(settings), **overrides}
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()

    async def __aenter__(self) -> AsyncProducer:
        self._producer = build(Producer, self._config)
        self._poller = threading.Thread(target=self._poll, name="bus-producer-poll", daemon=True)
        self._poller.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        producer = self._producer
        if producer is not None:
            await asyncio.to_thread(producer.flush, self._config["message.timeout.ms"] / 1000)
        self._stopping.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)

    def _poll(self) -> None:
        assert self._producer is not None
        while not self._stopping.is_set():
            self._producer.poll(0.05)

    async def connected(self, *, wait: float) -> bool:
        """True when the broker answers a metadata request within `wait` seconds."""
        producer = self._producer
        if producer is None:
            return False
        try:
            await asyncio.to_thread(producer.list_topics, timeout=wait)
        except KafkaException:
            return False
        return True

    async def send(self, topic: str, record: Record) -> Delivered:
        """Produce one record; return once acknowledged, or raise PublishError/KafkaUnavailable."""
        (delivered,) = await self.send_all([(topic, record)])
        return delivered

    async def send_all(self, records: Sequence[tuple[str, Record]]) -> list[Delivered]:
        """Produce records; return once all are acknowledged. Any failure raises after all settle."""
        loop = asyncio.get_running_loop()
        futures = [self._produce(loop, topic, record) for topic, record in records]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if not isinstance(r, BaseException)]

    def _produce(
        self, loop: asyncio.AbstractEventLoop, topic: str, record: Record
    ) -> asyncio.Future[Delivered]:
        producer = self._producer
        if producer is None:
            raise RuntimeError("AsyncProducer used outside its `async with` block")
        future: asyncio.Future[Delivered] = loop.create_future()

        def on_delivery(err: ClientError | None, msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, err, msg)
            if err is not None and err.fatal():
                loop.call_soon_threadsafe(self._replace_after_fatal, err)

        try:
            producer.produce(
                topic,
                value=record.value,
                key=record.key,
                headers=list(record.headers),
                on_delivery=on_delivery,
            )
        except BufferError as exc:
            # The local queue is full: the broker is not keeping up. Answer now, never block the loop.
            raise KafkaUnavailable(f"the producer queue for {topic!r} is full; retry") from exc
        except KafkaException as exc:
            raise _wrap(exc.args[0], topic) from exc
        return future

    def _replace_after_fatal(self, error: ClientError) -> None:
        """A fatal error (e.g. idempotence state lost) ends a producer: start a fresh one."""
        old = self._producer
        if old is None or self._stopping.is_set():
            return
        log_event(logger, "producer_replaced", reason=error.str(), level=logging.ERROR)
        self._producer = Producer(self._config)
        old.purge()  # fail what it still holds, so no caller waits for a report that never comes
        old.poll(0)


def _settle(future: asyncio.Future[Delivered], err: ClientError | None, msg: Message) -> None:
    if future.done():
        return
    if err is not None:
        future.set_exception(_wrap(err, msg.topic() or "?"))
    else:
        future.set_result((msg.topic() or "", msg.partition() or 0, msg.offset() or 0))


def _wrap(err: ClientError, topic: str) -> PublishError | KafkaUnavailable:
    if err.code() in UNAVAILABLE:
        return KafkaUnavailable(f"Kafka did not acknowledge the record for {topic!r}: {err.str()}")
    return PublishError(f"Kafka refused the record for {topic!r}: {err.str()}", retriable=err.retriable())

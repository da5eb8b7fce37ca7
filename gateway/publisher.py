"""Where the gateway's accepted events go: one event idempotently, several in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Protocol

from bus import naming
from bus.kafka.batches import TransactionalPublisher
from bus.kafka.producer import AsyncProducer
from bus.kafka_binding import Record
from bus.settings import KafkaSettings

__all__ = ["KafkaPublisher", "Publisher"]


class Publisher(Protocol):
    """What the gateway's routes need from Kafka."""

    async def publish(self, records: Sequence[tuple[str, Record]]) -> None:
        """Return once every record is acknowledged, all of them or none; raise a KafkaError if not."""
        ...

    async def connected(self, *, wait: float) -> bool:
        """True when the broker answers within `wait` seconds."""
        ...


class KafkaPublisher:
    """The idempotent producer for single events and a transactional publisher for batches.

    Use as `async with KafkaPublisher(settings, instance=...)`; leaving flushes what is in flight.
    """

    def __init__(self, settings: KafkaSettings, *, instance: str) -> None:
        self._settings = settings
        self._transactional_id = naming.gateway_transactional_id(settings.prefix, instance)
        self._stack = AsyncExitStack()
        self._producer: AsyncProducer | None = None
        self._batches: TransactionalPublisher | None = None

    async def __aenter__(self) -> KafkaPublisher:
        async with AsyncExitStack() as stack:
            self._producer = await stack.enter_async_context(AsyncProducer(self._settings))
            self._batches = await stack.enter_async_context(
                TransactionalPublisher(self._settings, transactional_id=self._transactional_id)
            )
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        self._producer = self._batches = None

    async def publish(self, records: Sequence[tuple[str, Record]]) -> None:
        """One record through the idempotent producer; several in one transaction (all or nothing)."""
        if self._producer is None or self._batches is None:
            raise RuntimeError("KafkaPublisher used outside its `async with` block")
        if len(records) == 1:
            await self._producer.send_all(records)
        else:
            await self._batches.send_batch(records)

    async def connected(self, *, wait: float) -> bool:
        """True when the broker answers a metadata request within `wait` seconds."""
        return self._producer is not None and await self._producer.connected(wait=wait)

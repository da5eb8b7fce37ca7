"""The replies of synchronous invocations to this gateway replica (bus.invoke).

Each replica owns a reply topic, `<prefix>.replies.<instance>` (one partition, kept 10 minutes),
named in the `busreplyto` extension of the events it invokes functions with. A thread reads it
(read_committed, from its end when the replica starts: earlier replies answered nobody) and hands
each reply to the request waiting for its `causationid`; replies nobody waits for any more (the
request gave up) are dropped. Several replicas each read only their own topic. The gateway
starts its inbox at its first synchronous invocation: replicas that never serve one create no
topic.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bus import naming
from bus.errors import InvalidEvent
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.config import build, consumer_config
from bus.kafka_binding import from_record, header
from bus.logs import log_event
from bus.settings import KafkaSettings
from bus.topology import TopicSpec

__all__ = ["ReplyInbox"]

logger = logging.getLogger("gateway.replies")

RETENTION_MS = 10 * 60 * 1000
"""How long replies are kept: they matter only while a request waits."""
_POLL = 0.1


class ReplyInbox:
    """Futures of the synchronous invocations in flight, completed from the reply topic."""

    def __init__(self, settings: KafkaSettings, *, instance: str) -> None:
        self.topic = naming.reply_topic(settings.prefix, instance)
        self._settings = settings
        self._waiting: dict[str, asyncio.Future[CloudEvent]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create the topic, start reading at its end; replies are handed over on `loop`.

        Blocking (a topic creation and an offset lookup): call it off the loop (`asyncio.to_thread`).
        """
        self._loop = loop
        ensure_topics(self._settings, [TopicSpec(self.topic, 1, {"retention.ms": str(RETENTION_MS)})])
        consumer = build(Consumer, consumer_config(self._settings, f"{self.topic}.reader"))
        _, end = consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=10, cached=False)
        consumer.assign([TopicPartition(self.topic, 0, end)])
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, name="reply-inbox", daemon=True)
        self._thread.start()
        log_event(logger, "reply_inbox_ready", topic=self.topic, offset=end)

    def close(self) -> None:
        """Stop reading; requests still waiting time out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def expect(self, event_id: str) -> asyncio.Future[CloudEvent]:
        """A future for the reply to `event_id`; register it before publishing the event."""
        future: asyncio.Future[CloudEvent] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = future
        return future

    def waiting_for(self, event_id: str) -> bool:
        """Whether a request waits for the reply to `event_id` already."""
        return event_id in self._waiting

    def forget(self, event_id: str) -> None:
        """Stop waiting for `event_id` (its event was not published)."""
        self._waiting.pop(event_id, None)

    async def wait(
        self, event_id: str, future: asyncio.Future[CloudEvent], seconds: float
    ) -> CloudEvent | None:
        """The reply, or None after `seconds` (the future is forgotten either way)."""
        try:
            async with asyncio.timeout(seconds):
                return await future
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(event_id, None)

    def _run(self) -> None:
        consumer = self._consumer
        while not self._stop.is_set():
            # consume(n, timeout) waits the whole timeout unless n records arrive: take one, then the rest.
            messages = consumer.consume(1, _POLL)
            if messages:
                messages += consumer.consume(99, 0)
            for message in messages:
                if message.error() is None:
                    self._deliver(message)

    def _deliver(self, message: Any) -> None:
        cause = header(message.headers(), "ce_causationid")
        if cause is None or self._loop is None:
            return
        try:
            reply = from_record(message.key(), message.value(), message.headers())
        except InvalidEvent as exc:
            log_event(
                logger, "reply_unreadable", offset=message.offset(), reason=str(exc), level=logging.WARNING
            )
            return
        self._loop.call_soon_threadsafe(self._complete, cause.decode(), reply)

    def _complete(self, cause: str, reply: CloudEvent) -> None:
        future = self._waiting.get(cause)
        if future is not None and not future.done():
            future.set_result(reply)

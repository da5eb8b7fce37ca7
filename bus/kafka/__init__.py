"""Kafka adapters: safe client configurations, producer, consumer loops and admin calls.

Only this package imports a Kafka client; client errors are wrapped into `bus.errors` here.
"""

from bus.kafka.admin import ensure_topics, wait_for_broker
from bus.kafka.config import admin_config, consumer_config, producer_config
from bus.kafka.producer import AsyncProducer
from bus.kafka.txloop import InMessage, Output, TransactionalLoop
from bus.topology import TopicSpec

__all__ = [
    "AsyncProducer",
    "InMessage",
    "Output",
    "TopicSpec",
    "TransactionalLoop",
    "admin_config",
    "consumer_config",
    "ensure_topics",
    "producer_config",
    "wait_for_broker",
]

"""The topics a manifest needs, with their partitions and configuration (pure)."""

from __future__ import annotations

from bus import naming
from bus.kafka.admin import TopicSpec
from bus.manifest import Function, Manifest

__all__ = ["INGRESS_PARTITIONS", "function_topics", "ingress_topics", "manifest_topics"]

INGRESS_PARTITIONS = 6
"""Partitions of `<prefix>.ingress`: the router's parallelism."""


def ingress_topics(prefix: str) -> list[TopicSpec]:
    """What the gateway, `bus publish` and the router need."""
    return [
        TopicSpec(naming.ingress_topic(prefix), INGRESS_PARTITIONS),
        TopicSpec(naming.router_dlq_topic(prefix), 1),
    ]


def function_topics(prefix: str, function: Function) -> list[TopicSpec]:
    """A function's input topic, its destinations and its DLQ."""
    specs = [
        TopicSpec(naming.function_topic(prefix, function.name), function.partitions),
        TopicSpec(naming.dlq_topic(prefix, function.name), 1),
    ]
    for topic in (function.destinations.on_success, function.destinations.on_failure):
        if topic is not None:
            specs.append(TopicSpec(topic, function.partitions))
    return specs


def manifest_topics(manifest: Manifest) -> list[TopicSpec]:
    """Every topic a manifest needs, each once."""
    specs = ingress_topics(manifest.prefix)
    for function in manifest.functions.values():
        specs.extend(function_topics(manifest.prefix, function))
    return list({spec.name: spec for spec in specs}.values())

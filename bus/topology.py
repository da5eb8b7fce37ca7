"""The topics a manifest needs, with their partitions and configuration (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bus import naming
from bus.flows import result_topics_read
from bus.manifest import Function, Manifest

__all__ = [
    "DLQ_RETENTION_MS",
    "INGRESS_PARTITIONS",
    "JOIN_PARTITIONS",
    "RETRY_RETENTION_MS",
    "TopicSpec",
    "function_topics",
    "ingress_topics",
    "join_topics",
    "manifest_topics",
    "results_followed",
    "retry_topics",
]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic bus needs: name, partitions and topic-level configuration."""

    name: str
    partitions: int = 3
    config: Mapping[str, str] = field(default_factory=dict)


INGRESS_PARTITIONS = 6
"""Partitions of `<prefix>.ingress`: the router's parallelism."""

JOIN_PARTITIONS = 6
"""Partitions of the flow join topic and its state topic (same-numbered partitions belong together)."""


RETRY_RETENTION_MS = 14 * 24 * 3600 * 1000
"""Retention of retry topics: twice the longest `Retry(after=...)` (a week, workers.verdict), so a
retry waiting its whole delay is never deleted by the broker's default of a week before it is due."""

DLQ_RETENTION_MS = 14 * 24 * 3600 * 1000
"""Retention of the DLQs (functions' and the router's): two weeks, SQS's longest, to look at
and re-drive dead letters (the broker's default is one week)."""


def ingress_topics(prefix: str) -> list[TopicSpec]:
    """What the gateway, `bus publish` and the router need."""
    return [
        TopicSpec(naming.ingress_topic(prefix), INGRESS_PARTITIONS),
        TopicSpec(naming.router_dlq_topic(prefix), 1, {"retention.ms": str(DLQ_RETENTION_MS)}),
        # One partition: its owner in the timer group is the one replica that fires schedules.
        TopicSpec(naming.timer_topic(prefix), 1, {"cleanup.policy": "compact"}),
        # Compacted: the latest record of each (type, schema) is the registration; readers read it all.
        TopicSpec(naming.schema_topic(prefix), 1, {"cleanup.policy": "compact"}),
        # Compacted, one partition: the latest applied manifest, read by every router.
        TopicSpec(naming.control_topic(prefix), 1, {"cleanup.policy": "compact"}),
    ]


def function_topics(prefix: str, function: Function) -> list[TopicSpec]:
    """A function's input topic, its retry topics, its destinations and its DLQ.

    Retry topics have the input's partition count: a retried event goes back to its own
    partition number, so the replica owning a partition owns its retries too (key order).
    """
    specs = [
        TopicSpec(naming.function_topic(prefix, function.name), function.partitions),
        *(
            TopicSpec(
                naming.retry_topic(prefix, function.name, level),
                function.partitions,
                {"retention.ms": str(RETRY_RETENTION_MS)},
            )
            for level in range(1, function.retry.levels + 1)
        ),
        TopicSpec(naming.dlq_topic(prefix, function.name), 1, {"retention.ms": str(DLQ_RETENTION_MS)}),
    ]
    for topic in (function.destinations.on_success, function.destinations.on_failure):
        if topic is not None:
            specs.append(TopicSpec(topic, function.partitions))
    return specs


def retry_topics(prefix: str, function: Function, existing: Iterable[str]) -> list[str]:
    """The retry topics a function's worker group reads, by level: its policy's, and any other
    of its retry topics among `existing` (the broker's topics).

    A policy changed to fewer levels leaves retries waiting in the topics it no longer uses; they
    are still read (and judged by the policy then in force), never left behind.
    """
    levels = set(range(1, function.retry.levels + 1))
    levels.update(
        level for topic in existing if (level := naming.retry_level(prefix, function.name, topic)) is not None
    )
    return [naming.retry_topic(prefix, function.name, level) for level in sorted(levels)]


def join_topics(prefix: str) -> list[TopicSpec]:
    """What the joiner of flow joins reads and writes: the parts, and its state (a changelog)."""
    return [
        TopicSpec(naming.flow_join_topic(prefix), JOIN_PARTITIONS),
        TopicSpec(naming.flow_join_state_topic(prefix), JOIN_PARTITIONS, {"cleanup.policy": "compact"}),
    ]


def manifest_topics(manifest: Manifest) -> list[TopicSpec]:
    """Every topic a manifest needs, each once."""
    specs = ingress_topics(manifest.prefix)
    for function in manifest.functions.values():
        specs.extend(function_topics(manifest.prefix, function))
    if any(step.joins for flow in manifest.flows for step in flow.steps.values()):
        specs.extend(join_topics(manifest.prefix))
    return list({spec.name: spec for spec in specs}.values())


def results_followed(manifest: Manifest) -> frozenset[str]:
    """The results topics the router reads besides the ingress: the success destinations of the
    functions a flow step follows."""
    destinations = (manifest.functions[f].destinations.on_success for f in result_topics_read(manifest.flows))
    return frozenset(topic for topic in destinations if topic is not None)

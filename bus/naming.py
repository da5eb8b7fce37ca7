"""Every Kafka topic, group and transactional id bus uses, named in one place."""

from __future__ import annotations

import re

from bus.errors import ConfigError

__all__ = [
    "DEFAULT_PREFIX",
    "check_name",
    "control_topic",
    "dlq_redriven_topic",
    "dlq_topic",
    "error_topic",
    "flow_join_state_topic",
    "flow_join_topic",
    "flow_joiner_group",
    "function_group",
    "function_source",
    "function_topic",
    "gateway_transactional_id",
    "ingress_topic",
    "prefix_of",
    "reader_group",
    "reply_topic",
    "result_topic",
    "retry_level",
    "retry_topic",
    "router_dlq_redriven_topic",
    "router_dlq_topic",
    "router_group",
    "scaling_topic",
    "schema_topic",
    "timer_group",
    "timer_topic",
    "transactional_id",
]

DEFAULT_PREFIX = "bus"

# Kafka topic names allow [a-zA-Z0-9._-]; bus names are one segment of such a name, so no dots.
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,100}\Z")  # \Z: `$` would accept a trailing newline


def check_name(kind: str, name: str) -> str:
    """Return `name` if it can be a prefix or function name, else raise ValueError naming the fix."""
    if not _NAME.match(name):
        raise ConfigError(f"{kind} {name!r} must be 1-100 characters of letters, digits, '_' or '-'")
    return name


def ingress_topic(prefix: str) -> str:
    """Topic every gateway and `bus publish` writes to; the router reads it."""
    return f"{prefix}.ingress"


def function_topic(prefix: str, function: str) -> str:
    """Topic the router writes a function's events to; its worker group reads it."""
    return f"{prefix}.fn.{function}"


def reply_topic(prefix: str, instance: str) -> str:
    """Topic a gateway replica reads the outcomes of its synchronous invocations from (bus.invoke)."""
    return f"{prefix}.replies.{instance}"


def result_topic(prefix: str, function: str) -> str:
    """Default success destination of a function."""
    return f"{prefix}.fn.{function}.results"


def error_topic(prefix: str, function: str) -> str:
    """Default failure destination of a function."""
    return f"{prefix}.fn.{function}.errors"


def dlq_topic(prefix: str, function: str) -> str:
    """Dead-letter topic holding the original events that failed every attempt."""
    return f"{prefix}.fn.{function}.dlq"


def retry_topic(prefix: str, function: str, level: int) -> str:
    """Delayed-retry topic of a function's backoff step `level` (1-based): `<prefix>.fn.<name>.retry.<n>`."""
    return f"{function_topic(prefix, function)}.retry.{level}"


def retry_level(prefix: str, function: str, topic: str) -> int | None:
    """The backoff step `topic` is the retry topic of (`retry_topic` read back); None for other topics."""
    head = f"{function_topic(prefix, function)}.retry."
    level = topic[len(head) :] if topic.startswith(head) else ""
    if not level.isascii() or not level.isdigit() or level.startswith("0"):
        return None
    return int(level)


def scaling_topic(prefix: str) -> str:
    """Log of the supervisors' scaling decisions (one `bus.scaling.decision` event each)."""
    return f"{prefix}.scaling"


def router_group(prefix: str) -> str:
    """Consumer group shared by all router instances of a prefix."""
    return f"{prefix}.router"


def function_group(prefix: str, function: str) -> str:
    """Consumer group of a function's worker group (SPEC §7)."""
    return f"{prefix}.fn.{function}"


def reader_group(instance: str) -> str:
    """Group id of a group-less reader (`bus tail`, checkers): it never commits or joins."""
    return f"bus-reader-{instance}"


def transactional_id(group: str, instance: str) -> str:
    """Transactional id of one process of a consumer group (fencing is by group generation)."""
    return f"{group}.tx.{instance}"


def router_dlq_topic(prefix: str) -> str:
    """Where the router puts records it cannot route (not a CloudEvent, unknown target)."""
    return f"{prefix}.router.dlq"


def router_dlq_redriven_topic(prefix: str) -> str:
    """Compacted topic of the router dead letters `bus dlq redrive --router` re-published, keyed by offset."""
    return f"{prefix}.router.dlq.redriven"


def gateway_transactional_id(prefix: str, instance: str) -> str:
    """Transactional id of one gateway replica's batch publisher; a restarted replica fences its past."""
    return f"{prefix}.gateway.tx.{instance}"


def timer_topic(prefix: str) -> str:
    """Compacted topic of schedule checkpoints (the last tick each schedule fired)."""
    return f"{prefix}.timers"


def timer_group(prefix: str) -> str:
    """Group of every gateway's timer consumer: the member assigned the checkpoint partition leads."""
    return f"{prefix}.timers"


def schema_topic(prefix: str) -> str:
    """Compacted topic of the writer schemas of typed events, by event type and fingerprint."""
    return f"{prefix}.schemas"


def control_topic(prefix: str) -> str:
    """Compacted topic of the applied manifest (`bus apply`); every router follows it."""
    return f"{prefix}.control"


def dlq_redriven_topic(prefix: str, function: str) -> str:
    """Compacted topic of the dead letters `bus dlq redrive` re-published, keyed by DLQ offset."""
    return f"{prefix}.fn.{function}.dlq.redriven"


def flow_join_topic(prefix: str) -> str:
    """Topic the router sends the parts of flow joins to, keyed by run; the joiner reads it."""
    return f"{prefix}.flows.joins"


def flow_join_state_topic(prefix: str) -> str:
    """Compacted topic of the joins waiting for parts, by partition of the join topic (its changelog)."""
    return f"{prefix}.flows.joins.state"


def flow_joiner_group(prefix: str) -> str:
    """Consumer group of the joiners (one per router process) sharing the join topic's partitions."""
    return f"{prefix}.flows.joiner"


def function_source(prefix: str, function: str) -> str:
    """`source` of the events a function's worker group emits (its results and errors, also the
    errors a flow join ends a run with on the join function's behalf)."""
    return f"bus://{prefix}/functions/{function}"


_FIXED_TOPICS = frozenset(
    make("p")[len("p.") :]
    for make in (
        ingress_topic,
        scaling_topic,
        router_dlq_topic,
        router_dlq_redriven_topic,
        timer_topic,
        schema_topic,
        control_topic,
        flow_join_topic,
        flow_join_state_topic,
    )
)
_NAMED_TOPIC_HEADS = (function_topic("p", "")[len("p.") :], reply_topic("p", "")[len("p.") :])


def prefix_of(topic: str) -> str | None:
    """The prefix of a topic bus names (`<prefix>.ingress`, `<prefix>.fn.<name>...`); None for others."""
    prefix, dot, rest = topic.partition(".")
    if not dot or not _NAME.match(prefix):
        return None
    if rest in _FIXED_TOPICS or any(rest.startswith(h) and len(rest) > len(h) for h in _NAMED_TOPIC_HEADS):
        return prefix
    return None

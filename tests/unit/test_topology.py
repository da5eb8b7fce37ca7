"""The topics bus creates and their settings (bus.topology)."""

from __future__ import annotations

from bus import naming
from bus.manifest import parse
from bus.topology import DLQ_RETENTION_MS, RETRY_RETENTION_MS, function_topics, ingress_topics
from workers.verdict import MAX_RETRY_AFTER


def test_a_retry_outlives_its_longest_delay_and_dead_letters_keep_two_weeks() -> None:
    manifest = parse(
        {
            "prefix": "p",
            "functions": {"f": {"handler": "m:h", "retry": {"attempts": 3, "backoff": ["1s", "1m"]}}},
        }
    )
    specs = {spec.name: spec for spec in function_topics("p", manifest.functions["f"])}
    assert RETRY_RETENTION_MS >= 2 * MAX_RETRY_AFTER * 1000
    for level in (1, 2):
        assert specs[naming.retry_topic("p", "f", level)].config["retention.ms"] == str(RETRY_RETENTION_MS)
    assert specs[naming.dlq_topic("p", "f")].config["retention.ms"] == str(DLQ_RETENTION_MS)
    router_dlq = {spec.name: spec for spec in ingress_topics("p")}[naming.router_dlq_topic("p")]
    assert router_dlq.config["retention.ms"] == str(DLQ_RETENTION_MS) == str(14 * 24 * 3600 * 1000)

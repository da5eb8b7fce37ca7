"""The router bench's workload: what its figures claim about the manifests and events they route."""

from __future__ import annotations

import pytest

from bench import routing_workload
from bus.events import to_json_dict
from bus.kafka_binding import from_record, record_size
from bus.routing import matching_rules, route


@pytest.mark.parametrize("rules", [10, 100, 1000])
def test_manifest_has_the_rule_count_and_every_pattern_feature(rules: int) -> None:
    """A manifest of n rules validates, has n rules, and uses each selector kind the bench names."""
    manifest = routing_workload.manifest(rules, "bench-test")
    assert len(manifest.rules) == rules
    text = repr(routing_workload.manifest_document(rules))
    for feature in ("'prefix'", "'suffix'", "'numeric'", "'$or'", "'anything-but'", "'tags'"):
        assert feature in text


@pytest.mark.parametrize(("rules", "count"), [(10, 300), (100, 300), (1000, 100)])
def test_events_match_about_two_rules_whatever_the_rule_count(rules: int, count: int) -> None:
    """Events match 1-2 rules on average and fan out to 1-2 functions, at every rule count."""
    manifest = routing_workload.manifest(rules, "bench-test")
    records = routing_workload.records(rules, count)
    events = [to_json_dict(from_record(r.key, r.value, r.headers)) for r in records]
    matches = sum(len(matching_rules(event, manifest.rules)) for event in events) / len(events)
    fanout = sum(len(route(event, manifest.rules)) for event in events) / len(events)
    assert 1.0 <= matches <= 2.0
    assert 1.0 <= fanout <= 2.0


def test_records_are_about_500_bytes_with_unique_ids_past_the_pool() -> None:
    """Records are ~500-byte binary-mode CloudEvents; the stream repeats its pool with fresh ids."""
    records = routing_workload.records(10, routing_workload.POOL + 10)
    sizes = [record_size(r) for r in records]
    assert 400 <= sum(sizes) / len(sizes) <= 600
    ids = {dict(r.headers)["ce_id"] for r in records}
    assert len(ids) == len(records)
    assert records[routing_workload.POOL].value == records[0].value

"""The benches' workloads: what their figures claim about the manifests and events they run on."""

from __future__ import annotations

import pytest
import yaml

from bench import router as bench_router
from bench import routing_workload, worker
from bus import naming
from bus.events import to_json_dict
from bus.kafka_binding import from_record, record_size
from bus.manifest import parse
from bus.router import Router
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


def test_worker_manifest_runs_its_one_function_as_specified() -> None:
    """The worker bench's manifest validates and runs the bench's handler with the spec's settings."""
    spec = worker.Spec("sleep20-key", "sleep20", "key", 64, partitions=2)
    function = parse(yaml.safe_load(worker.manifest_text("bench-test", spec))).functions["sleep20-key"]
    assert function.handler == "benchworker:sleep20"
    assert (function.ordering, function.concurrency, function.partitions) == ("key", 64, 2)


def test_worker_records_are_keyed_round_robin_with_unique_ids() -> None:
    """Worker input records carry their partition key as the Kafka key, cycling over `keys` keys."""
    records = worker.records(10, keys=4, label="t")
    assert [r.key for r in records[:5]] == [b"k0", b"k1", b"k2", b"k3", b"k0"]
    assert len({dict(r.headers)["ce_id"] for r in records}) == 10
    event = from_record(records[7].key, records[7].value, records[7].headers)
    assert event.data["seq"] == 7


def test_steady_rate_starts_the_clock_at_the_first_read_without_counting_it() -> None:
    """The first read's results waited for the replica's start: they start the clock, uncounted."""
    rate = worker.steady_rate([(10.0, 300), (10.5, 500), (11.0, 200)], 1000)
    assert (rate.events, rate.seconds, rate.target, rate.complete) == (700, 1.0, 700, True)
    assert worker.steady_rate([(3.0, 10)], 50).rate == 0.0
    assert not worker.steady_rate([], 5).complete


@pytest.mark.parametrize("rules", [10, 1000])
def test_router_bench_sample_is_routed_as_ingress_records(rules: int) -> None:
    """The bench times the Router on records of its ingress topic: they fan out, none to the DLQ."""
    manifest = routing_workload.manifest(rules, "bench-test")
    records = routing_workload.records(rules, 200)
    sample, outputs = bench_router.transform_time(
        Router(manifest), records, topic=naming.ingress_topic(manifest.prefix), seconds=10.0
    )
    assert sample.events == len(records)
    assert 1.0 <= outputs / len(records) <= 2.0

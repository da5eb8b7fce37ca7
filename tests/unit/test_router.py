"""The router's transform: matched rules recorded, input transformers, missing targets, live updates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from bus import naming
from bus.errors import BusError
from bus.events import CloudEvent
from bus.kafka_binding import from_record, header, to_record
from bus.manifest import Manifest, parse
from bus.metrics import Registry
from bus.router import Router, RouterMetrics


@dataclass
class Message:
    """A consumed ingress record as the router sees it."""

    value_: bytes | None
    headers_: list[tuple[str, bytes]] = field(default_factory=list)
    key_: bytes | None = b"k"

    def topic(self) -> str:
        return "p.ingress"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 3

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> list[tuple[str, bytes]]:
        return self.headers_

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def message(event: CloudEvent, *, structured: bool = False) -> Message:
    record = to_record(event, structured=structured)
    return Message(record.value, list(record.headers), record.key)


EVENT = CloudEvent.create(
    id="e1", source="shop/eu", type="order.placed", data={"order": "o-1", "amount": 120, "items": ["a", "b"]}
)


def manifest(rules: list[dict[str, Any]]) -> Manifest:
    return parse(
        {
            "prefix": "p",
            "functions": {name: {"handler": "h:f"} for name in ("a", "b", "c")},
            "rules": rules,
        }
    )


RULES = [
    {"name": "orders", "pattern": {"type": ["order.placed"]}, "targets": ["a"]},
    {"name": "eu", "pattern": {"source": ["shop/eu"]}, "targets": ["a", "b"]},
    {"name": "never", "pattern": {"type": ["none"]}, "targets": ["c"]},
]


def test_each_target_gets_the_event_once_naming_every_rule_that_chose_it() -> None:
    outputs = Router(manifest(RULES))([message(EVENT)])
    routed = {o.topic: header(o.record.headers, "ce_matchedrules") for o in outputs}
    assert routed == {"p.fn.a": b"orders,eu", "p.fn.b": b"eu"}
    event = from_record(outputs[0].record.key, outputs[0].record.value, outputs[0].record.headers)
    assert event.extensions["matchedrules"] == "orders,eu"
    assert event.data == EVENT.data


def test_a_structured_record_carries_matchedrules_in_its_body() -> None:
    (first, _) = Router(manifest(RULES))([message(EVENT, structured=True)])
    assert orjson.loads(first.record.value or b"")["matchedrules"] == "orders,eu"
    event = from_record(first.record.key, first.record.value, first.record.headers)
    assert event.extensions["matchedrules"] == "orders,eu"


def test_an_input_transformer_reshapes_the_data_for_its_target_only() -> None:
    rules = [
        {
            "name": "orders",
            "pattern": {"type": ["order.placed"]},
            "targets": [
                "b",
                {
                    "function": "a",
                    "input_transformer": {
                        "input_paths": {"order": "$.data.order", "first": "$.data.items[0]"},
                        "input_template": '{"id": <order>, "first": "item <first>", "rule": <bus.rule.name>}',
                    },
                },
            ],
        }
    ]
    outputs = {o.topic: o.record for o in Router(manifest(rules))([message(EVENT)])}
    shaped = from_record(outputs["p.fn.a"].key, outputs["p.fn.a"].value, outputs["p.fn.a"].headers)
    assert shaped.data == {"id": "o-1", "first": "item a", "rule": "orders"}
    assert (shaped.id, shaped.type, shaped.datacontenttype) == ("e1", "order.placed", "application/json")
    assert shaped.extensions["matchedrules"] == "orders"
    assert outputs["p.fn.a"].key == message(EVENT).key()
    untouched = from_record(outputs["p.fn.b"].key, outputs["p.fn.b"].value, outputs["p.fn.b"].headers)
    assert untouched.data == EVENT.data


def test_a_missing_target_topic_sends_that_target_to_the_dlq_and_routes_the_others() -> None:
    router = Router(manifest(RULES))
    router.set_missing_topics(frozenset({"p.fn.b"}))
    outputs = router([message(EVENT)])
    assert [o.topic for o in outputs] == ["p.fn.a", naming.router_dlq_topic("p")]
    dead = outputs[1].record
    assert header(dead.headers, "bus_error_type") == b"UnknownTarget"
    assert b"'p.fn.b' does not exist" in (header(dead.headers, "bus_error_message") or b"")


def test_an_update_applies_to_the_next_batch_and_is_counted() -> None:
    registry = Registry()
    router = Router(manifest(RULES), metrics=RouterMetrics(registry))
    assert {o.topic for o in router([message(EVENT)])} == {"p.fn.a", "p.fn.b"}
    router.update(manifest([{"name": "all", "pattern": {}, "targets": ["c"]}]), version=2)
    assert [o.topic for o in router([message(EVENT)])] == ["p.fn.c"]
    text = registry.render()
    assert "bus_router_manifest_version 2" in text
    assert 'bus_router_rule_matches_total{rule="eu"} 1' in text
    assert 'bus_router_routed_total{function="c"} 1' in text
    assert "bus_router_events_total 2" in text


def test_an_update_for_another_prefix_is_refused_and_the_rules_stay() -> None:
    router = Router(manifest(RULES))
    other = parse({"prefix": "q", "functions": {"a": {"handler": "h:f"}}})
    with pytest.raises(BusError, match="prefix 'q'"):
        router.update(other, version=5)
    assert router.table.version == 0
    assert len(router.table.rules) == 3

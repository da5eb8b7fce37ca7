"""The router's transform: matched rules recorded, input transformers, missing targets, live updates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import naming
from bus import router as router_module
from bus.control import Applied, Refused
from bus.errors import BusError, ConfigError
from bus.events import CloudEvent, to_json_dict
from bus.kafka.txloop import Output
from bus.kafka_binding import from_record, header, record_size, to_record
from bus.manifest import Manifest, parse
from bus.metrics import Registry
from bus.router import Router, RouterMetrics, _new_from, _starting_rules, _Tally
from bus.routing import route
from bus.settings import KafkaSettings
from tests.support import JOIN_FLOW


@dataclass
class Message:
    """A consumed ingress record as the router sees it."""

    value_: bytes | None
    headers_: list[tuple[str, bytes]] = field(default_factory=list)
    key_: bytes | None = b"k"
    topic_: str = "p.ingress"

    def topic(self) -> str:
        return self.topic_

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
    assert header(dead.headers, "bus_target") == b"b", "a has it: a redrive must go to b only"


def test_an_update_applies_to_the_next_batch_and_is_counted_once_committed() -> None:
    registry = Registry()
    router = Router(manifest(RULES), metrics=RouterMetrics(registry))
    assert {o.topic for o in router([message(EVENT)])} == {"p.fn.a", "p.fn.b"}
    router.committed()
    router([message(EVENT)])  # its transaction aborts: the loop calls `dropped`, the batch is routed again
    router.dropped()
    router.update(manifest([{"name": "all", "pattern": {}, "targets": ["c"]}]), version=2)
    assert [o.topic for o in router([message(EVENT)])] == ["p.fn.c"]
    router.committed()
    text = registry.render()
    assert "bus_router_manifest_version 2" in text
    assert 'bus_router_rule_matches_total{rule="eu"} 1' in text
    assert 'bus_router_routed_total{function="c"} 1' in text
    assert "bus_router_events_total 2" in text


def test_a_step_result_sent_to_a_join_is_counted_by_join_not_as_a_function() -> None:
    registry = Registry()
    flows = parse(yaml.safe_load(JOIN_FLOW), prefix="p")
    router = Router(flows, metrics=RouterMetrics(registry))
    result = CloudEvent.create(
        id="res-1",
        source="bus://p/functions/a",
        type="bus.function.result",
        extensions={"busflow": "ml", "busflowstep": "a", "busflowrun": "run-1"},
        data={"ok": True},
    )
    record = to_record(result)
    results_topic = flows.functions["a"].destinations.on_success
    assert results_topic is not None
    outputs = router([Message(record.value, list(record.headers), record.key, topic_=results_topic)])
    assert [o.topic for o in outputs] == [naming.flow_join_topic("p")]
    router.committed()
    text = registry.render()
    assert 'bus_router_join_parts_total{join="ml.model"} 1' in text
    assert not [line for line in text.splitlines() if line.startswith("bus_router_routed_total{")]


def test_batches_routed_ahead_of_their_commit_are_counted_in_order() -> None:
    """A pipelined loop routes a batch before the one ahead committed: each commit counts its own batch."""
    registry = Registry()
    router = Router(manifest(RULES), metrics=RouterMetrics(registry))
    router([message(EVENT)])
    router([message(EVENT), message(EVENT)])
    router.committed()
    assert "bus_router_events_total 1" in registry.render()
    router.committed()
    router.committed()  # nothing left to count
    assert "bus_router_events_total 3" in registry.render()


def test_an_update_for_another_prefix_is_refused_and_the_rules_stay() -> None:
    router = Router(manifest(RULES))
    other = parse({"prefix": "q", "functions": {"a": {"handler": "h:f"}}})
    with pytest.raises(BusError, match="prefix 'q'"):
        router.update(other, version=5)
    assert router.table.version == 0
    assert len(router.table.rules) == 3


EDGE_RULES = [
    {"name": "no-data", "pattern": {"data": [{"exists": False}]}, "targets": ["a"]},
    {"name": "null-data", "pattern": {"data": [None]}, "targets": ["b"]},
    {"name": "bytes", "pattern": {"data_base64": [{"exists": True}]}, "targets": ["c"]},
    {"name": "big-k", "pattern": {"data": {"k": [{"numeric": [">", 1]}]}}, "targets": ["a"]},
    {"name": "t1", "pattern": {"type": ["t1"]}, "targets": ["b"]},
    {"name": "k-not-1", "pattern": {"data": {"k": [{"anything-but": [1]}]}}, "targets": ["c"]},
]

DATA = st.one_of(
    st.just(None),
    st.fixed_dictionaries({"k": st.one_of(st.integers(-3, 3), st.text(max_size=3), st.none())}),
    st.binary(min_size=1, max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["t1", "t2"]), data=DATA, structured=st.booleans())
def test_the_router_sends_each_event_where_the_rules_say(kind: str, data: Any, structured: bool) -> None:
    """Router (header fast path, lazy data) == route() over the fully decoded event, for edge data."""
    content_type = "image/png" if isinstance(data, bytes) else None
    event = CloudEvent.create(id="e", source="s", type=kind, datacontenttype=content_type, data=data)
    rules = manifest(EDGE_RULES)
    record = to_record(event, structured=structured)
    decoded = from_record(record.key, record.value, record.headers)
    expected = route(to_json_dict(decoded), rules.rules)
    outputs = Router(rules)([Message(record.value, list(record.headers), record.key)])
    assert [o.topic.removeprefix("p.fn.") for o in outputs] == expected


def test_a_header_without_a_value_reads_as_empty_text_and_routes() -> None:
    record = to_record(EVENT)
    headers = [*record.headers, ("ce_note", None)]
    (first, _) = Router(manifest(RULES))([Message(record.value, headers, record.key)])  # type: ignore[arg-type]
    assert first.topic == "p.fn.a"


def test_a_transformed_record_over_the_limit_goes_to_the_dlq_and_the_others_flow() -> None:
    rules = [
        {
            "name": "copy",
            "pattern": {},
            "targets": [
                "a",
                {
                    "function": "b",
                    "input_transformer": {
                        "input_paths": {"d": "$.data"},
                        "input_template": '{"x": <d>, "y": <d>, "z": <d>}',
                    },
                },
            ],
        }
    ]
    big = CloudEvent.create(id="e", source="s", type="t", data={"blob": "x" * 400})
    outputs = Router(manifest(rules), max_record_bytes=1_000)([message(big)])
    assert [o.topic for o in outputs] == ["p.fn.a", naming.router_dlq_topic("p")]
    assert header(outputs[1].record.headers, "bus_error_type") == b"TooLarge"
    assert header(outputs[1].record.headers, "bus_target") == b"b"


def test_a_record_that_breaks_the_router_goes_to_the_dlq_and_the_batch_goes_on() -> None:
    router = Router(manifest(RULES))
    broken = Message(b"{}", [("ce_specversion", b"1.0")] * 3 + [("content-type", b"\xff")])
    outputs = router([broken, message(EVENT)])
    assert outputs[0].topic == naming.router_dlq_topic("p")
    assert header(outputs[0].record.headers, "bus_target") is None, "nothing was delivered: no target"
    assert [o.topic for o in outputs[1:]] == ["p.fn.a", "p.fn.b"]


def test_a_transformed_event_keeps_headers_that_are_not_part_of_the_event() -> None:
    rules = [
        {
            "name": "shape",
            "pattern": {},
            "targets": [{"function": "a", "input": {"fixed": True}}],
        }
    ]
    record = to_record(EVENT)
    traced = Message(record.value, [*record.headers, ("traceparent", b"00-abc-def-01")], record.key)
    (out,) = Router(manifest(rules))([traced])
    assert header(out.record.headers, "traceparent") == b"00-abc-def-01"
    assert from_record(out.record.key, out.record.value, out.record.headers).data == {"fixed": True}


def test_a_router_starts_from_its_file_when_the_applied_manifest_cannot_be_used() -> None:
    broken = Applied(
        version=4, applied_at="t", digest="d", document={"rules": "not a list"}, base_dir=".", rules=()
    )
    fallback = manifest(RULES)
    assert _starting_rules(broken, fallback, "p") == (fallback, 0, "")
    with pytest.raises(ConfigError, match="applied manifest version 4 of prefix 'p' cannot be used"):
        _starting_rules(broken, None, "p")
    with pytest.raises(ConfigError, match=r"run `bus apply -f bus\.yaml` or pass -f"):
        _starting_rules(None, None, "p")


def test_a_router_starts_from_its_file_when_the_latest_record_cannot_be_read() -> None:
    """An unreadable latest record takes the refusal path: the `-f` file, else a one-line error."""
    newer = Refused(offset=3, reason="format 2 is not 1; upgrade bus", version=2)
    fallback = manifest(RULES)
    assert _starting_rules(newer, fallback, "p") == (fallback, 0, "")
    with pytest.raises(ConfigError) as caught:
        _starting_rules(newer, None, "p")
    assert str(caught.value) == (
        "the latest manifest applied for prefix 'p' (version 2, offset 3) cannot be read "
        "(format 2 is not 1; upgrade bus); apply a valid one with `bus apply` or pass -f"
    )


def test_an_input_at_the_limit_goes_to_the_dlq_once_matchedrules_would_push_it_over() -> None:
    record = to_record(EVENT)
    limit = record_size(record) + 5  # the matchedrules header adds more than 5 bytes
    outputs = Router(manifest(RULES), max_record_bytes=limit)([message(EVENT)])
    assert {o.topic for o in outputs} == {naming.router_dlq_topic("p")}
    dead = outputs[0].record
    assert header(dead.headers, "bus_error_type") == b"TooLarge"
    assert dead.value is None, "the dead letter itself would be over the limit: its value is dropped"
    assert b"bytes dropped" in (header(dead.headers, "bus_error_message") or b"")
    assert header(dead.headers, "bus_value_dropped") == str(len(record.value or b"")).encode()
    assert sorted(header(o.record.headers, "bus_target") or b"" for o in outputs) == [b"a", b"b"]


FAST_RULES = [
    {"name": "t1", "pattern": {"type": ["t1"]}, "targets": ["a"]},
    {
        "name": "t1-or-n",
        "pattern": {"$or": [{"type": ["t1"]}, {"data": {"n": [{"numeric": [">", 1]}]}}]},
        "targets": ["b"],
    },
    {
        "name": "n-small",
        "pattern": {"type": ["t1", "t2"], "data": {"n": [{"numeric": ["<", 2]}]}},
        "targets": ["a", "c"],
    },
    {
        "name": "no-data",
        "pattern": {"source": [{"prefix": "s"}], "data": [{"exists": False}]},
        "targets": ["c"],
    },
    {"name": "not-x", "pattern": {"data": {"k": [{"anything-but": ["x"]}]}}, "targets": ["b"]},
    {"name": "tagged", "pattern": {"type": ["t2"]}, "targets": ["a"], "tags": {"any": ["vip"]}},
    {"name": "by-content", "pattern": {"datacontenttype": ["text/plain"]}, "targets": ["c"]},
    {
        "name": "shaped",
        "pattern": {"data": {"k": ["shape"]}},
        "targets": [{"function": "b", "input": {"fixed": True}}],
    },
]

FAST_HEADERS = st.lists(
    st.sampled_from(
        [
            ("ce_specversion", b"1.0"),
            ("ce_specversion", b"0.3"),
            ("ce_id", b"e1"),
            ("ce_id", b""),
            ("ce_source", b"s1"),
            ("ce_source", b"q"),
            ("ce_type", b"t1"),
            ("ce_type", b"t2"),
            ("ce_tags", b"vip,eu"),
            ("ce_tags", b"\xff"),
            ("ce_matchedrules", b"earlier"),
            ("ce_data", b"1"),
            ("ce_datacontenttype", b"text/plain"),
            ("content-type", b"application/json"),
            ("content-type", b"text/plain"),
            ("content-type", b"application/cloudevents+json"),
            ("traceparent", b"\x00\xff"),
            ("ce_note", None),
        ]
    ),
    max_size=9,
)
FAST_VALUES = st.sampled_from(
    [
        None,
        b"",
        b"null",
        b"{",
        b'{"n": 0}',
        b'{"n": 3, "k": "x"}',
        b'{"k": "shape"}',
        b"[1, {}]",
        b"[" * 70 + b"]" * 70,
    ]
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    records=st.lists(st.tuples(FAST_HEADERS, FAST_VALUES), min_size=1, max_size=6),
    rules=st.sampled_from([FAST_RULES, [FAST_RULES[0], *FAST_RULES[5:7]]]),
    base=st.booleans(),
    missing=st.booleans(),
    limit=st.sampled_from([200, 1_000_000]),
)
def test_remembered_routes_give_what_routing_each_record_in_full_gives(
    records: list[tuple[list[tuple[str, bytes]], bytes | None]],
    rules: list[dict[str, Any]],
    base: bool,
    missing: bool,
    limit: int,
) -> None:
    """The header-keyed fast path and the full routing of each record make the same outputs."""
    if base:  # most records of a stream are valid binary-mode events: make some
        records = [
            ([("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t1"), *h], v)
            for h, v in records
        ]
    router = Router(manifest(rules), max_record_bytes=limit)
    if missing:
        router.set_missing_topics(frozenset({"p.fn.c"}))
    messages = [Message(value, headers) for headers, value in records]
    for _ in range(2):  # the second time, every key is known
        expected: list[Output] = []
        for one in messages:
            router._route(
                one,
                list(one.headers()),
                table=router.table,
                missing=frozenset({"p.fn.c"}) if missing else frozenset(),
                outputs=expected,
                tally=_Tally(),
            )
        assert router(messages) == expected


@dataclass
class ResultMessage(Message):
    """A record of a function's results topic (the router reads those a flow step follows)."""

    def topic(self) -> str:
        return "p.fn.a.results"


def test_results_are_routed_by_flow_steps_only_and_ingress_never_by_them() -> None:
    """A catch-all rule and a flow start see ingress events only; a function's result reaches
    only the step that follows it (no loop back to the start, no ordinary rule)."""
    flows = parse(
        {
            "prefix": "p",
            "functions": {name: {"handler": "h:f"} for name in ("a", "b", "c")},
            "rules": [{"name": "audit", "pattern": {"source": [{"prefix": ""}]}, "targets": ["c"]}],
            "flows": {
                "f": {
                    "start": {"data": {"url": [{"exists": True}]}},
                    "steps": {"one": {"function": "a"}, "two": {"function": "b", "after": "one"}},
                }
            },
        }
    )
    router = Router(flows)
    start = CloudEvent.create(id="s1", source="x", type="go", data={"url": "u"})
    assert sorted(out.topic for out in router([message(start)])) == ["p.fn.a", "p.fn.c"]
    result = CloudEvent.create(
        id="r1",
        source="bus://p/functions/a",
        type="bus.function.result",
        extensions={"busflow": "f", "busflowstep": "one", "busflowrun": "s1"},
        data={"url": "still here"},
    )
    record = to_record(result)
    outputs = router([ResultMessage(record.value, list(record.headers), record.key)])
    assert [out.topic for out in outputs] == ["p.fn.b"]
    sent = from_record(outputs[0].record.key, outputs[0].record.value, outputs[0].record.headers)
    assert (sent.extensions["busflowstep"], sent.extensions["busflowrun"]) == ("two", "s1")


def test_a_running_router_starts_new_results_topics_where_the_apply_recorded_else_at_their_end_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The recorded starts win over the router's own reading, which serves only topics a record
    from an older bus has none for; every recorded start is passed, for topics followed again."""
    read: list[list[str]] = []

    def ends(_settings: KafkaSettings, topics: set[str]) -> dict[tuple[str, int], int]:
        read.append(sorted(topics))
        return {(topic, 0): 99 for topic in topics}

    monkeypatch.setattr(router_module, "_ends", ends)
    applied = Applied(
        version=2,
        applied_at="t",
        digest="d",
        document={},
        base_dir=".",
        rules=(),
        starts={"p.fn.a.results": {0: 5, 1: 6}, "p.fn.b.results": {0: 1}},
    )
    started = _new_from(KafkaSettings(), applied, {"p.fn.a.results", "p.fn.c.results"})
    assert started == {
        ("p.fn.a.results", 0): 5,
        ("p.fn.a.results", 1): 6,
        ("p.fn.b.results", 0): 1,
        ("p.fn.c.results", 0): 99,
    }
    assert read == [["p.fn.c.results"]]

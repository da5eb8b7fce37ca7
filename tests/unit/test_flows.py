"""Flows compiled to rules (bus.flows) and the extensions the router sets for their steps."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bus.errors import ManifestError
from bus.events import CloudEvent, to_json_dict
from bus.fanout import by_target, deliveries, routed_record
from bus.flows import result_topics_read
from bus.kafka_binding import from_record, to_record
from bus.manifest import Manifest, parse
from bus.routing import matching_rules

FUNCTIONS = (
    "functions: {"
    + ", ".join(f"{n}: {{handler: 'm:f'}}" for n in ("crawl", "parse", "store", "stats"))
    + "}\n"
)
ETL = """
flows:
  etl:
    start: {type: [page.fetched]}
    steps:
      parse: {function: parse}
      store: {function: store, after: parse, when: {data: {ok: [true]}}}
      stats: {function: stats, after: [parse]}
"""


def manifest(text: str) -> Manifest:
    return parse(yaml.safe_load(FUNCTIONS + text))


def event(**attrs: Any) -> dict[str, Any]:
    """An event in the JSON format (extensions as members)."""
    return {"specversion": "1.0", "id": "e-1", "source": "s", **attrs}


def flow(steps: str, start: str = "{type: [a]}") -> str:
    return f"flows: {{etl: {{start: {start}, steps: {{{steps}}}}}}}"


def test_each_step_is_a_rule_after_the_user_rules() -> None:
    parsed = manifest("rules: [{name: mine, pattern: {type: [x]}, targets: [crawl]}]\n" + ETL)
    assert [r.name for r in parsed.rules] == ["mine", "flow.etl.parse", "flow.etl.store", "flow.etl.stats"]
    assert [r.targets for r in parsed.rules[1:]] == [("parse",), ("store",), ("stats",)]
    assert result_topics_read(parsed.flows) == {"parse"}


def test_the_start_step_matches_the_start_pattern() -> None:
    rules = manifest(ETL).rules
    assert [r.name for r in matching_rules(event(type="page.fetched"), rules)] == ["flow.etl.parse"]
    assert matching_rules(event(type="other"), rules) == []


def test_later_steps_match_the_previous_steps_result_and_their_condition() -> None:
    rules = manifest(ETL).rules
    result = {"type": "bus.function.result", "busflow": "etl", "busflowstep": "parse", "busflowrun": "r"}
    assert [r.name for r in matching_rules(event(**result, data={"ok": True}), rules)] == [
        "flow.etl.store",
        "flow.etl.stats",
    ]
    assert [r.name for r in matching_rules(event(**result, data={"ok": False}), rules)] == ["flow.etl.stats"]
    other_step = {**result, "busflowstep": "store"}
    assert matching_rules(event(**other_step, data={"ok": True}), rules) == []
    other_flow = {**result, "busflow": "other"}
    assert matching_rules(event(**other_flow, data={"ok": True}), rules) == []


def routed(rules: Any, ce: CloudEvent, target: str) -> CloudEvent:
    record = to_record(ce)
    by = by_target(matching_rules(to_json_dict(ce), rules))[target]
    out = routed_record(record, to_json_dict(ce), target, by, binary=True)
    return from_record(out.key, out.value, out.headers)


def test_a_start_step_gets_the_flow_its_step_and_a_run_named_after_the_start_event() -> None:
    rules = manifest(ETL).rules
    start = CloudEvent.create(id="page-9", source="s", type="page.fetched", data={"url": "u"})
    sent = routed(rules, start, "parse")
    assert {k: sent.extensions[k] for k in ("busflow", "busflowstep", "busflowrun")} == {
        "busflow": "etl",
        "busflowstep": "parse",
        "busflowrun": "page-9",
    }
    assert sent.data == {"url": "u"}


def test_a_later_step_keeps_the_run_and_replaces_the_step() -> None:
    rules = manifest(ETL).rules
    result = CloudEvent.create(
        id="res-1",
        source="bus://p/functions/parse",
        type="bus.function.result",
        extensions={
            "busflow": "etl",
            "busflowstep": "parse",
            "busflowrun": "page-9",
            "causationid": "page-9",
        },
        data={"ok": True},
    )
    sent = routed(rules, result, "store")
    assert (sent.extensions["busflowstep"], sent.extensions["busflowrun"]) == ("store", "page-9")
    assert sent.extensions["matchedrules"] == "flow.etl.store"


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        (flow("p: {function: nope}"), "flows.etl.steps.p.function", "unknown function"),
        (flow("p: {function: parse, after: q}"), "flows.etl.steps.p.after", "no step 'q'"),
        (
            flow("p: {function: parse}, q: {function: store, after: [p, p]}"),
            "flows.etl.steps.q.after",
            "twice",
        ),
        (
            flow("p: {function: parse}, q: {function: store, after: []}"),
            "flows.etl.steps.q.after",
            "must name",
        ),
        (
            flow(
                "p: {function: parse}, r: {function: stats, after: p}, "
                "q: {function: store, after: [p, r], when: {data: {a: [1]}}}"
            ),
            "flows.etl.steps.q.when",
            "put conditions on those steps",
        ),
        (
            flow("p: {function: parse}, q: {function: store, after: p, timeout: 1m}"),
            "flows.etl.steps.q.timeout",
            "only a join",
        ),
        (
            flow(
                "p: {function: parse}, r: {function: stats, after: p}, "
                "q: {function: store, after: [p, r], timeout: soon}"
            ),
            "flows.etl.steps.q.timeout",
            "not a duration",
        ),
        (
            flow(
                "p: {function: parse}, r: {function: stats, after: [p, q]}, q: {function: store, after: [r]}"
            ),
            "flows.etl.steps.r.after",
            "cycle",
        ),
        (
            flow("p: {function: parse, after: q}, q: {function: store, after: p}"),
            "flows.etl.steps",
            "no step runs on the start event",
        ),
        (
            flow("s: {function: parse}, p: {function: parse, after: q}, q: {function: store, after: p}"),
            "flows.etl.steps.p.after",
            "cycle",
        ),
        ("flows: {etl: {steps: {p: {function: parse}}}}", "flows.etl.start", "pattern of the events"),
        (flow("p: {function: parse}", start="{type: a}"), "flows.etl.start", ""),
        (
            flow("p: {function: parse}, q: {function: store, after: p, when: {type: [x]}}"),
            "flows.etl.steps.q.when.type",
            "set by the flow",
        ),
        (flow("p: {function: parse, when: {data: {x: [1]}}}"), "flows.etl.steps.p.when", "start step"),
        (flow("p: {function: parse, retry: 3}"), "flows.etl.steps.p.retry", "unknown key"),
    ],
)
def test_invalid_flows_are_refused_naming_the_path(text: str, path: str, words: str) -> None:
    with pytest.raises(ManifestError) as caught:
        manifest(text)
    assert caught.value.path == path, caught.value
    assert words in caught.value.reason


def test_a_user_rule_cannot_take_a_steps_name() -> None:
    with pytest.raises(ManifestError, match="unique"):
        manifest("rules: [{name: flow.etl.parse, pattern: {type: [x]}, targets: [crawl]}]\n" + ETL)


def test_two_steps_cannot_run_one_function_on_the_same_event() -> None:
    with pytest.raises(ManifestError, match="both run 'store'") as caught:
        manifest(flow("p: {function: parse}, q: {function: store, after: p}, r: {function: store, after: p}"))
    assert caught.value.path == "flows.etl.steps.r.function"


def test_two_flows_running_one_function_on_an_event_each_get_a_record_of_their_own() -> None:
    """Flows billing and shipping both start with audit: each runs, audit getting the event once
    per flow, tagged with that flow (an ordinary rule on audit rides with the first)."""
    parsed = parse(
        yaml.safe_load(
            "functions: {audit: {handler: 'm:f'}, bill: {handler: 'm:f'}, ship: {handler: 'm:f'}}\n"
            "rules: [{name: mine, pattern: {type: [order.placed]}, targets: [audit]}]\n"
            "flows:\n"
            "  billing: {start: {type: [order.placed]},\n"
            "            steps: {a: {function: audit}, b: {function: bill, after: a}}}\n"
            "  shipping: {start: {type: [order.placed]},\n"
            "             steps: {a: {function: audit}, s: {function: ship, after: a}}}\n"
        )
    )
    ce = CloudEvent.create(id="o-1", source="s", type="order.placed", data={"x": 1})
    sent = deliveries(matching_rules(to_json_dict(ce), parsed.rules))
    assert [(target, [rule.name for rule in by]) for target, by in sent] == [
        ("audit", ["mine", "flow.billing.a"]),
        ("audit", ["flow.shipping.a"]),
    ]
    runs = []
    for target, by in sent:
        out = routed_record(to_record(ce), to_json_dict(ce), target, by, binary=True)
        ext = from_record(out.key, out.value, out.headers).extensions
        runs.append((ext["busflow"], ext["busflowstep"], ext["busflowrun"], ext["matchedrules"]))
    assert runs == [
        ("billing", "a", "o-1", "mine,flow.billing.a"),
        ("shipping", "a", "o-1", "flow.shipping.a"),
    ]


def test_without_several_flows_on_a_target_each_target_gets_one_record() -> None:
    """`deliveries` is `by_target` when no two flows share a target."""
    rules = manifest("rules: [{name: mine, pattern: {type: [page.fetched]}, targets: [parse]}]\n" + ETL).rules
    matched = matching_rules(event(type="page.fetched"), rules)
    assert deliveries(matched) == list(by_target(matched).items())


def test_a_step_cannot_follow_a_function_without_results() -> None:
    text = (
        "functions: {a: {handler: 'm:f', destinations: {on_success: none}}, b: {handler: 'm:f'}}\n"
        "flows: {f: {start: {type: [x]}, steps: {p: {function: a}, q: {function: b, after: p}}}}"
    )
    with pytest.raises(ManifestError, match="publishes no results") as caught:
        parse(yaml.safe_load(text))
    assert caught.value.path == "flows.f.steps.q.after"


DAG = """
flows:
  ml:
    start: {type: [data.ready]}
    steps:
      clean: {function: crawl}
      features: {function: parse, after: clean}
      stats: {function: stats, after: clean}
      model: {function: store, after: [features, stats], timeout: 90s}
"""


def test_a_join_follows_several_steps_with_its_timeout() -> None:
    step = manifest(DAG).flows[0].steps["model"]
    assert (step.after, step.joins, step.timeout) == (("features", "stats"), True, 90.0)
    assert manifest(DAG).flows[0].steps["features"].joins is False


def test_a_joins_rule_sends_every_parts_result_to_the_joiner() -> None:
    parsed = manifest(DAG)
    rule = next(r for r in parsed.rules if r.name == "flow.ml.model")
    assert rule.targets == ("join:ml.model",)
    assert rule.flow is not None
    assert rule.flow.join
    assert result_topics_read(parsed.flows) == {"crawl", "parse", "stats"}
    result = {"type": "bus.function.result", "busflow": "ml", "busflowrun": "r"}
    for part in ("features", "stats"):
        assert [r.name for r in matching_rules(event(**result, busflowstep=part), parsed.rules)] == [
            "flow.ml.model"
        ]
    assert [r.name for r in matching_rules(event(**result, busflowstep="clean"), parsed.rules)] == [
        "flow.ml.features",
        "flow.ml.stats",
    ]


def test_a_part_sent_to_the_joiner_keeps_its_step_is_marked_with_the_join_and_keyed_by_run() -> None:
    rules = manifest(DAG).rules
    result = CloudEvent.create(
        id="res-2",
        source="bus://p/functions/stats",
        type="bus.function.result",
        extensions={"busflow": "ml", "busflowstep": "stats", "busflowrun": "run-7", "partitionkey": "k"},
        data={"mean": 2},
    )
    record = to_record(result)
    by = by_target(matching_rules(to_json_dict(result), rules))["join:ml.model"]
    out = routed_record(record, to_json_dict(result), "join:ml.model", by, binary=True)
    sent = from_record(out.key, out.value, out.headers)
    assert out.key == b"run-7"
    assert {k: sent.extensions[k] for k in ("busflow", "busflowstep", "busflowrun", "busflowjoin")} == {
        "busflow": "ml",
        "busflowstep": "stats",
        "busflowrun": "run-7",
        "busflowjoin": "model",
    }
    assert sent.data == {"mean": 2}


def test_the_join_topics_exist_only_for_manifests_with_joins() -> None:
    from bus.topology import manifest_topics

    assert "bus.flows.joins" in {spec.name for spec in manifest_topics(manifest(DAG))}
    assert "bus.flows.joins.state" in {spec.name for spec in manifest_topics(manifest(DAG))}
    assert "bus.flows.joins" not in {spec.name for spec in manifest_topics(manifest(ETL))}

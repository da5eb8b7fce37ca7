"""Flows on the real broker (bus.flows): a three-step pipeline with a conditional branch and a
fan-out runs through gateway, router and workers with the right data; a failing step ends its run
with the error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from bus import naming
from bus.kafka_binding import from_record
from tests.support import KafkaEnv, run_bus, running_platform, unique, wait_until

STEPS = """
def crawl(event, ctx):
    return {"page": event.data["url"] + " has three words", "broken": event.data.get("broken", False)}


def parse(event, ctx):
    if event.data["broken"]:
        raise ValueError("cannot parse " + event.data["page"])
    return {"words": len(event.data["page"].split()), "ok": True}


def store(event, ctx):
    return {"stored": event.data["words"]}


def stats(event, ctx):
    return {"count": event.data["words"], "run": ctx.idempotency_key}
"""
MANIFEST = """
functions:
  crawl: {handler: "steps:crawl", partitions: 1}
  parse: {handler: "steps:parse", partitions: 1, retry: {attempts: 1, backoff: [100ms]}}
  store: {handler: "steps:store", partitions: 1}
  stats: {handler: "steps:stats", partitions: 1}
flows:
  pages:
    start: {type: [crawl.requested]}
    steps:
      crawl: {function: crawl}
      parse: {function: parse, after: crawl}
      store: {function: store, after: parse, when: {data: {ok: [true]}}}
      stats: {function: stats, after: parse}
"""


def start_run(url: str, run: str, type_: str, data: Any) -> None:
    """Publish the event that starts a run (its id is the run's) through the gateway."""
    event = {"specversion": "1.0", "id": run, "source": "tests/flows", "type": type_, "data": data}
    answer = httpx.post(
        f"{url}/events", json=event, headers={"content-type": "application/cloudevents+json"}, timeout=30
    )
    assert answer.status_code == 202, answer.text


def read_outputs(kafka: KafkaEnv, prefix: str, function: str, kind: str = "results") -> list[Any]:
    """The events on a function's results (or errors) topic now."""
    topic = (naming.result_topic if kind == "results" else naming.error_topic)(prefix, function)
    return [from_record(m.key(), m.value(), m.headers()) for m in kafka.read_all(topic, idle=0.5)]


def test_a_pipeline_with_a_branch_runs_each_step_once_and_a_failed_step_ends_its_run(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    (tmp_path / "steps.py").write_text(STEPS)
    path = tmp_path / "bus.yaml"
    path.write_text(f"prefix: {prefix}\n{MANIFEST}")
    good, bad = unique("page"), unique("page")
    with running_platform(kafka, path, tmp_path / "home") as platform:
        for run, data in ((good, {"url": "a.example"}), (bad, {"url": "b.example", "broken": True})):
            start_run(platform.url, run, "crawl.requested", data)

        def outputs(function: str, kind: str = "results") -> list[Any]:
            return read_outputs(kafka, prefix, function, kind)

        wait_until(
            lambda: (outputs("store") and outputs("stats")) or None, timeout=60, what="the last results"
        )
        wait_until(lambda: outputs("parse", "errors") or None, timeout=60, what="the failed step's error")
        # Let anything late (a duplicate, a step after the failure) arrive before counting.
        stored, counted = outputs("store"), outputs("stats")

    assert [(e.data, e.extensions["busflowrun"]) for e in stored] == [({"stored": 4}, good)]
    assert [(e.data["count"], e.extensions["busflowrun"]) for e in counted] == [(4, good)]
    assert {e.extensions["busflow"] for e in [*stored, *counted]} == {"pages"}
    assert [e.extensions["busflowstep"] for e in [*stored, *counted]] == ["store", "stats"]
    parsed = outputs("parse")
    assert [e.extensions["busflowrun"] for e in parsed] == [good]  # the bad run stopped at parse
    (error,) = outputs("parse", "errors")
    assert error.extensions["busflowrun"] == bad
    assert error.data["error_type"] == "ValueError"
    assert error.data["message"] == "cannot parse b.example has three words"

    # `bus flows status` tells the same story, run by run.
    status = run_bus(
        "flows", "status", "-f", str(path), "--json", env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    )
    assert status.returncode == 0, status.stderr
    shown = {doc["run"]: doc for doc in map(orjson.loads, status.stdout.splitlines())}
    assert (shown[good]["state"], shown[good]["done"], shown[good]["pending"]) == (
        "done",
        ["crawl", "parse", "stats", "store"],
        [],
    )
    assert (shown[bad]["state"], shown[bad]["done"]) == ("failed", ["crawl"])
    assert shown[bad]["failed"]["parse"]["error_type"] == "ValueError"
    table = run_bus(
        "flows", "status", "pages", "-f", str(path), env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    )
    assert f"pages  {bad}  failed  crawl:ok parse:FAILED  [parse: ValueError: cannot parse" in table.stdout

    # A later step replays like any function: from the results of the step it follows, run and all.
    replayed = run_bus(
        "replay",
        "-f",
        str(path),
        "--function",
        "parse",
        "--from",
        "10m",
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap},
    )
    assert replayed.returncode == 0, replayed.stderr
    summary = orjson.loads(replayed.stdout)
    assert (summary["source"], summary["replayed"]) == (naming.result_topic(prefix, "crawl"), 2)
    again = [
        from_record(m.key(), m.value(), m.headers())
        for m in kafka.read_all(naming.function_topic(prefix, "parse"), idle=0.5)
    ]
    marked = [e for e in again if "replayid" in e.extensions]
    assert sorted(e.extensions["busflowrun"] for e in marked) == sorted([good, bad])
    assert {(e.extensions["busflow"], e.extensions["busflowstep"]) for e in marked} == {("pages", "parse")}


JOIN_STEPS = """
def clean(event, ctx):
    return {"rows": [r for r in event.data["rows"] if r is not None], "full": event.data.get("full", True)}


def features(event, ctx):
    return {"squares": [r * r for r in event.data["rows"]]}


def stats(event, ctx):
    rows = event.data["rows"]
    return {"mean": sum(rows) / len(rows)}


def model(event, ctx):
    return {"score": sum(event.data["features"]["squares"]) + event.data["stats"]["mean"], "run": event.type}


def plot(event, ctx):
    return {"plotted": event.data["score"]}
"""
JOIN_MANIFEST = """
functions:
  clean: {handler: "dag:clean", partitions: 2}
  features: {handler: "dag:features", partitions: 2}
  stats: {handler: "dag:stats", partitions: 2}
  model: {handler: "dag:model", partitions: 2}
  plot: {handler: "dag:plot", partitions: 2}
flows:
  ml:
    start: {type: [dataset.ready]}
    steps:
      clean: {function: clean}
      features: {function: features, after: clean}
      stats: {function: stats, after: clean, when: {data: {full: [true]}}}
      model: {function: model, after: [features, stats], timeout: 3s}
      plot: {function: plot, after: model}
"""


def test_a_dag_with_a_join_runs_the_join_once_on_all_its_parts_and_a_missing_part_times_out(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    (tmp_path / "dag.py").write_text(JOIN_STEPS)
    path = tmp_path / "bus.yaml"
    path.write_text(f"prefix: {prefix}\n{JOIN_MANIFEST}")
    runs: dict[str, dict[str, Any]] = {
        unique("ds"): {"rows": [1, None, 2, 3]},
        unique("ds"): {"rows": [4, 5]},
    }
    partial = unique("ds")  # stats does not run for it (`when`): its join can only time out
    with running_platform(kafka, path, tmp_path / "home") as platform:
        for run, data in (*runs.items(), (partial, {"rows": [1], "full": False})):
            start_run(platform.url, run, "dataset.ready", data)

        def outputs(function: str, kind: str = "results") -> list[Any]:
            return read_outputs(kafka, prefix, function, kind)

        wait_until(lambda: len(outputs("plot")) == len(runs) or None, timeout=90, what="both runs plotted")
        (timed_out,) = wait_until(
            lambda: outputs("model", "errors") or None, timeout=60, what="the join's timeout"
        )
        plotted, modelled = outputs("plot"), outputs("model")

    # Each complete run's join ran once, on both parts' data, and the flow went on after it.
    assert sorted(e.extensions["busflowrun"] for e in modelled) == sorted(runs)
    by_run = {e.extensions["busflowrun"]: e.data for e in plotted}
    assert by_run == {
        run: {"plotted": sum(r * r for r in data["rows"] if r is not None) + _mean(data["rows"])}
        for run, data in runs.items()
    }
    assert {e.data["run"] for e in modelled} == {"bus.flow.joined"}
    # The run whose stats step never ran ends with the join's timeout, naming what was missing.
    assert timed_out.extensions["busflowrun"] == partial
    assert timed_out.data["error_type"] == "JoinTimeout"
    assert timed_out.data["message"] == "join ml.model waited 3s for stats (arrived: features)"
    assert timed_out.data["event"]["data"] == {"features": {"squares": [1]}}
    status = run_bus(
        "flows", "status", "-f", str(path), "--json", env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}
    )
    shown = {doc["run"]: doc for doc in map(orjson.loads, status.stdout.splitlines())}
    assert {shown[run]["state"] for run in runs} == {"done"}
    assert shown[partial]["state"] == "failed"
    assert shown[partial]["failed"]["model"]["error_type"] == "JoinTimeout"


def _mean(rows: list[int | None]) -> float:
    kept = [r for r in rows if r is not None]
    return sum(kept) / len(kept)


TWO_FLOWS_STEPS = """
def audit(event, ctx):
    return {"order": event.data["order"]}


def bill(event, ctx):
    return {"billed": event.data["order"]}


def ship(event, ctx):
    return {"shipped": event.data["order"]}
"""
TWO_FLOWS = """
functions:
  audit: {handler: "orders:audit", partitions: 1}
  bill: {handler: "orders:bill", partitions: 1}
  ship: {handler: "orders:ship", partitions: 1}
flows:
  billing:
    start: {type: [order.placed]}
    steps: {a: {function: audit}, b: {function: bill, after: a}}
  shipping:
    start: {type: [order.placed]}
    steps: {a: {function: audit}, s: {function: ship, after: a}}
"""


def test_two_flows_starting_with_one_function_both_run(kafka: KafkaEnv, tmp_path: Path) -> None:
    """billing and shipping both start with audit on order.placed: audit runs once per flow, with
    a result of its own for each, and each flow goes on to its next step."""
    prefix = kafka.prefix()
    (tmp_path / "orders.py").write_text(TWO_FLOWS_STEPS)
    path = tmp_path / "bus.yaml"
    path.write_text(f"prefix: {prefix}\n{TWO_FLOWS}")
    order = unique("order")
    with running_platform(kafka, path, tmp_path / "home") as platform:
        start_run(platform.url, order, "order.placed", {"order": 7})

        def outputs(function: str) -> list[Any]:
            return read_outputs(kafka, prefix, function)

        wait_until(lambda: (outputs("bill") and outputs("ship")) or None, timeout=60, what="bill and ship")
        audited, billed, shipped = outputs("audit"), outputs("bill"), outputs("ship")

    assert sorted(e.extensions["busflow"] for e in audited) == ["billing", "shipping"]
    assert {e.extensions["busflowrun"] for e in audited} == {order}
    assert len({e.id for e in audited}) == 2
    assert [(e.data, e.extensions["busflow"]) for e in billed] == [({"billed": 7}, "billing")]
    assert [(e.data, e.extensions["busflow"]) for e in shipped] == [({"shipped": 7}, "shipping")]

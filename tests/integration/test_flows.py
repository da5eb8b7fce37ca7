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
            event = {
                "specversion": "1.0",
                "id": run,
                "source": "tests/flows",
                "type": "crawl.requested",
                "data": data,
            }
            answer = httpx.post(
                f"{platform.url}/events",
                json=event,
                headers={"content-type": "application/cloudevents+json"},
                timeout=30,
            )
            assert answer.status_code == 202, answer.text

        def outputs(function: str, kind: str = "results") -> list[Any]:
            topic = (naming.result_topic if kind == "results" else naming.error_topic)(prefix, function)
            return [from_record(m.key(), m.value(), m.headers()) for m in kafka.read_all(topic, idle=0.5)]

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

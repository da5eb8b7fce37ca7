"""A flow's runs from its steps' events (bus.flow_runs): done, running and failed."""

from __future__ import annotations

from typing import Any

import yaml

from bus import cli_flows
from bus.events import CloudEvent
from bus.flow_runs import runs, untracked_steps
from bus.manifest import parse

MANIFEST = parse(
    yaml.safe_load(
        """
functions: {a: {handler: 'm:f'}, b: {handler: 'm:f'}, c: {handler: 'm:f'}}
flows:
  f:
    start: {type: [go]}
    steps:
      a: {function: a}
      b: {function: b, after: a, when: {data: {ok: [true]}}}
      c: {function: c, after: a}
"""
    )
)
FLOW = MANIFEST.flows[0]


def step(
    run: str, name: str, *, kind: str = "result", data: Any = None, time: str = "2026-12-03T00:00:01Z"
) -> CloudEvent:
    return CloudEvent.create(
        id=f"{run}-{name}-{kind}",
        source=f"bus://p/functions/{name}",
        type=f"bus.function.{kind}",
        time=time,
        extensions={"busflow": "f", "busflowrun": run, "busflowstep": name},
        data=data,
    )


def test_a_run_is_done_running_or_failed() -> None:
    events = [
        step("r1", "a", data={"ok": True}, time="2026-12-03T00:00:01Z"),
        step("r1", "b", time="2026-12-03T00:00:02Z"),
        step("r1", "c", time="2026-12-03T00:00:03Z"),
        step("r2", "a", data={"ok": False}, time="2026-12-03T00:00:04Z"),
        step("r3", "a", data={"ok": True}, time="2026-12-03T00:00:05Z"),
        step("r3", "b", kind="error", data={"error_type": "ValueError", "message": "no", "attempts": 3}),
        step("other", "a").with_extensions(busflow="g"),
    ]
    found = {run.id: run for run in runs(FLOW, events)}
    assert sorted(found) == ["r1", "r2", "r3"]
    assert (found["r1"].state, sorted(found["r1"].done), found["r1"].pending) == ("done", ["a", "b", "c"], [])
    # r2's condition for b does not hold: only c is due.
    assert (found["r2"].state, found["r2"].pending) == ("running", ["c"])
    assert found["r3"].state == "failed"
    assert found["r3"].failed["b"] == {
        "error_type": "ValueError",
        "message": "no",
        "attempts": 3,
        "time": "2026-12-03T00:00:01Z",
    }
    assert found["r3"].to_json()["pending"] == ["c"]
    assert [run.id for run in runs(FLOW, events)] == ["r1", "r3", "r2"]  # by earliest event, then id


def test_a_join_is_pending_from_its_first_step_done_until_it_ends() -> None:
    dag = parse(
        yaml.safe_load(
            """
functions: {a: {handler: 'm:f'}, b: {handler: 'm:f'}, c: {handler: 'm:f'}, d: {handler: 'm:f'}}
flows:
  f:
    start: {type: [go]}
    steps:
      a: {function: a}
      b: {function: b, after: a}
      c: {function: c, after: a}
      d: {function: d, after: [b, c]}
"""
        )
    ).flows[0]
    half = [step("r1", "a"), step("r1", "b")]
    # d waits for c from when b is done: the run is running, not done, until d ends.
    assert runs(dag, half)[0].pending == ["c", "d"]
    assert runs(dag, [step("r1", "a"), step("r1", "b"), step("r1", "c", kind="error")])[0].state == "failed"
    both = [*half, step("r1", "c")]
    assert runs(dag, both)[0].pending == ["d"]
    timed_out = [*both, step("r1", "d", kind="error", data={"error_type": "JoinTimeout", "message": "m"})]
    assert (runs(dag, timed_out)[0].state, runs(dag, timed_out)[0].failed["d"]["error_type"]) == (
        "failed",
        "JoinTimeout",
    )


def test_a_step_whose_function_publishes_no_results_is_untracked_not_pending() -> None:
    """A final step with `destinations.on_success: none` never reports: once due it is shown as
    untracked, and a run whose other steps are done is done; its published error still fails it."""
    manifest = parse(
        yaml.safe_load(
            """
functions:
  a: {handler: 'm:f'}
  b: {handler: 'm:f', destinations: {on_success: none}}
  c: {handler: 'm:f'}
flows:
  f:
    start: {type: [go]}
    steps:
      a: {function: a}
      b: {function: b, after: a}
      c: {function: c, after: a}
"""
        )
    )
    flow = manifest.flows[0]
    untracked = untracked_steps(flow, manifest.functions)
    assert untracked == {"b"}
    run = runs(flow, [step("r1", "a"), step("r1", "c")], untracked=untracked)[0]
    assert (run.state, run.pending, run.untracked) == ("done", [], ["b"])
    assert run.to_json()["untracked"] == ["b"]
    assert runs(flow, [step("r1", "a")], untracked=untracked)[0].pending == ["c"]
    failed = [step("r1", "a"), step("r1", "c"), step("r1", "b", kind="error", data={"error_type": "E"})]
    assert runs(flow, failed, untracked=untracked)[0].state == "failed"
    assert cli_flows._line(flow, run) == "f  r1  done  a:ok b:unknown c:ok"

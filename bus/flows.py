"""Flows: pipelines and branching graphs of functions, compiled to ordinary routing rules (pure).

```yaml
flows:
  etl:
    start: {type: [page.fetched]}               # an event matching this starts a run
    steps:
      parse: {function: parse}                  # no `after`: runs on the start event
      store: {function: store, after: parse, when: {data: {ok: [true]}}}   # a conditional branch
      stats: {function: stats, after: parse}    # fan-out: store and stats both follow parse
      report: {function: report, after: [store, stats], timeout: 5m}   # a join (fan-in)
```

A run is identified by the id of the event that started it. Each step's event carries three
extensions: `busflow` (the flow), `busflowrun` (the run) and `busflowstep` (the step it runs as);
a function's result event carries them on (workers copy them), so the rule of the next step
matches the previous step's `bus.function.result` by flow and step, plus its `when` pattern.
Steps therefore scale, retry, dead-letter and replay like any routed event; a step whose
function fails (after its retries) produces no result, so its run stops there with the error
on the function's failure destination.

A join step (`after:` a list of steps) runs once per run, when the results of all of them arrived,
on a `bus.flow.joined` event whose data maps each step to its result's data. The router sends those
results to `<prefix>.flows.joins` keyed by run, and the joiner (`bus.flow_joiner`, in the router
process) gathers them with its state in Kafka; a join still missing a part after `timeout` (from its
first part) ends the run with a `JoinTimeout` error on the join function's failure destination.

`compile_flows` turns the flows into `Rule`s named `flow.<flow>.<step>` whose `flow` tag tells the
router which extensions to set, and `result_topics_read` names the functions whose results the
router must read (those with a following step).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bus.durations import parse_duration
from bus.errors import ManifestError
from bus.patterns import PatternError
from bus.patterns import compile as compile_pattern
from bus.routing import FlowTag, Rule

__all__ = [
    "DEFAULT_JOIN_TIMEOUT",
    "FLOW",
    "FLOW_JOIN",
    "FLOW_RUN",
    "FLOW_STEP",
    "JOIN_TARGET",
    "RESULT_TYPE",
    "Flow",
    "Step",
    "compile_flows",
    "join_target",
    "parse_flows",
    "result_topics_read",
    "rule_documents",
]

FLOW = "busflow"
FLOW_RUN = "busflowrun"
FLOW_STEP = "busflowstep"
FLOW_JOIN = "busflowjoin"
"""Set by the router on a step's result sent to a join: the join step it is a part of."""
JOIN_TARGET = "join:"
"""Prefix of a join rule's target: not a function but the joiner (bus.flow_joiner)."""
DEFAULT_JOIN_TIMEOUT = 300.0
RESULT_TYPE = "bus.function.result"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_RESERVED = frozenset({"type", FLOW, FLOW_STEP, FLOW_RUN, FLOW_JOIN})
"""Members a step's `when` may not name: the step's own rule sets them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step of a flow: a function run on the start event or on a previous step's result."""

    name: str
    function: str
    after: tuple[str, ...]
    """The steps whose results this one follows: none for a start step, several for a join."""
    when: Mapping[str, Any]
    """Pattern (EventBridge language) the previous step's result must match too; {} for any."""
    timeout: float = DEFAULT_JOIN_TIMEOUT
    """A join's wait for its last part, in seconds from its first."""

    @property
    def joins(self) -> bool:
        """True for a join: the step runs once all the steps it follows have a result."""
        return len(self.after) > 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """A named graph of steps, started by events matching `start`."""

    name: str
    start: Mapping[str, Any]
    steps: Mapping[str, Step]


def parse_flows(spec: Any, functions: Mapping[str, Any]) -> tuple[Flow, ...]:
    """The manifest's `flows:` mapping, validated against its `functions`."""
    if spec is None:
        return ()
    if not isinstance(spec, Mapping):
        raise ManifestError("flows", "must be a mapping of flow names to {start, steps}")
    return tuple(_flow(str(name), body, functions) for name, body in spec.items())


def _flow(name: str, body: Any, functions: Mapping[str, Any]) -> Flow:
    path = f"flows.{name}"
    if not _NAME.match(name):
        raise ManifestError(path, f"{name!r} must be 1-40 letters, digits, '_' or '-'")
    if not isinstance(body, Mapping):
        raise ManifestError(path, "must be a mapping with start and steps")
    unknown = sorted(set(body) - {"start", "steps"})
    if unknown:
        raise ManifestError(f"{path}.{unknown[0]}", "unknown key; a flow has start and steps")
    start = body.get("start")
    _check_pattern(start, f"{path}.start")
    if not isinstance(start, Mapping) or not start:
        raise ManifestError(f"{path}.start", "give the pattern of the events that start a run")
    steps_spec = body.get("steps")
    if not isinstance(steps_spec, Mapping) or not steps_spec:
        raise ManifestError(f"{path}.steps", "list at least one step: {name: {function: F}}")
    steps = {str(step): _step(str(step), spec, path, functions) for step, spec in steps_spec.items()}
    for step in steps.values():
        for after in step.after:
            if after not in steps:
                known = ", ".join(sorted(steps))
                raise ManifestError(f"{path}.steps.{step.name}.after", f"no step {after!r} (steps: {known})")
    if all(step.after for step in steps.values()):
        raise ManifestError(f"{path}.steps", "no step runs on the start event: give one step no `after`")
    _check_acyclic(steps, path)
    _check_targets(steps, path, functions)
    return Flow(name=name, start=dict(start), steps=steps)


def _step(name: str, spec: Any, flow_path: str, functions: Mapping[str, Any]) -> Step:
    path = f"{flow_path}.steps.{name}"
    if not _NAME.match(name):
        raise ManifestError(path, f"{name!r} must be 1-40 letters, digits, '_' or '-'")
    if not isinstance(spec, Mapping):
        raise ManifestError(path, "must be a mapping: {function: F[, after: STEP][, when: PATTERN]}")
    unknown = sorted(set(spec) - {"function", "after", "when", "timeout"})
    if unknown:
        raise ManifestError(
            f"{path}.{unknown[0]}", "unknown key; a step has function, after, when and timeout"
        )
    function = spec.get("function")
    if function not in functions:
        known = ", ".join(sorted(functions)) or "none declared"
        raise ManifestError(f"{path}.function", f"unknown function {function!r} (functions: {known})")
    after = _after(spec.get("after"), f"{path}.after")
    when = spec.get("when", {})
    _check_pattern(when, f"{path}.when")
    if not isinstance(when, Mapping):
        raise ManifestError(f"{path}.when", "must be a pattern (a mapping)")
    if not after and when:
        raise ManifestError(f"{path}.when", "a start step runs on every start event; put conditions in start")
    if len(after) > 1 and when:
        raise ManifestError(
            f"{path}.when", "a join runs when all its steps have a result; put conditions on those steps"
        )
    reserved = sorted(_RESERVED & set(when))
    if reserved:
        raise ManifestError(f"{path}.when.{reserved[0]}", "set by the flow itself; match on data or subject")
    if "timeout" in spec and len(after) < 2:
        raise ManifestError(
            f"{path}.timeout", "only a join (after: [A, B, ...]) waits, so only a join has one"
        )
    timeout = parse_duration(spec.get("timeout", DEFAULT_JOIN_TIMEOUT), f"{path}.timeout")
    if timeout <= 0:
        raise ManifestError(f"{path}.timeout", "must be longer than 0s")
    return Step(name=name, function=str(function), after=after, when=dict(when), timeout=timeout)


def _after(spec: Any, path: str) -> tuple[str, ...]:
    """`after:` as the steps followed: nothing, one name, or a list of distinct names (a join)."""
    if spec is None:
        return ()
    names = spec if isinstance(spec, list) else [spec]
    if not names or not all(isinstance(name, str) for name in names):
        raise ManifestError(path, f"must name a step or list the steps a join waits for, got {spec!r}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ManifestError(path, f"step {twice[0]!r} is listed twice")
    return tuple(names)


def _check_pattern(spec: Any, path: str) -> None:
    try:
        compile_pattern(spec if spec is not None else {})
    except PatternError as exc:
        raise ManifestError(path, str(exc)) from exc


def _check_acyclic(steps: Mapping[str, Step], path: str) -> None:
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = " -> ".join([*trail[trail.index(name) :], name])
            raise ManifestError(f"{path}.steps.{trail[0]}.after", f"steps form a cycle: {cycle}")
        if name not in done:
            for previous in steps[name].after:
                visit(previous, [*trail, name])
            done.add(name)

    for name in steps:
        visit(name, [])


def _check_targets(steps: Mapping[str, Step], path: str, functions: Mapping[str, Any]) -> None:
    """A function runs once per event: two steps after the same one cannot share a function, and a
    step cannot follow a function whose results go nowhere."""
    seen: dict[tuple[tuple[str, ...], str], str] = {}
    for step in steps.values():
        where = f"{path}.steps.{step.name}.function"
        other = seen.setdefault((step.after, step.function), step.name)
        if other != step.name:
            raise ManifestError(
                where,
                f"steps {other!r} and {step.name!r} both run {step.function!r} on the same event; merge them",
            )
        for previous in step.after:
            followed = steps[previous].function
            if getattr(functions[followed].destinations, "on_success", "") is None:
                raise ManifestError(
                    f"{path}.steps.{step.name}.after",
                    f"function {followed!r} publishes no results (destinations.on_success: none)",
                )


def compile_flows(flows: Sequence[Flow]) -> tuple[Rule, ...]:
    """One rule per step: start steps on the start pattern, the others on their previous step's
    result; a join's rule sends the results of all its steps to the joiner."""
    rules: list[Rule] = []
    for flow in flows:
        for step in flow.steps.values():
            if not step.after:
                pattern: Mapping[str, Any] = flow.start
            else:
                pattern = {**step.when, "type": [RESULT_TYPE], FLOW: [flow.name], FLOW_STEP: list(step.after)}
            rules.append(
                Rule(
                    name=f"flow.{flow.name}.{step.name}",
                    pattern=compile_pattern(pattern),
                    targets=(join_target(flow.name, step.name) if step.joins else step.function,),
                    flow=FlowTag(flow=flow.name, step=step.name, starts=not step.after, join=step.joins),
                )
            )
    return tuple(rules)


def rule_documents(spec: Any) -> list[dict[str, Any]]:
    """The rules a valid manifest's `flows:` compiles to (`compile_flows`), each as a JSON document
    like an entry of `rules:` (name, pattern, targets) plus the step as written: `bus apply`
    versions them with the manifest's rules and `bus rules list` lists them."""
    documents: list[dict[str, Any]] = []
    for flow, body in (spec or {}).items():
        for step, step_spec in body["steps"].items():
            after = _after(step_spec.get("after"), f"flows.{flow}.steps.{step}.after")
            if not after:
                pattern: Mapping[str, Any] = body["start"]
            else:
                pattern = {
                    **step_spec.get("when", {}),
                    "type": [RESULT_TYPE],
                    FLOW: [str(flow)],
                    FLOW_STEP: list(after),
                }
            target = join_target(str(flow), str(step)) if len(after) > 1 else step_spec["function"]
            name = f"flow.{flow}.{step}"
            documents.append({"name": name, "pattern": dict(pattern), "targets": [target], "step": step_spec})
    return documents


def join_target(flow: str, step: str) -> str:
    """The target of a join's rule: the joiner, which runs the step's function once all arrived."""
    return f"{JOIN_TARGET}{flow}.{step}"


def result_topics_read(flows: Sequence[Flow]) -> frozenset[str]:
    """Functions whose results start a next step: the router reads their results topics."""
    return frozenset(
        flow.steps[previous].function
        for flow in flows
        for step in flow.steps.values()
        for previous in step.after
    )

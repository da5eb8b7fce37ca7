"""The runs of a flow, from its steps' result and error events (pure): `bus flows status`.

A run is known by the events that carry its `busflowrun`: each step's result (the step is done)
or error (the step failed after its retries, which ends the run). A step is pending when the step
it follows is done and its `when` pattern matches that result (a join: when one of its steps is
done), but it has neither result nor error yet. A step whose function publishes no results
(`destinations.on_success: none`, `untracked_steps`) can never be seen done: once due it is
`untracked`, not pending (it still fails, when its function's errors are published). A run is
`failed` with its first error, `running` while a step is pending, else `done`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.events import CloudEvent, to_json_dict
from bus.flows import FLOW, FLOW_RUN, FLOW_STEP, RESULT_TYPE, Flow
from bus.patterns import compile as compile_pattern

__all__ = ["Run", "runs", "untracked_steps"]

ERROR_TYPE = "bus.function.error"


@dataclass(slots=True)
class Run:
    """One run of a flow: what its steps did so far."""

    id: str
    done: dict[str, str] = field(default_factory=dict)
    """Step -> the time of its result."""
    failed: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """Step -> its error: error_type, message, attempts, time."""
    pending: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)
    """Steps due whose functions publish no results: whether they ran is not known here."""
    first: str = ""
    """Time of the earliest event of the run seen."""
    last: str = ""

    @property
    def state(self) -> str:
        """failed, running or done."""
        if self.failed:
            return "failed"
        return "running" if self.pending else "done"

    def to_json(self) -> dict[str, Any]:
        """The run as `bus flows status --json` prints it."""
        return {
            "run": self.id,
            "state": self.state,
            "done": sorted(self.done),
            "pending": self.pending,
            "untracked": self.untracked,
            "failed": dict(self.failed),
            "first": self.first,
            "last": self.last,
        }


def untracked_steps(flow: Flow, functions: Mapping[str, Any]) -> frozenset[str]:
    """The steps of `flow` whose functions publish no results (`destinations.on_success: none`)."""
    return frozenset(
        name
        for name, step in flow.steps.items()
        if getattr(functions[step.function].destinations, "on_success", "") is None
    )


def runs(flow: Flow, events: Iterable[CloudEvent], *, untracked: Collection[str] = ()) -> list[Run]:
    """The runs of `flow` seen in `events` (its steps' results and errors), oldest first.

    `untracked`: steps that never publish a result (`untracked_steps`), never pending."""
    found: dict[str, Run] = {}
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        ext = event.extensions
        if ext.get(FLOW) != flow.name or not isinstance(run_id := ext.get(FLOW_RUN), str):
            continue
        step = ext.get(FLOW_STEP)
        if not isinstance(step, str) or step not in flow.steps:
            continue
        run = found.setdefault(run_id, Run(run_id))
        when = event.time or ""
        run.first = min(run.first, when) if run.first else when
        run.last = max(run.last, when)
        if event.type == RESULT_TYPE:
            run.done[step] = when
            results[(run_id, step)] = to_json_dict(event)
        elif event.type == ERROR_TYPE:
            data = event.data if isinstance(event.data, dict) else {}
            run.failed[step] = {
                "error_type": data.get("error_type"),
                "message": data.get("message"),
                "attempts": data.get("attempts"),
                "time": when,
            }
    conditions = {name: compile_pattern(dict(step.when)) for name, step in flow.steps.items()}

    def due(run: Run, name: str) -> bool:
        """The step's turn has come: it follows nothing, a result its condition matches, or (a
        join) the first of its steps is done: it waits for the others from then on."""
        step = flow.steps[name]
        found = [results.get((run.id, previous)) for previous in step.after]
        if step.joins:
            return any(result is not None for result in found)
        return all(result is not None and conditions[name].matches(result) for result in found)

    for run in found.values():
        waiting = [
            name for name in flow.steps if name not in run.done and name not in run.failed and due(run, name)
        ]
        run.pending = [name for name in waiting if name not in untracked]
        run.untracked = [name for name in waiting if name in untracked]
    return sorted(found.values(), key=lambda run: (run.first, run.id))

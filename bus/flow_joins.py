"""Flow joins (pure): a join step's parts gathered per run, and what the joiner publishes.

A join (`after: [A, B]` in a flow, bus.flows) runs its function once per run, when the results of
all the steps it follows arrived. The router sends those results to the join topic keyed by run
(`busflowjoin` names the join); the joiner (bus.flow_joiner) folds each into a `Waiting` join,
kept in a compacted state topic, and publishes:

- once all parts are in, a `bus.flow.joined` event to the join's function: its data maps each
  step to its result's data, and it carries the run like any step's event;
- when the last part is still missing `timeout` after the first arrived, a `bus.function.error`
  (`JoinTimeout`) on the function's failure destination, which ends the run as a failed step does.

A finished join stays known (`done`) until its deadline, so a part arriving again (a replayed
step) is dropped instead of starting a join that could only time out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from bus.events import CloudEvent, to_json_dict
from bus.flows import FLOW, FLOW_RUN, FLOW_STEP, Flow
from bus.naming import function_source

__all__ = [
    "JOINED_TYPE",
    "JoinSpec",
    "Waiting",
    "arrive",
    "complete",
    "decode_waiting",
    "encode_waiting",
    "join_error",
    "join_specs",
    "joined_event",
    "state_key",
    "timeout_message",
]

JOINED_TYPE = "bus.flow.joined"
ERROR_TYPE = "bus.function.error"
_IDS = uuid.UUID("2b0f7c1e-5d3a-4e8b-9a61-7c4d2e9f0b13")


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinSpec:
    """One join step of a flow: the steps it waits for and how long."""

    flow: str
    step: str
    function: str
    parts: tuple[str, ...]
    timeout: float
    """Seconds from the first part's arrival to the last one's."""


def join_specs(flows: Sequence[Flow]) -> dict[tuple[str, str], JoinSpec]:
    """(flow, step) -> its join, for every join step of `flows`."""
    return {
        (flow.name, step.name): JoinSpec(
            flow=flow.name, step=step.name, function=step.function, parts=step.after, timeout=step.timeout
        )
        for flow in flows
        for step in flow.steps.values()
        if step.joins
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiting:
    """A join of one run: the parts in so far (step -> its result event, JSON format)."""

    flow: str
    step: str
    run: str
    deadline_ms: int
    """When it times out (or, once done, is forgotten): first part's time + the join's timeout."""
    parts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    first_offset: int = -1
    """Offset of the first part's record in the join topic (the error's origin on a timeout)."""
    done: bool = False
    """True once the joined event was published; kept until the deadline to drop repeated parts."""


def state_key(flow: str, step: str, run: str) -> bytes:
    """Key of a join's record in the state topic (one record per join of a run)."""
    return f"{flow}\x00{step}\x00{run}".encode()


def encode_waiting(waiting: Waiting) -> bytes:
    """The state topic's value for `waiting` (a done join keeps no parts)."""
    return orjson.dumps(
        {
            "flow": waiting.flow,
            "step": waiting.step,
            "run": waiting.run,
            "deadline_ms": waiting.deadline_ms,
            "parts": {} if waiting.done else waiting.parts,
            "first_offset": waiting.first_offset,
            "done": waiting.done,
        }
    )


def decode_waiting(value: bytes) -> Waiting:
    """`encode_waiting`'s inverse; ValueError when the value is not one."""
    doc = orjson.loads(value)
    if not isinstance(doc, dict) or not isinstance(doc.get("parts"), dict):
        raise ValueError("not a join state record")
    return Waiting(
        flow=str(doc["flow"]),
        step=str(doc["step"]),
        run=str(doc["run"]),
        deadline_ms=int(doc["deadline_ms"]),
        parts=doc["parts"],
        first_offset=int(doc.get("first_offset", -1)),
        done=bool(doc.get("done", False)),
    )


def arrive(
    waiting: Waiting | None,
    spec: JoinSpec,
    part: str,
    result: Mapping[str, Any],
    *,
    run: str,
    at_ms: int,
    offset: int,
) -> Waiting:
    """The join after `part`'s result (JSON format) arrived at `at_ms` in the record at `offset`;
    a repeated part is ignored.

    Raises ValueError when `part` is not one of the join's steps.
    """
    if part not in spec.parts:
        raise ValueError(
            f"step {part!r} is not a part of join {spec.flow}.{spec.step} (parts: {list(spec.parts)})"
        )
    if waiting is None:
        deadline = at_ms + round(spec.timeout * 1000)
        waiting = Waiting(flow=spec.flow, step=spec.step, run=run, deadline_ms=deadline, first_offset=offset)
    if waiting.done or part in waiting.parts:
        return waiting
    return replace(waiting, parts={**waiting.parts, part: dict(result)})


def complete(spec: JoinSpec, waiting: Waiting) -> bool:
    """True when every part of the join is in (and it was not published yet)."""
    return not waiting.done and all(part in waiting.parts for part in spec.parts)


def joined_event(prefix: str, spec: JoinSpec, waiting: Waiting, *, time: str) -> CloudEvent:
    """The event the join's function runs on: data = {step: that step's result data}.

    Its id is derived from the flow, step and run: one join of one run has one id, whoever publishes it.
    """
    return CloudEvent.create(
        id=str(uuid.uuid5(_IDS, f"joined\x00{spec.flow}\x00{spec.step}\x00{waiting.run}")),
        source=f"bus://{prefix}/flows/{spec.flow}",
        type=JOINED_TYPE,
        time=time,
        datacontenttype="application/json",
        extensions=_in_run(spec, waiting),
        data={part: waiting.parts[part].get("data") for part in spec.parts if part in waiting.parts},
    )


def _in_run(spec: JoinSpec, waiting: Waiting) -> dict[str, str | int | bool]:
    """The extensions of what a join publishes: its flow, step and run, keyed by the run."""
    return {FLOW: spec.flow, FLOW_STEP: spec.step, FLOW_RUN: waiting.run, "partitionkey": waiting.run}


def timeout_message(spec: JoinSpec, waiting: Waiting) -> str:
    """Why a join timed out: what it waited for, and what came."""
    missing = [part for part in spec.parts if part not in waiting.parts]
    arrived = ", ".join(sorted(waiting.parts)) or "none"
    return (
        f"join {spec.flow}.{spec.step} waited {spec.timeout:g}s for {', '.join(missing)} (arrived: {arrived})"
    )


def join_error(
    prefix: str,
    spec: JoinSpec,
    waiting: Waiting,
    *,
    error_type: str,
    message: str,
    time: str,
    topic: str,
    partition: int,
    embed_data: bool = True,
) -> CloudEvent:
    """The `bus.function.error` that ends a join's run (a timeout, a joined event too large), shaped
    like the join function's own errors (RELIABILITY R8), with the partial joined event as the
    event (without its data unless `embed_data`); `topic` and `partition` are the join topic's
    where its first part arrived."""
    partial = to_json_dict(joined_event(prefix, spec, waiting, time=time))
    if not embed_data:
        partial.pop("data", None)
    return CloudEvent.create(
        id=str(uuid.uuid5(_IDS, f"error\x00{spec.flow}\x00{spec.step}\x00{waiting.run}")),
        source=function_source(prefix, spec.function),
        type=ERROR_TYPE,
        time=time,
        datacontenttype="application/json",
        extensions={**_in_run(spec, waiting), "causationid": partial["id"]},
        data={
            "function": spec.function,
            "error_type": error_type,
            "message": message,
            "traceback": "",
            "attempts": 0,
            "first_attempt_time": time,
            "last_attempt_time": time,
            "topic": topic,
            "partition": partition,
            "offset": waiting.first_offset,
            "event": partial,
            "event_truncated": not embed_data,
        },
    )

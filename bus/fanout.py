"""What a routed target receives (pure): shared by the router and `bus replay`.

Each target of the matched rules gets the event once per flow that runs it (`deliveries`): two
flows whose steps run one function on the same event are two runs, each on a record of its own,
as EventBridge delivers to each rule's target. A record is the original (key, value and
headers unchanged) plus the `matchedrules` extension naming the rules that chose the target; when
one of those rules has an input transformer for the target, the event's data is reshaped by the
first such rule, in rule order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bus.events import from_json_dict
from bus.flows import FLOW, FLOW_JOIN, FLOW_RUN, FLOW_STEP
from bus.kafka_binding import Record, to_record, with_extensions
from bus.routing import Rule
from bus.rule_index import DATA

__all__ = ["MATCHED_RULES", "by_target", "deliveries", "needs_data", "routed_record"]

MATCHED_RULES = "matchedrules"
"""Extension naming the rules that sent the event to this function, comma-separated."""


def by_target(rules: Sequence[Rule]) -> dict[str, list[Rule]]:
    """Each target of the matched rules once, in rule order, with the rules that chose it."""
    targets: dict[str, list[Rule]] = {}
    for rule in rules:
        for target in rule.targets:
            targets.setdefault(target, []).append(rule)
    return targets


def deliveries(rules: Sequence[Rule]) -> list[tuple[str, list[Rule]]]:
    """Each record the matched rules send, in rule order: per target, one with the ordinary rules
    and the steps of the first flow choosing it, then one per further flow with its steps.

    Without flow steps of several flows on one target this is `by_target`: a record per target.
    """
    targets = by_target(rules)
    if all(rule.flow is None for rule in rules):  # the router's usual case: no flow step matched
        return list(targets.items())
    out: list[tuple[str, list[Rule]]] = []
    for target, by in targets.items():
        flows = list(dict.fromkeys(rule.flow.flow for rule in by if rule.flow is not None))
        if len(flows) < 2:
            out.append((target, by))
            continue
        first = [rule for rule in by if rule.flow is None or rule.flow.flow == flows[0]]
        out.append((target, first))
        out.extend(
            (target, [rule for rule in by if rule.flow is not None and rule.flow.flow == flow])
            for flow in flows[1:]
        )
    return out


def needs_data(rules: Sequence[Rule]) -> bool:
    """True when routing by these rules needs the data: a pattern names it, or a transformer reads it."""
    return any(rule.transforms or DATA & rule.pattern.top_fields for rule in rules)


def routed_record(
    record: Record, event: Mapping[str, Any], target: str, by: Sequence[Rule], *, binary: bool = False
) -> Record:
    """The record `target` receives; `event` is the record's event in the JSON format, as matched
    (with `data` when `needs_data`); `binary`: the record is known to be in binary mode."""
    names = ",".join(rule.name for rule in by)
    record = _in_flow(record, event, by)
    for rule in by:
        transform = rule.transforms.get(target)
        if transform is not None:
            shaped = {key: value for key, value in event.items() if key not in _RESHAPED}
            shaped.update(
                data=transform.apply(event, rule.name),
                datacontenttype="application/json",
                **{MATCHED_RULES: names},
            )
            rendered = to_record(from_json_dict(shaped))
            # Headers that are not part of the event (tracing, custom) travel on unchanged.
            kept = tuple((k, v) for k, v in record.headers if not k.startswith("ce_") and k != "content-type")
            return Record(record.key, rendered.value, rendered.headers + kept)
    if binary and MATCHED_RULES not in event:
        # The common case, kept cheap: one header appended, the rest shared with the input record.
        return Record(record.key, record.value, (*record.headers, (_MATCHED_HEADER, names.encode())))
    return with_extensions(record, {MATCHED_RULES: names})


def _in_flow(record: Record, event: Mapping[str, Any], by: Sequence[Rule]) -> Record:
    """The record with the flow extensions of the first flow step among `by` (bus.flows) set:
    the flow, the step the target runs as, and the run (the start event's id, carried on).

    A step's result sent to a join keeps its own step and is marked with the join's, keyed by the
    run: all parts of one run's join meet on one partition of the joiner's topic.
    """
    tag = next((rule.flow for rule in by if rule.flow is not None), None)
    if tag is None:
        return record
    if tag.join:
        run = event.get(FLOW_RUN)
        marked = with_extensions(record, {FLOW_JOIN: tag.step})
        key = run.encode() if isinstance(run, str) else marked.key
        return Record(key, marked.value, marked.headers)
    run = event.get("id") if tag.starts else event.get(FLOW_RUN)
    extensions = {FLOW: tag.flow, FLOW_STEP: tag.step}
    if isinstance(run, str) and run:
        extensions[FLOW_RUN] = run
    return with_extensions(record, extensions)


_MATCHED_HEADER = "ce_" + MATCHED_RULES
_RESHAPED = frozenset({"data", "data_base64", "datacontenttype", "dataschema"})
"""Members a transformer replaces: the data and what describes it."""

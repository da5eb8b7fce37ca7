"""What a routed target receives (pure): shared by the router and `bus replay`.

Each target of the matched rules gets the event once. Its record is the original (key, value and
headers unchanged) plus the `matchedrules` extension naming the rules that chose the target; when
one of those rules has an input transformer for the target, the event's data is reshaped by the
first such rule, in rule order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bus.events import CloudEvent, to_json_dict
from bus.kafka_binding import Record, to_record, with_extensions
from bus.routing import Rule

__all__ = ["MATCHED_RULES", "by_target", "needs_data", "routed_record"]

MATCHED_RULES = "matchedrules"
"""Extension naming the rules that sent the event to this function, comma-separated."""


def by_target(rules: Sequence[Rule]) -> dict[str, list[Rule]]:
    """Each target of the matched rules once, in rule order, with the rules that chose it."""
    targets: dict[str, list[Rule]] = {}
    for rule in rules:
        for target in rule.targets:
            targets.setdefault(target, []).append(rule)
    return targets


def needs_data(rules: Sequence[Rule]) -> bool:
    """True when routing by these rules needs the data: a pattern names it, or a transformer reads it."""
    return any("data" in rule.pattern.top_fields or rule.transforms for rule in rules)


def routed_record(record: Record, event: CloudEvent, target: str, by: Sequence[Rule]) -> Record:
    """The record `target` receives; `event` is the decoded record (with data when `needs_data`)."""
    names = ",".join(rule.name for rule in by)
    for rule in by:
        transform = rule.transforms.get(target)
        if transform is not None:
            shaped = replace(
                event,
                data=transform.apply(to_json_dict(event), rule.name),
                datacontenttype="application/json",
                dataschema=None,
            )
            rendered = to_record(shaped.with_extensions(**{MATCHED_RULES: names}))
            return Record(record.key, rendered.value, rendered.headers)
    return with_extensions(record, {MATCHED_RULES: names})

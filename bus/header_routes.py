"""Routes remembered by header values (pure): the router's fast path for binary-mode records.

A binary-mode record's attributes are its `ce_*` headers. The values of a few of them, its
*deciding headers* (`kafka_binding.deciding_headers` of the fields the rules name, and
`ce_matchedrules`), decide everything routing makes of it but its value: whether it is a
routable CloudEvent, which rules match on attributes, and which targets those send it to.
`HeaderRoutes` remembers that per key of those values, as a `Fanout` (each target's topic and
the header it adds) or, when rules on `data` are left, a `Pending` that the record's data
completes. A record with a known key is routed without decoding its headers or building its
event; anything unusual (structured mode, transformers, typed data, dead letters) is `SLOW`:
routed in full by the router, with the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bus.decisions import MAX_KEYS, Decisions
from bus.events import MAX_JSON_DEPTH, is_json_content_type
from bus.fanout import MATCHED_RULES, by_target
from bus.kafka_binding import Headers, attributes_of, deciding_headers
from bus.routing import Rule

__all__ = ["MAX_FANOUTS", "SLOW", "Fanout", "HeaderRoutes", "Pending", "Slow", "fanout"]

MAX_FANOUTS = 64
"""Most fan-outs remembered per `Pending` (one per subset of its checks that pass)."""

_MATCHED_HEADER = "ce_" + MATCHED_RULES

EventTest = Callable[[Mapping[str, Any]], bool]
"""A test of an event that holds `data` alone (`Decisions.data_checks`)."""


@dataclass(frozen=True, slots=True, eq=False)
class Fanout:
    """What `fanout.routed_record` makes of a binary-mode record without a `matchedrules`
    header, for one set of matched rules without input transformers: per target, the input
    record plus one header."""

    rules: tuple[str, ...]
    """Names of the matched rules, in order."""
    targets: tuple[str, ...]
    """Each target once, in `by_target` order."""
    sends: tuple[tuple[str, tuple[str, bytes]], ...]
    """Per target: its topic and the `ce_matchedrules` header appended to the input's headers."""
    grow: int
    """Most bytes a target's record has over the input (the longest appended header)."""


def fanout(rules: Sequence[Rule], topics: Mapping[str, str]) -> Fanout | None:
    """The fan-out of `rules`; None when a target has no topic in `topics`, or a rule transforms
    the event for one or is a flow step's."""
    sends: list[tuple[str, tuple[str, bytes]]] = []
    targets = by_target(rules)
    for target, by in targets.items():
        topic = topics.get(target)
        if topic is None or any(target in rule.transforms or rule.flow is not None for rule in by):
            return None  # transformed, or a flow step's extensions to set: the full routing
        sends.append((topic, (_MATCHED_HEADER, ",".join(rule.name for rule in by).encode())))
    grow = max((len(name) + len(value) for _, (name, value) in sends), default=0)
    return Fanout(tuple(rule.name for rule in rules), tuple(targets), tuple(sends), grow)


class Slow:
    """The verdict on records the fast path leaves to the router's full routing."""

    __slots__ = ()


SLOW = Slow()


@dataclass(frozen=True, slots=True, eq=False)
class Pending:
    """A remembered decision with rules on `data` left: the fan-out waits for the record's value."""

    matched: tuple[int, ...]
    """Positions of the rules that match whatever the data."""
    checks: tuple[tuple[int, EventTest], ...]
    """Per rule that may still match: its position and the test of the event with `data` alone."""
    fanouts: dict[int, Fanout | Slow] = field(default_factory=dict)
    """By the mask of the checks passed (bit i: `checks[i]`)."""


Plan = Fanout | Pending | Slow


class HeaderRoutes:
    """What one rule set does with binary-mode records, by the values of their deciding headers.

    Valid for one rule set and one set of topics: a router makes a new one when either changes.
    """

    __slots__ = ("_decisions", "_fanouts", "_pendings", "_topics", "names", "plans")

    def __init__(self, decisions: Decisions, topics: Mapping[str, str]) -> None:
        """`topics`: function name -> topic, for the functions that may be routed to now."""
        self._decisions = decisions
        self._topics = topics
        fields = decisions.fields
        self.names: tuple[str, ...] | None = (
            None if fields is None else (*deciding_headers(fields), _MATCHED_HEADER)
        )
        """The deciding headers, in key order; None when the rules name `id` or `time`: every
        record is then `SLOW`, as nothing can be remembered."""
        self.plans: dict[tuple[bytes | None, ...], Plan] = {}
        """By key (the values of `names`, None where absent): look up directly, `learn` on a miss."""
        self._fanouts: dict[tuple[int, ...], Fanout | Slow] = {}
        self._pendings: dict[tuple[tuple[int, ...], tuple[tuple[int, EventTest], ...]], Pending] = {}

    def learn(self, key: tuple[bytes | None, ...], headers: Headers) -> Plan:
        """The plan of the records with deciding header values `key`, as `headers` (of a record
        accepted by `kafka_binding.routable_headers`) show them; remembered up to `MAX_KEYS` keys."""
        try:
            plan = self._plan(headers)
        except Exception:  # whatever fails here, the full routing sends the record to the DLQ
            plan = SLOW
        if len(self.plans) < MAX_KEYS:
            self.plans[key] = plan
        return plan

    def _plan(self, headers: Headers) -> Plan:
        attributes = attributes_of(headers)
        if attributes is None or MATCHED_RULES in attributes:  # structured, or routed before
            return SLOW
        decisions = self._decisions
        decision = decisions.decide(attributes)
        if not decision.needs_value:
            return self._fanout_of(decision.matched)
        if not is_json_content_type(attributes.get("datacontenttype")):
            return SLOW  # typed data needs the schema reader; other data is no JSON to match
        matched = list(decision.matched)
        checks: list[tuple[int, EventTest]] = []
        for position, check in decisions.data_checks(decision, attributes):
            if check is None:
                matched.append(position)
            else:
                checks.append((position, check))
        if not checks:
            return self._fanout_of(tuple(sorted(matched)))
        # Keys that leave the same rules to check on the same data share one Pending, and its fan-outs.
        shape = (tuple(sorted(matched)), tuple(checks))
        plan = self._pendings.get(shape)
        if plan is None:
            plan = self._pendings[shape] = Pending(*shape)
        return plan

    def finish(self, plan: Pending, value: bytes | None) -> Fanout | Slow:
        """The fan-out of a record of `plan` with this value (JSON data); SLOW when the value is
        not plain JSON, so that the full routing gives the reason or decides."""
        if not value:  # no data: the member is absent, as events.data_from_bytes leaves it
            event = {}
        else:
            try:
                data = orjson.loads(value)
            except orjson.JSONDecodeError:
                return SLOW
            if data is None or value.count(b"[") + value.count(b"{") >= MAX_JSON_DEPTH:
                return SLOW  # JSON null (no data member), or maybe too deep: parse_json decides
            event = {"data": data}
        mask = 0
        bit = 1
        try:
            for _, check in plan.checks:
                if check(event):
                    mask |= bit
                bit <<= 1
        except Exception:  # as in learn: the full routing gives the reason
            return SLOW
        fan = plan.fanouts.get(mask)
        return fan if fan is not None else self._fanout(plan, mask)

    def _fanout(self, plan: Pending, mask: int) -> Fanout | Slow:
        found = [position for i, (position, _) in enumerate(plan.checks) if mask >> i & 1]
        fan = self._fanout_of(tuple(sorted((*plan.matched, *found))))
        if len(plan.fanouts) < MAX_FANOUTS:
            plan.fanouts[mask] = fan
        return fan

    def _fanout_of(self, positions: tuple[int, ...]) -> Fanout | Slow:
        """The fan-out of the rules at `positions` (ascending), made once per set of rules."""
        fan = self._fanouts.get(positions)
        if fan is None:
            rules = self._decisions.rules
            fan = fanout([rules[p] for p in positions], self._topics) or SLOW
            if len(self._fanouts) < MAX_KEYS:
                self._fanouts[positions] = fan
        return fan

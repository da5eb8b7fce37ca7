"""The router bench's workload: manifests of 10 to 1,000 rules and the events they route (pure).

A manifest of `n` rules routes `n // 2` event types to eight functions, two rules per type, so an
event matches about two rules whatever `n` is. The rules cycle through the pattern features
manifests use: exact `type`, `source` prefix with a `type` suffix, numeric and nested suffix
matches on `data`, `$or`, `anything-but` and tag selectors. One event in ten has a type no rule
names (a rule scan's worst case). Events are CloudEvents with JSON data, about 500 bytes as Kafka
records in binary mode. Everything is seeded: a rule count always yields the same manifest and
the same stream.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from bus.events import CloudEvent
from bus.kafka_binding import Record, to_record
from bus.manifest import Manifest, parse

__all__ = ["FUNCTIONS", "POOL", "events", "manifest", "manifest_document", "records"]

FUNCTIONS = ("orders", "payments", "shipping", "inventory", "notify", "analytics", "fraud", "audit")
"""The functions every generated manifest declares."""

_DOMAINS = ("shop", "billing", "logistics", "catalog", "crm", "support", "identity", "ads", "media", "iot")
_ENTITIES = (
    "order",
    "payment",
    "shipment",
    "customer",
    "cart",
    "product",
    "invoice",
    "refund",
    "review",
    "device",
)
_ACTIONS = ("created", "updated", "completed", "cancelled", "failed")
_REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
_STATUSES = ("new", "paid", "shipped", "delivered", "cancelled", "test")
_TAGS = ("priority", "vip", "eu", "test", "batch", "beta")
_UNROUTED = "com.example.internal.heartbeat.sent"
"""Type of the events no rule names."""
_KINDS = 7
"""Rule kinds `_pattern` cycles through."""
POOL = 5_000
"""Distinct events per stream; `records` repeats them with fresh ids beyond that."""


def _types(rules: int) -> int:
    """Event types of a manifest of `rules` rules: two rules per type."""
    return max(1, rules // 2)


def _parts(index: int) -> tuple[str, str, str]:
    """Domain, entity and action of event type `index` (500 distinct ones)."""
    return (
        _DOMAINS[index % len(_DOMAINS)],
        _ENTITIES[(index // len(_DOMAINS)) % len(_ENTITIES)],
        _ACTIONS[(index // (len(_DOMAINS) * len(_ENTITIES))) % len(_ACTIONS)],
    )


def _type(index: int) -> str:
    domain, entity, action = _parts(index)
    return f"com.example.{domain}.{entity}.{action}"


def _source_prefix(index: int) -> str:
    domain, entity, _ = _parts(index)
    return f"//{domain}.example.com/{entity}/"


def _pattern(kind: int, home: int) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The pattern and tag selector of a rule of `kind` about event type `home`."""
    exact = {"type": [_type(home)]}
    or_branches = [{"data": {"priority": ["high"]}}, {"data": {"amount": [{"numeric": [">", 100]}]}}]
    patterns: tuple[dict[str, Any], ...] = (
        exact,
        {"source": [{"prefix": _source_prefix(home)}], "type": [{"suffix": f".{_parts(home)[2]}"}]},
        {**exact, "data": {"amount": [{"numeric": [">=", 20, "<", 900]}]}},
        {**exact, "data": {"document": {"name": [{"suffix": ".pdf"}, {"suffix": ".csv"}]}}},
        {**exact, "$or": or_branches},
        {**exact, "data": {"status": [{"anything-but": ["cancelled", "test"]}]}},
        exact,
    )
    tags = {"any": ["priority", "vip", "eu"], "none": ["test"]} if kind == len(patterns) - 1 else {}
    return patterns[kind], tags


def manifest_document(rules: int) -> dict[str, Any]:
    """The manifest of `rules` rules as a YAML document would hold it (no prefix)."""
    types = _types(rules)
    rule_docs: list[dict[str, Any]] = []
    for index in range(rules):
        pattern, tags = _pattern(index % _KINDS, index % types)
        targets = [FUNCTIONS[index % len(FUNCTIONS)]]
        if index % 9 == 4:  # a few rules feed two functions
            targets.append("audit" if targets[0] != "audit" else "analytics")
        rule: dict[str, Any] = {"name": f"rule-{index:04d}", "pattern": pattern, "targets": targets}
        if tags:
            rule["tags"] = tags
        rule_docs.append(rule)
    no_destinations = {"on_success": "none", "on_failure": "none"}
    return {
        "functions": {
            name: {"handler": f"handlers:{name}", "destinations": no_destinations} for name in FUNCTIONS
        },
        "rules": rule_docs,
    }


def manifest(rules: int, prefix: str) -> Manifest:
    """The validated manifest of `rules` rules, its topics under `prefix`."""
    return parse(manifest_document(rules), prefix=prefix)


def _data(rng: random.Random, entity: str, seq: int) -> dict[str, Any]:
    items = [
        {
            "sku": f"SKU-{rng.randrange(100_000):05d}",
            "qty": rng.randint(1, 5),
            "price": rng.randint(100, 9_999) / 100,
        }
        for _ in range(rng.randint(1, 3))
    ]
    return {
        "id": f"{entity}-{seq:08d}",
        "status": rng.choice(_STATUSES),
        "amount": rng.randint(100, 100_000) / 100,
        "currency": rng.choice(("EUR", "USD", "GBP")),
        "country": rng.choice(("DE", "FR", "US", "GB", "IN", "BR")),
        "priority": rng.choice(("low", "normal", "high")),
        "customer": {
            "id": f"cus-{rng.randrange(1_000_000):06d}",
            "tier": rng.choice(("free", "silver", "gold")),
        },
        "document": {
            "name": f"{entity}-{seq}.{rng.choice(('pdf', 'csv', 'json'))}",
            "bytes": rng.randrange(1 << 20),
        },
        "items": items,
    }


def events(rules: int, count: int) -> Iterator[CloudEvent]:
    """The first `count` events of the stream for a manifest of `rules` rules."""
    rng = random.Random(rules)
    types = _types(rules)
    for seq in range(count):
        unrouted = rng.random() < 0.1
        index = rng.randrange(types)
        domain, entity, _ = _parts(index)
        tags = ",".join(rng.sample(_TAGS, rng.randint(0, 2)))
        extensions = {"tags": tags} if tags else {}
        data = _data(rng, entity, seq)
        yield CloudEvent.create(
            id=f"{rules}-{seq:09d}",
            source=f"//{domain}.example.com/{entity}/{rng.choice(_REGIONS)}",
            type=_UNROUTED if unrouted else _type(index),
            time=f"2026-11-23T15:{seq // 60 % 60:02d}:{seq % 60:02d}Z",
            subject=str(data["customer"]["id"]),
            extensions=extensions,
            data=data,
        )


def records(rules: int, count: int) -> list[Record]:
    """`count` binary-mode Kafka records (`bus.kafka_binding.to_record`) of the stream's events.

    Past the first `POOL` events the stream repeats with fresh ids: generating an event costs
    about 60 µs, more than the raw loop spends on it.
    """
    distinct = [to_record(event) for event in events(rules, min(count, POOL))]
    repeated = (
        _with_id(distinct[seq % POOL], f"{rules}-{seq:09d}".encode()) for seq in range(len(distinct), count)
    )
    return [*distinct, *repeated]


def _with_id(record: Record, event_id: bytes) -> Record:
    headers = tuple((name, event_id if name == "ce_id" else value) for name, value in record.headers)
    return Record(record.key, record.value, headers)

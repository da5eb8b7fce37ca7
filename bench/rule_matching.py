"""`python -m bench.rule_matching [--rules 10,100,1000] [--events N]`: linear matching against RuleIndex.

Builds realistic rule sets (exact `type`, `source` prefixes, `data` fields with numeric and suffix,
`$or`, `anything-but`, tag selectors), checks that `RuleIndex.matching` returns what
`bus.routing.matching_rules` returns for every event, then times both. Prints one JSON line per rule
count: mean µs per event for each (the best of `--rounds` rounds, taken in turns so that a busy
neighbour on a shared machine slows both alike) and their ratio. No broker.

The vocabulary grows with the rules, one domain of 20 event types per 20 rules, as a deployment with
more rules has more event types: an event matches about the same number of rules at any size. With a
fixed vocabulary the matches per event, and so the pattern checks no index can skip, would grow with
the rules.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bus.patterns import compile
from bus.routing import Rule, TagSelector, matching_rules
from bus.rule_index import RuleIndex

__all__ = ["SHAPES", "Vocabulary", "build_events", "build_rules", "main", "measure"]

_DOMAINS = (
    "orders",
    "payments",
    "media",
    "users",
    "shipping",
    "inventory",
    "billing",
    "search",
    "auth",
    "ops",
)
_ENTITIES = ("item", "invoice", "object", "account", "parcel")
_VERBS = ("created", "updated", "deleted", "failed")
_SERVICES = ("api", "worker", "cron", "edge")
KINDS = ("photo", "video", "pdf", "csv", "audio")
SUFFIXES = (".jpg", ".png", ".mp4", ".pdf", ".csv")
STATUSES = ("ok", "retry", "failed")
TAG_SETS = ("prod,eu", "prod,us", "staging,eu", "prod,apac", "")


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The domains of a workload; each has 20 event types (5 entities x 4 verbs)."""

    domains: tuple[str, ...]

    @classmethod
    def for_rules(cls, n_rules: int) -> Vocabulary:
        """One domain per 20 rules, at least two."""
        count = max(2, n_rules // 20)
        return cls(tuple(f"{_DOMAINS[i % len(_DOMAINS)]}{i // len(_DOMAINS) or ''}" for i in range(count)))

    def types(self, domain: str) -> list[str]:
        """The event types of a domain."""
        return [f"com.acme.{domain}.{entity}.{verb}.v1" for entity in _ENTITIES for verb in _VERBS]


Shape = Callable[[random.Random, Vocabulary, str], dict[str, Any]]
"""A pattern maker: (random source, vocabulary, a domain) -> pattern."""


def _types(rng: random.Random, words: Vocabulary, domain: str) -> dict[str, Any]:
    return {"type": rng.sample(words.types(domain), rng.choice((1, 1, 2)))}


def _source_prefix(rng: random.Random, _: Vocabulary, domain: str) -> dict[str, Any]:
    return {"source": [{"prefix": f"/acme/{domain}/"}], "type": [{"suffix": f".{rng.choice(_VERBS)}.v1"}]}


def _data_fields(rng: random.Random, words: Vocabulary, domain: str) -> dict[str, Any]:
    size = rng.choice((0, 1_000, 1_000_000))
    data = {"size": [{"numeric": [">", size]}], "key": [{"suffix": rng.choice(SUFFIXES)}]}
    return {"type": [rng.choice(words.types(domain))], "data": data}


def _or(rng: random.Random, words: Vocabulary, domain: str) -> dict[str, Any]:
    first, second = rng.sample(words.types(domain), 2)
    return {"$or": [{"type": [first]}, {"type": [second], "data": {"kind": [rng.choice(KINDS)]}}]}


def _anything_but_type(rng: random.Random, words: Vocabulary, domain: str) -> dict[str, Any]:
    excluded = rng.sample(words.types(domain), 2)
    return {"source": [{"prefix": f"/acme/{domain}/"}], "type": [{"anything-but": excluded}]}


def _anything_but_data(_: random.Random, __: Vocabulary, ___: str) -> dict[str, Any]:
    return {"data": {"status": [{"anything-but": ["ok", "retry"]}], "size": [{"numeric": [">", 10_000_000]}]}}


def _data_kind(rng: random.Random, _: Vocabulary, domain: str) -> dict[str, Any]:
    data = {"kind": [rng.choice(KINDS)], "status": [rng.choice(STATUSES)]}
    return {"source": [{"prefix": f"/acme/{domain}/"}], "data": data}


SHAPES: dict[str, tuple[int, Shape]] = {
    "type": (35, _types),
    "source-prefix": (12, _source_prefix),
    "data-fields": (15, _data_fields),
    "or": (10, _or),
    "anything-but-type": (8, _anything_but_type),
    "anything-but-data": (3, _anything_but_data),
    "tags": (10, _types),
    "data-kind": (7, _data_kind),
}
"""Rule shapes: (weight in percent, pattern maker); `tags` rules also get a tag selector."""


def build_rules(n_rules: int, seed: int = 1) -> list[Rule]:
    """`n_rules` rules of the shapes in SHAPES over `Vocabulary.for_rules(n_rules)`; seeded."""
    rng = random.Random(seed)
    words = Vocabulary.for_rules(n_rules)
    shapes = rng.choices(list(SHAPES), weights=[weight for weight, _ in SHAPES.values()], k=n_rules)
    rules: list[Rule] = []
    for number, shape in enumerate(shapes):
        tags = TagSelector()
        if shape == "tags":
            tags = rng.choice(
                (TagSelector(all=frozenset({"prod"})), TagSelector(any=frozenset({"eu", "us"})))
            )
        pattern = compile(SHAPES[shape][1](rng, words, rng.choice(words.domains)))
        rules.append(Rule(name=f"{shape}-{number}", pattern=pattern, targets=(f"fn-{number}",), tags=tags))
    return rules


def build_events(count: int, n_rules: int, seed: int = 2) -> list[dict[str, Any]]:
    """`count` CloudEvents (JSON format) over the rules' vocabulary; one in ten of a type no rule names."""
    rng = random.Random(seed)
    words = Vocabulary.for_rules(n_rules)
    events: list[dict[str, Any]] = []
    for number in range(count):
        domain = rng.choice(words.domains)
        kind = rng.choice(KINDS)
        event_type = rng.choice(words.types(domain)) if number % 10 else f"com.acme.{domain}.audit.read.v1"
        events.append(
            {
                "specversion": "1.0",
                "id": f"evt-{number}",
                "source": f"/acme/{domain}/{rng.choice(_SERVICES)}",
                "type": event_type,
                "subject": f"{kind}/{number}",
                "time": "2026-01-31T09:30:00Z",
                "tags": rng.choice(TAG_SETS),
                "datacontenttype": "application/json",
                "data": {
                    "kind": kind,
                    "size": rng.choice((10, 5_000, 2_000_000, 50_000_000)),
                    "key": f"uploads/{number}{rng.choice(SUFFIXES)}",
                    "status": rng.choice(STATUSES),
                },
            }
        )
    return events


def _seconds(match: Callable[[Mapping[str, Any]], list[Rule]], events: Sequence[Mapping[str, Any]]) -> float:
    started = time.perf_counter()
    for event in events:
        match(event)
    return time.perf_counter() - started


def measure(n_rules: int, events: int, rounds: int = 5) -> dict[str, Any]:
    """Mean µs per event of `matching_rules` and of `RuleIndex.matching` over `n_rules` rules.

    Raises AssertionError when the two disagree on any event (a bench of a wrong index is worthless).
    """
    rules = build_rules(n_rules)
    sample = build_events(events, n_rules)
    started = time.perf_counter()
    index = RuleIndex(rules)
    build_ms = (time.perf_counter() - started) * 1e3
    candidates = matches = 0
    for event in sample:
        expected = matching_rules(event, rules)
        if index.matching(event) != expected:
            raise AssertionError(f"RuleIndex disagrees with matching_rules on {json.dumps(event)}")
        candidates += len(index.candidates(event))
        matches += len(expected)

    def linear(event: Mapping[str, Any]) -> list[Rule]:
        return matching_rules(event, rules)

    best_linear = best_index = float("inf")
    for _ in range(rounds):
        best_linear = min(best_linear, _seconds(linear, sample))
        best_index = min(best_index, _seconds(index.matching, sample))
    linear_us = best_linear / events * 1e6
    index_us = best_index / events * 1e6
    return {
        "bench": "rule_matching",
        "rules": n_rules,
        "events": events,
        "rounds": rounds,
        "linear_us": round(linear_us, 2),
        "index_us": round(index_us, 2),
        "ratio": round(linear_us / index_us, 1),
        "unanchored_rules": len(index.unanchored),
        "mean_candidates": round(candidates / events, 1),
        "mean_matches": round(matches / events, 2),
        "index_build_ms": round(build_ms, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure each rule count and print one JSON line per count."""
    parser = argparse.ArgumentParser(prog="python -m bench.rule_matching", description=__doc__)
    parser.add_argument("--rules", default="10,100,1000", help="comma-separated rule counts")
    parser.add_argument("--events", type=int, default=2_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure; the fastest counts")
    args = parser.parse_args(argv)
    for count in (int(text) for text in args.rules.split(",")):
        print(json.dumps(measure(count, args.events, args.rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

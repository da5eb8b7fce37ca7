"""Rules that name only CloudEvent attributes are decided from the Kafka headers (issue 4, item 3)."""

from __future__ import annotations

from dataclasses import dataclass

from bus import naming
from bus.manifest import Manifest, parse
from bus.router import Router

HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"1"),
    ("ce_source", b"s"),
    ("ce_type", b"demo"),
    ("content-type", b"application/json"),
]


@dataclass
class Message:
    """A consumed record as the router sees it (the loop's InMessage)."""

    value_: bytes

    def topic(self) -> str:
        return "p.ingress"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self.value_

    def headers(self) -> list[tuple[str, bytes]]:
        return list(HEADERS)

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def manifest(pattern: dict[str, object]) -> Manifest:
    return parse(
        {
            "prefix": "p",
            "functions": {"echo": {"handler": "handlers:echo"}},
            "rules": [{"name": "r", "pattern": pattern, "targets": ["echo"]}],
        }
    )


def test_attribute_rules_route_without_decoding_the_value() -> None:
    """With rules on attributes only, a value that is not even JSON is forwarded unchanged."""
    (output,) = Router(manifest({"type": ["demo"]}))([Message(b"not json {")])
    assert output.topic == naming.function_topic("p", "echo")
    assert output.record.value == b"not json {"


def test_a_rule_on_data_decodes_the_value_and_refuses_what_is_not_json() -> None:
    """Once a rule names `data`, the value is decoded: invalid JSON goes to the router DLQ."""
    (output,) = Router(manifest({"data": {"a": [1]}}))([Message(b"not json {")])
    assert output.topic == naming.router_dlq_topic("p")
    (routed,) = Router(manifest({"data": {"a": [1]}}))([Message(b'{"a": 1}')])
    assert routed.topic == naming.function_topic("p", "echo")

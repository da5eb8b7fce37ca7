"""Every topic, group and transactional id comes from one place (bus.naming)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bus import naming


@pytest.mark.parametrize("prefix", ["bus", "acme-prod", naming.DEFAULT_PREFIX])
def test_prefix_wide_names(prefix: str) -> None:
    """The ingress topic, the router group, the router DLQ and its redrive markers live under the prefix."""
    assert naming.ingress_topic(prefix) == f"{prefix}.ingress"
    assert naming.router_group(prefix) == f"{prefix}.router"
    assert naming.router_dlq_topic(prefix) == f"{prefix}.router.dlq"
    assert naming.router_dlq_redriven_topic(prefix) == f"{prefix}.router.dlq.redriven"


@pytest.mark.parametrize(
    ("name_of", "expected"),
    [
        (naming.function_topic, "acme.fn.thumbnail"),
        (naming.result_topic, "acme.fn.thumbnail.results"),
        (naming.error_topic, "acme.fn.thumbnail.errors"),
        (naming.dlq_topic, "acme.fn.thumbnail.dlq"),
        (naming.function_group, "acme.fn.thumbnail"),
    ],
)
def test_function_names(name_of: Callable[[str, str], str], expected: str) -> None:
    """A function's topic, destinations, DLQ and consumer group follow SPEC §6 and §7."""
    assert name_of("acme", "thumbnail") == expected


def test_default_prefix_is_bus() -> None:
    """With no prefix configured, names start with `bus`."""
    assert naming.DEFAULT_PREFIX == "bus"


def test_transactional_id_is_group_scoped() -> None:
    """A transactional id is the group plus the process instance."""
    assert naming.transactional_id("bus.fn.hello", "a1b2") == "bus.fn.hello.tx.a1b2"


@pytest.mark.parametrize("name", ["bus", "a", "x" * 100, "acme_prod-2", "UPPER"])
def test_check_name_accepts_one_topic_segment(name: str) -> None:
    """Letters, digits, '_' and '-' up to 100 characters make a valid prefix or function name."""
    assert naming.check_name("prefix", name) == name


@pytest.mark.parametrize(
    "name", ["a.b", "", "x" * 101, "bus\n", "with space", "\u00fcber", "slash/name", "bus.fn"]
)
def test_check_name_refuses_what_cannot_be_one_topic_segment(name: str) -> None:
    """Dots, empty names, over-long names, whitespace and non-ASCII are refused, naming the kind."""
    with pytest.raises(ValueError, match=r"^function .* must be 1-100 characters"):
        naming.check_name("function", name)


@pytest.mark.parametrize(
    ("topic", "prefix"),
    [
        ("acme.ingress", "acme"),
        ("acme-prod.fn.thumbs.results", "acme-prod"),
        ("acme.fn.thumbs.retry.2", "acme"),
        ("acme.router.dlq", "acme"),
        ("acme.replies.gw-1", "acme"),
        ("acme.schemas", "acme"),
        ("orders.processed", None),
        ("acme.fn.", None),
        ("ingress", None),
        ("a.b.ingress", None),
    ],
)
def test_the_prefix_of_a_topic_bus_names(topic: str, prefix: str | None) -> None:
    """`bus tail` reads a topic with its own prefix's schemas: `<prefix>.` then one of bus's topic names."""
    assert naming.prefix_of(topic) == prefix

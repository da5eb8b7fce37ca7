"""The retry topics a worker group reads: its policy's, and those an earlier policy left (pure)."""

from __future__ import annotations

import pytest

from bus import naming
from bus.manifest import Destinations, Function, RetryPolicy
from bus.topology import retry_topics


def _function(attempts: int, backoff: tuple[float, ...]) -> Function:
    return Function(
        name="f",
        handler="h:f",
        retry=RetryPolicy(attempts=attempts, backoff=backoff),
        destinations=Destinations(on_success=None, on_failure=None),
    )


@pytest.mark.parametrize("level", [1, 2, 10, 123])
def test_retry_level_reads_back_the_level_of_a_retry_topic(level: int) -> None:
    """`retry_level` is the inverse of `retry_topic`."""
    assert naming.retry_level("p", "f", naming.retry_topic("p", "f", level)) == level


@pytest.mark.parametrize(
    "topic",
    [
        "p.fn.f",
        "p.fn.f.results",
        "p.fn.f.dlq",
        "p.fn.f.retry.",
        "p.fn.f.retry.0",
        "p.fn.f.retry.01",
        "p.fn.f.retry.-1",
        "p.fn.f.retry.x",
        "p.fn.f.retry.\u0661",  # an Arabic-Indic digit: str.isdigit, not a level bus writes
        "p.fn.ff.retry.1",
        "p.fn.g.retry.1",
        "q.fn.f.retry.1",
    ],
)
def test_retry_level_is_none_for_other_topics(topic: str) -> None:
    """Other topics of the function, other functions' and other prefixes' retry topics have no level."""
    assert naming.retry_level("p", "f", topic) is None


def test_a_group_reads_its_policys_retry_topics_by_level() -> None:
    """With no other topic on the broker, the policy's levels: one per backoff step it uses."""
    assert retry_topics("p", _function(5, (1.0, 10.0)), []) == ["p.fn.f.retry.1", "p.fn.f.retry.2"]


def test_retry_topics_an_earlier_policy_left_are_read_too() -> None:
    """A policy changed to fewer levels still reads the levels it dropped: retries wait there."""
    existing = [
        "p.fn.f",
        "p.fn.f.retry.1",
        "p.fn.f.retry.3",
        "p.fn.f.retry.2",
        "p.fn.g.retry.4",
        "p.fn.f.dlq",
    ]
    assert retry_topics("p", _function(2, (1.0,)), existing) == [
        "p.fn.f.retry.1",
        "p.fn.f.retry.2",
        "p.fn.f.retry.3",
    ]


def test_a_policy_without_retries_reads_the_retry_topics_left_on_the_broker() -> None:
    """`attempts: 1` needs no retry topic, but the retries an earlier policy scheduled are still read."""
    assert retry_topics("p", _function(1, (1.0,)), []) == []
    assert retry_topics("p", _function(1, (1.0,)), ["p.fn.f.retry.2"]) == ["p.fn.f.retry.2"]

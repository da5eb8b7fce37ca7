"""The dashboard: history ring buffers, decision runs, the `/api/state` JSON, the page, its port."""

from __future__ import annotations

import math
import re
import socket

import orjson
import pytest

import bus.dashboard
from bus.dashboard import Board, Decisions, History, Point, epoch
from bus.dashboard_page import COLORS, PAGE
from bus.dashboard_server import DEFAULT_PORT, Dashboard, local_host, pick_port
from bus.errors import BusError
from bus.manifest import parse
from bus.settings import KafkaSettings
from bus.status import GroupSample, PartitionSample, ScalingDecision, lag_seconds

AT = "2026-01-31T09:30:00.000Z"
WALL = 1_769_851_800.0
"""AT in seconds since the epoch."""


def sample(function: str, *lags: int, retry: int = 0, rate: float | None = None) -> GroupSample:
    """A sample of `function`: one function-topic partition per lag, and one retry partition."""
    topic = f"p.fn.{function}"

    def part(name: str, number: int, lag: int) -> PartitionSample:
        return PartitionSample(
            topic=name, partition=number, committed=0, start=0, end=lag, position=0, lag=lag,
            consume_rate=rate, produce_rate=rate, lag_seconds=lag_seconds(lag, rate), oldest_age=None,
        )  # fmt: skip

    partitions = [part(topic, n, lag) for n, lag in enumerate(lags)]
    partitions.append(part(f"{topic}.retry.1", 0, retry))
    return GroupSample(
        function=function, group=topic, topic=topic, at=1.0, wall=WALL, partitions=tuple(partitions)
    )


def decision(desired: int, actual: int, reason: str, *, at: str = AT, function: str = "a") -> ScalingDecision:
    return ScalingDecision(
        function=function, desired=desired, actual=actual, reason=reason, at=at, total_lag=7
    )


def point(wall: float, lag: int = 0) -> Point:
    return Point(wall=wall, lag=lag, retry_lag=0, desired=None, actual=None, events_in=None, events_out=None)


def test_epoch_reads_rfc3339_times_with_a_zone_only() -> None:
    """`Z` and offsets are read; a time without a zone or not a time at all gives None."""
    assert epoch(AT) == WALL
    assert epoch("2026-01-31T10:30:00.000+01:00") == WALL
    assert epoch("2026-01-31T09:30:00") is None
    assert epoch("yesterday") is None
    assert epoch(None) is None


def test_history_keeps_the_newest_points_oldest_first() -> None:
    """A full history drops its oldest point for each new one."""
    history = History(3)
    for n in range(5):
        history.add(point(float(n), lag=n))
    assert [p.lag for p in history] == [2, 3, 4]
    assert len(history) == 3


def test_history_columns_are_one_list_per_field() -> None:
    """The JSON of a history is columnar, with rates rounded and infinities as null."""
    history = History(4)
    history.add(point(1.23456))
    history.add(
        Point(wall=2.0, lag=5, retry_lag=1, desired=2, actual=1, events_in=1 / 3, events_out=math.inf)
    )
    assert history.columns() == {
        "t": [1.235, 2.0],
        "lag": [0, 5],
        "retry_lag": [0, 1],
        "desired": [None, 2],
        "actual": [None, 1],
        "events_in": [None, 0.333],
        "events_out": [None, None],
    }


def test_a_history_holds_at_least_one_point() -> None:
    """Size 0 is a mistake, said at once."""
    with pytest.raises(ValueError, match="at least 1 point"):
        History(0)


def test_repeated_decisions_collapse_into_one_entry() -> None:
    """Heartbeats with the same replicas count as repeats of the decision that started the run."""
    decisions = Decisions(10)
    decisions.add(decision(3, 1, "scale out 1->3: lag 250", at="2026-01-31T09:30:00.000Z"))
    decisions.add(decision(3, 1, "hold 3: lag 250", at="2026-01-31T09:30:10.000Z"))
    decisions.add(decision(3, 3, "hold 3: lag 200", at="2026-01-31T09:30:11.000Z"))
    first, second = decisions
    assert (first.desired, first.actual, first.reason, first.repeats) == (3, 1, "scale out 1->3: lag 250", 2)
    assert (first.at, first.last_at, first.last_reason) == (AT, "2026-01-31T09:30:10.000Z", "hold 3: lag 250")
    assert (second.desired, second.actual, second.repeats) == (3, 3, 1)
    assert decisions.latest is not None
    assert decisions.latest.reason == "hold 3: lag 200"


def test_only_the_last_decision_entries_are_kept() -> None:
    """The table keeps its newest `size` runs."""
    decisions = Decisions(2)
    for n in range(1, 5):
        decisions.add(decision(n, n, f"run {n}"))
    assert [entry.reason for entry in decisions] == ["run 3", "run 4"]


def test_a_board_keeps_retention_over_interval_points() -> None:
    """One hour at 2 s is 1,800 points per function; the oldest go first."""
    board = Board.keeping(["a"], prefix="p", interval=2.0, retention=3600)
    for n in range(1805):
        board.record({"a": sample("a", n)}, {}, wall=WALL + 2 * n)
    history = board.to_json()["functions"]["a"]["history"]
    assert len(history["t"]) == 1800
    assert history["lag"][0] == 5
    assert history["t"][-1] == WALL + 2 * 1804


def test_a_sample_plots_lag_retries_and_the_current_decision() -> None:
    """Each point has the function topic's lag, its retries and the replicas of the latest decision."""
    board = Board(["a", "b"], prefix="p", interval=1.0, points=10)
    board.decided([decision(2, 1, "scale out 1->2: lag 150")])
    board.record({"a": sample("a", 100, 50, retry=4, rate=10.0), "b": sample("b")}, {"a": 3}, wall=WALL + 1)
    state = board.to_json()
    a = state["functions"]["a"]
    assert a["history"] == {
        "t": [WALL + 1], "lag": [150], "retry_lag": [4], "desired": [2], "actual": [1],
        "events_in": [20.0], "events_out": [20.0],
    }  # fmt: skip
    assert a["dlq"] == 3
    assert (a["status"]["lag"], a["status"]["replicas_desired"], a["status"]["scaling_reason"]) == (
        150, 2, "scale out 1->2: lag 150",
    )  # fmt: skip
    assert a["latest_decision"] == {"at": AT, "t": WALL, "reason": "scale out 1->2: lag 150"}
    b = state["functions"]["b"]
    assert (b["dlq"], b["history"]["desired"], b["decisions"], b["latest_decision"]) == (
        None,
        [None],
        [],
        None,
    )


def test_a_silent_supervisor_leaves_the_replicas_unknown() -> None:
    """A decision older than `stale_after` seconds is kept in the table but not plotted as replicas."""
    board = Board(["a"], prefix="p", interval=1.0, points=10, stale_after=30)
    board.decided([decision(2, 2, "hold 2")])
    board.record({"a": sample("a", 1)}, {}, wall=WALL + 30)
    board.record({"a": sample("a", 1)}, {}, wall=WALL + 31)
    a = board.to_json()["functions"]["a"]
    assert (a["history"]["desired"], a["history"]["actual"]) == ([2, None], [2, None])
    assert a["status"]["replicas_desired"] is None
    assert [d["reason"] for d in a["decisions"]] == ["hold 2"]


def test_decisions_are_listed_newest_first_and_others_ignored() -> None:
    """The table reads top down from the newest run; decisions of functions not shown are dropped."""
    board = Board(["a"], prefix="p", interval=1.0, points=10)
    board.decided(
        [
            decision(1, 0, "scale out 0->1", at="2026-01-31T09:30:00.000Z"),
            decision(9, 9, "elsewhere", function="zz"),
            decision(2, 1, "scale out 1->2", at="2026-01-31T09:30:05.000Z"),
        ]
    )
    [newest, oldest] = board.to_json()["functions"]["a"]["decisions"]
    assert newest == {
        "at": "2026-01-31T09:30:05.000Z", "t": WALL + 5, "desired": 2, "actual": 1,
        "reason": "scale out 1->2", "total_lag": 7, "repeats": 1,
        "last_at": "2026-01-31T09:30:05.000Z", "last_reason": "scale out 1->2",
    }  # fmt: skip
    assert oldest["reason"] == "scale out 0->1"


def test_a_failed_sample_is_shown_until_one_succeeds() -> None:
    """The error of the last sample is in the state; the next good sample clears it."""
    board = Board(["a"], prefix="p", interval=2.0, points=10)
    assert board.to_json() == {
        "prefix": "p",
        "interval": 2.0,
        "updated": None,
        "error": None,
        "functions": {
            "a": {
                "status": None,
                "dlq": None,
                "history": History(1).columns(),
                "decisions": [],
                "latest_decision": None,
            }
        },
    }
    board.failed("cannot reach Kafka at localhost:1")
    assert board.to_json()["error"] == "cannot reach Kafka at localhost:1"
    board.record({"a": sample("a")}, {"a": 0}, wall=WALL)
    state = board.to_json()
    assert (state["error"], state["updated"]) == (None, WALL)


def test_the_state_is_json_even_when_stalled() -> None:
    """A stalled group (infinite lag time) serialises: null with `stalled` true."""
    board = Board(["a"], prefix="p", interval=1.0, points=10)
    board.record({"a": sample("a", 5, rate=0.0)}, {}, wall=WALL)
    status = orjson.loads(orjson.dumps(board.to_json()))["functions"]["a"]["status"]
    assert (status["lag_seconds"], status["stalled"]) == (None, True)


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No script, style, image or font from another origin: the page works offline."""
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", PAGE)
    assert "@import" not in PAGE
    assert not re.search(r"url\(\s*[\"']?(https?:)?//", PAGE)
    assert re.search(r"<script>.+</script>", PAGE, re.S)
    assert 'fetch("api/state"' in PAGE


def test_the_page_draws_every_series_in_its_colour() -> None:
    """Each history column the board sends has its colour on the page (the screenshot test looks for them)."""
    columns = set(History(1).columns()) - {"t"}
    assert set(COLORS) == columns
    for colour in COLORS.values():
        assert colour in PAGE


def test_public_api() -> None:
    """What `bus.dashboard` exports."""
    assert set(bus.dashboard.__all__) == {
        "DECISIONS_KEPT", "RETENTION", "STALE_AFTER", "Board", "DecisionEntry", "Decisions", "History",
        "Point", "epoch",
    }  # fmt: skip


def test_a_port_in_use_is_refused_naming_it() -> None:
    """The dashboard binds at construction (before any Kafka client): a taken port fails at once."""
    manifest = parse({"prefix": "p", "functions": {"a": {"handler": "h:f"}}})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BusError, match=rf"cannot listen on 127\.0\.0\.1:{port} .*choose another port"):
            Dashboard(KafkaSettings(bootstrap_servers="127.0.0.1:1"), manifest, port=port)


def test_the_default_port_is_used_when_free_else_any() -> None:
    """`bus up` asks for 8089, or any free port (0) when something listens there; a chosen port stays."""
    assert pick_port(9999) == 9999
    assert pick_port(None) in (DEFAULT_PORT, 0)
    if pick_port(None) == DEFAULT_PORT:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", DEFAULT_PORT))
            taken.listen()
            assert pick_port(None) == 0


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1:8089", True),
        ("localhost:8089", True),
        ("LOCALHOST", True),
        ("[::1]:8089", True),
        ("127.0.0.2", True),
        ("evil.example:8089", False),
        ("192.168.1.5:8089", False),
        ("", False),
        ("[::1", False),
    ],
)
def test_only_localhost_names_reach_a_loopback_dashboard(host: str, local: bool) -> None:
    """A page whose name was rebound to 127.0.0.1 sends its own Host: refused (DNS rebinding)."""
    assert local_host(host) is local

"""`bus up` keeps the broker it started: one that exited is started again on its port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bus import localkafka, manifest
from bus.stack import Stack

MANIFEST = "prefix: p\nfunctions:\n  f: {handler: h:f}\n"


def _stack(tmp_path: Path, *, started: bool) -> Stack:
    path = tmp_path / "bus.yaml"
    path.write_text(MANIFEST)
    stack = Stack(path, manifest.read(path), http_port=8080, environ={"BUS_HOME": str(tmp_path / "home")})
    stack._started_kafka = started
    stack._kafka_port = 19_099
    return stack


def test_a_broker_the_stack_started_is_started_again_on_its_port_when_it_exited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(localkafka, "status", lambda data_dir: None)
    monkeypatch.setattr(localkafka, "start", lambda data_dir, **kwargs: calls.append(kwargs))
    _stack(tmp_path, started=True)._watch_kafka()
    assert [call["port"] for call in calls] == [19_099]


def test_a_running_broker_or_one_the_stack_did_not_start_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(localkafka, "start", lambda data_dir, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(localkafka, "status", lambda data_dir: object())
    _stack(tmp_path, started=True)._watch_kafka()
    monkeypatch.setattr(localkafka, "status", lambda data_dir: None)
    _stack(tmp_path, started=False)._watch_kafka()  # the user's own broker: not ours to restart
    assert calls == []

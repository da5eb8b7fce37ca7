"""`bus flows status [FLOW] [--json] [-f bus.yaml]`: each run of each flow, from its steps' events.

Reads the success and failure destinations of every step's function (from their start, within
retention) and prints one line per run: its id, state (done, running, failed), the steps done and
pending (a step whose function publishes no results is `unknown`, never pending), and the failed
step's error. Exit status: 0 done; 1 Kafka failed; 2 no such flow or manifest.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson

from bus.errors import ConfigError, InvalidEvent, KafkaError, ManifestError
from bus.events import CloudEvent
from bus.flow_runs import Run, runs, untracked_steps
from bus.flows import Flow
from bus.kafka.control_store import manifest_in_force
from bus.kafka.reader import read_topic
from bus.kafka_binding import from_record
from bus.manifest import Manifest
from bus.settings import KafkaSettings, load_kafka

__all__ = ["add_commands", "run"]

IDLE = 1.0
"""Seconds without a record after which a destination topic counts as read to its end."""


def add_commands(sub: Any) -> None:
    """Register `flows status` on the top-level subparsers."""
    flows = sub.add_parser("flows", help="the runs of the manifest's flows").add_subparsers(
        dest="flows_command", required=True
    )
    status = flows.add_parser("status", help="each run of each flow: done, running or failed, step by step")
    status.add_argument("flow", nargs="?", help="only this flow")
    status.add_argument("--json", action="store_true", help="one JSON object per run")
    status.add_argument("-f", "--file", type=Path, help="the manifest (default: the applied one)")


def run(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO | None = None) -> int:
    """`bus flows status` (printing to `out`, default stdout)."""
    out = out or sys.stdout
    try:
        parsed = manifest_in_force(environ, args.file, args.prefix)
        flows = _chosen(parsed, args.flow)
    except (ConfigError, ManifestError) as exc:
        print(f"bus flows: {exc}", file=sys.stderr)
        return 2
    settings = load_kafka(environ, prefix=parsed.prefix)
    for flow in flows:
        found = runs(flow, _events(settings, parsed, flow), untracked=untracked_steps(flow, parsed.functions))
        for one in found:
            line = (
                orjson.dumps({"flow": flow.name, **one.to_json()}).decode() if args.json else _line(flow, one)
            )
            print(line, file=out)
        if not args.json:
            print(f"{flow.name}: {len(found)} runs", file=sys.stderr)
    return 0


def _chosen(parsed: Manifest, name: str | None) -> list[Flow]:
    if name is None:
        return list(parsed.flows)
    chosen = [flow for flow in parsed.flows if flow.name == name]
    if not chosen:
        known = ", ".join(flow.name for flow in parsed.flows) or "none"
        raise ConfigError(f"no flow {name!r} (flows: {known})")
    return chosen


def _events(settings: KafkaSettings, parsed: Manifest, flow: Flow) -> list[CloudEvent]:
    """The result and error events of every step's function (each topic read once)."""
    topics: dict[str, None] = {}
    for step in flow.steps.values():
        destinations = parsed.functions[step.function].destinations
        for topic in (destinations.on_success, destinations.on_failure):
            if topic is not None:
                topics[topic] = None
    events: list[CloudEvent] = []
    for topic in topics:
        try:
            for message in read_topic(settings, topic, idle_timeout=IDLE, timeout=60):
                try:
                    events.append(from_record(message.key(), message.value(), message.headers()))
                except InvalidEvent:
                    continue  # not a CloudEvent: not a step's
        except KafkaError as exc:
            if "does not exist" not in str(exc):
                raise
    return events


def _line(flow: Flow, one: Run) -> str:
    steps = " ".join(f"{name}:{_step_state(one, name)}" for name in flow.steps if _step_state(one, name))
    line = f"{flow.name}  {one.id}  {one.state}  {steps}"
    for name, error in one.failed.items():
        line += f"  [{name}: {error.get('error_type')}: {error.get('message')}]"
    return line


def _step_state(one: Run, name: str) -> str:
    """ok, FAILED, pending, unknown (due, but its function publishes no results) or ''."""
    if name in one.done:
        return "ok"
    if name in one.failed:
        return "FAILED"
    if name in one.pending:
        return "pending"
    return "unknown" if name in one.untracked else ""

"""The router's routing as a faust-streaming agent, measured on the router bench's workload.

`measure` runs `python -m bench.faust_router` in a child process (Faust owns its event loop,
signals and logging) and reads back what the agent did. The agent calls the same
bus.router.Router transform on each event and sends each output to its function topic, so the
routing work is the router's and the figure is what Faust costs around it. It runs with
Faust's defaults (at_least_once, aiokafka underneath, acks=all) but bus's 2 ms linger: input
events counted per second from the first event the agent sees to the last output the broker
acknowledged, or to the end of a time box when Faust is too slow to route the whole workload.

faust-streaming is a bench-only dependency (`pip install -e '.[bench]'`); without it `measure`
fails with that advice and the rest of the bench runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

from bench import routing_workload
from bench.broker import BenchKafka
from bench.router import BenchMessage, Workload
from bench.samples import Throughput
from bench.sizes import Sizes
from bus import naming
from bus.kafka_binding import Record

__all__ = ["installed_version", "main", "measure"]

_STARTUP = 60.0
"""Seconds the child may take to start, join its group and see its first event."""
_REPO = Path(__file__).resolve().parents[1]


def installed_version() -> str | None:
    """faust-streaming's version, or None when it is not installed."""
    try:
        return version("faust-streaming")
    except PackageNotFoundError:
        return None


def _time_box(sizes: Sizes) -> float:
    """Seconds the agent may route after its first event: Faust may be much slower than the Router
    whose speed sized the workload, and the figure is a rate, so it stops early rather than late."""
    return 2 * sizes.router_seconds


def measure(kafka: BenchKafka, sizes: Sizes, workload: Workload) -> Throughput:
    """Input events per second of a Faust agent routing `workload` with a fresh group."""
    if installed_version() is None:
        raise RuntimeError("faust-streaming is not installed: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory(prefix="bus-bench-faust-") as tmp:
        result = Path(tmp) / "result.json"
        log = Path(tmp) / "faust.log"
        command = [
            sys.executable,
            "-m",
            "bench.faust_router",
            f"--bootstrap={kafka.bootstrap}",
            f"--input={workload.topic}",
            f"--group={kafka.group(f'faust-r{workload.rules}')}",
            f"--prefix={workload.prefix}",
            f"--rules={workload.rules}",
            f"--total={workload.events}",
            f"--deadline={_time_box(sizes)}",
            f"--result={result}",
            f"--datadir={tmp}",
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
        }
        with log.open("wb") as out:
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=_REPO, env=env)
        try:
            deadline = time.monotonic() + _STARTUP + _time_box(sizes) + 10.0
            while not result.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                child.wait(timeout=15.0)  # the child stops itself once it has written the result
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if not result.exists():
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the Faust agent wrote no result (exit {child.returncode}): {tail}")
        done = orjson.loads(result.read_bytes())
    return Throughput(done["seen"], done["seconds"], workload.events)


@dataclass(slots=True)
class _Progress:
    """What the agent did so far; `finished` is set once every output of `total` events is acknowledged."""

    total: int
    finished: asyncio.Event
    first: float | None = None
    last: float | None = None
    seen: int = 0
    sent: int = 0
    acknowledged: int = 0

    def delivered(self, _: Any) -> None:
        self.acknowledged += 1
        self.check()

    def check(self) -> None:
        if self.seen >= self.total and self.acknowledged >= self.sent and not self.finished.is_set():
            self.last = time.monotonic()
            self.finished.set()


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    if raw is None:
        return ()
    items = raw.items() if isinstance(raw, Mapping) else raw
    return tuple((str(name), bytes(value)) for name, value in items)


def _write_result(path: Path, done: dict[str, Any]) -> None:
    """Write the result whole or not at all: `measure` reads it as soon as the name appears."""
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(orjson.dumps(done))
    partial.rename(path)


def _run(args: argparse.Namespace) -> None:
    """The Faust app: one agent routing `args.input` until `args.total` events are routed."""
    import faust

    from bus.router import Router

    manifest = routing_workload.manifest(args.rules, args.prefix)
    router = Router(manifest)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        datadir=args.datadir,
        web_enabled=False,
        topic_disable_leader=True,  # no extra `__assignor-__leader` topic: this app has one worker
        topic_allow_declare=False,  # bus created every topic, with its partitions
        consumer_auto_offset_reset="earliest",
        producer_linger=0.002,  # bus's linger.ms; acks are Faust's default, all, as bus's
    )
    source = app.topic(
        args.input, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    names = [naming.function_topic(args.prefix, f) for f in manifest.functions]
    names.append(naming.router_dlq_topic(args.prefix))
    targets = {name: app.topic(name, key_serializer="raw", value_serializer="raw") for name in names}
    progress = _Progress(args.total, asyncio.Event())

    async def route(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            if progress.first is None:
                progress.first = time.monotonic()
            record = Record(message.key, message.value, _headers(message.headers))
            inbound = BenchMessage(record, message.offset, topic=message.topic, partition=message.partition)
            for output in router([inbound]):
                progress.sent += 1
                await targets[output.topic].send(
                    key=output.record.key,
                    value=output.record.value,
                    headers=list(output.record.headers),
                    callback=progress.delivered,
                )
            progress.seen += 1
            progress.check()

    async def finish() -> None:
        while not progress.finished.is_set():
            if progress.first is not None and time.monotonic() - progress.first > args.deadline:
                break
            await asyncio.sleep(0.05)
        end = progress.last if progress.finished.is_set() else time.monotonic()
        seconds = end - progress.first if end is not None and progress.first is not None else 0.0
        done = {
            "seen": progress.seen,
            "seconds": seconds,
            "sent": progress.sent,
            "acknowledged": progress.acknowledged,
        }
        _write_result(args.result, done)  # after the clock stopped: its cost is not measured
        os.kill(os.getpid(), signal.SIGTERM)  # the worker stops gracefully: commits, leaves the group

    # Registered by calls, not decorators: without faust installed mypy sees them as untyped.
    app.agent(source)(route)
    app.task(finish)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.faust_router ...`: the child process `measure` starts."""
    parser = argparse.ArgumentParser(prog="python -m bench.faust_router")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True, help="topic holding the workload's records")
    parser.add_argument("--group", required=True, help="Faust app id (its consumer group)")
    parser.add_argument("--prefix", required=True, help="topic prefix of the manifest's function topics")
    parser.add_argument("--rules", type=int, required=True, help="rule count of bench.routing_workload")
    parser.add_argument("--total", type=int, required=True, help="events to route before stopping")
    parser.add_argument("--deadline", type=float, required=True, help="seconds after the first event")
    parser.add_argument("--result", type=Path, required=True, help="file the result JSON is written to")
    parser.add_argument("--datadir", required=True, help="Faust's data directory")
    _run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

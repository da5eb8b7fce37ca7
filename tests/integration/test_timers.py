"""Timers on the real broker: schedules fire `bus.timer.fired` events; RELIABILITY R16 (failover)."""

from __future__ import annotations

import asyncio
import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bus import naming
from bus.kafka.admin import ensure_topics
from bus.kafka_binding import header
from bus.manifest import parse_duration
from bus.schedules import Schedule, parse_schedule
from bus.topology import ingress_topics
from bus.typed_events import EdgeSchemas
from gateway.timers import Scheduler, read_checkpoint
from tests.support import GatewayProcess, KafkaEnv, run_bus, wait_until, write_manifest

EVERY_SECOND = """
schedules:
  - name: heartbeat
    cron: "* * * * * *"
    catch_up: all
    event: {type: heartbeat.beat, data: {kind: test}}
"""
PLAIN = """
  - {name: plain, rate: 1s, event: {data: {kind: plain}}}
"""
SESSION_TIMEOUT = "6"  # the broker's minimum: a killed leader is noticed after this many seconds


def _log_events(gateway: GatewayProcess) -> list[str]:
    lines = gateway.log.read_text(errors="replace").splitlines() if gateway.log.exists() else []
    events = []
    for line in lines:
        try:
            events.append(orjson.loads(line).get("event", ""))
        except orjson.JSONDecodeError:
            continue
    return events


def _leads(gateway: GatewayProcess) -> bool:
    """Whether the process runs and its last lead decision was to take it."""
    if gateway.process is None or gateway.process.poll() is not None:
        return False
    decisions = [e for e in _log_events(gateway) if e in {"timer_lead_taken", "timer_lead_dropped"}]
    return bool(decisions) and decisions[-1] == "timer_lead_taken"


def _fired(gateway: GatewayProcess) -> int:
    return _log_events(gateway).count("timer_fired")


def _ticks(kafka: KafkaEnv, prefix: str) -> list[tuple[datetime, datetime]]:
    """(scheduled, fired) times of every heartbeat event on the ingress topic, in topic order."""
    ticks = []
    for record in kafka.read_all(naming.ingress_topic(prefix), idle=2.0):
        if header(record.headers(), "ce_type") != b"heartbeat.beat":
            continue
        assert orjson.loads(record.value()) == {"kind": "test"}, "the template's data, as written"
        assert header(record.headers(), "ce_schedule") == b"heartbeat"
        scheduled, fired = (
            datetime.fromisoformat((header(record.headers(), name) or b"").decode())
            for name in ("ce_scheduledtime", "ce_time")
        )
        ticks.append((scheduled, fired))
    return ticks


def _wait_for_leader(gateways: list[GatewayProcess]) -> GatewayProcess:
    return wait_until(lambda: next((g for g in gateways if _leads(g)), None), timeout=60, what="a leader")


def _wait_for_fires(gateway: GatewayProcess, count: int) -> None:
    wait_until(lambda: _fired(gateway) >= count, timeout=30, what=f"{count} timer_fired decisions")


def test_a_schedule_fires_each_second_once(kafka: KafkaEnv, tmp_path: Path) -> None:
    """A gateway with an every-second schedule publishes one event per second, each tick once; a
    `bus.timer.fired` event is typed: Avro with the platform schema, the payload under `payload`."""
    prefix = kafka.prefix()
    manifest = write_manifest(tmp_path, prefix, EVERY_SECOND + PLAIN)
    gateway = GatewayProcess(kafka, prefix, tmp_path, manifest=manifest)
    gateway.start()
    try:
        _wait_for_fires(gateway, 4)
        metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    finally:
        gateway.stop()
    assert "bus_timer_leader 1" in metrics.splitlines()
    counted = re.search(r'^bus_timer_ticks_fired_total\{schedule="heartbeat"\} (\d+)', metrics, re.MULTILINE)
    assert counted is not None, metrics
    assert int(counted.group(1)) >= 4
    ticks = [scheduled for scheduled, _ in _ticks(kafka, prefix)]
    assert len(ticks) >= 4
    assert len(set(ticks)) == len(ticks), "no tick fired twice"
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks)), ticks
    tail = run_bus(
        "tail",
        naming.ingress_topic(prefix),
        "--from-beginning",
        "--json",
        "--timeout",
        "5",
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_PREFIX": prefix},
    )
    plain = [
        doc for doc in map(orjson.loads, tail.stdout.splitlines()) if doc.get("type") == "bus.timer.fired"
    ]
    assert plain, tail.stdout[-500:]
    records = kafka.read_all(naming.ingress_topic(prefix))
    fired = [r for r in records if header(r.headers(), "ce_type") == b"bus.timer.fired"]
    assert {header(r.headers(), "content-type") for r in fired} == {b"application/avro"}
    assert plain[0]["data"]["schedule"] == "plain"
    assert plain[0]["data"]["payload"] == {"kind": "plain"}


def test_r16_each_tick_fires_once_while_the_leader_is_killed_three_times(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """R16: two gateways, the leading one `kill -9`ed three times: every tick fires once, missed ones late."""
    prefix = kafka.prefix()
    manifest = write_manifest(tmp_path, prefix, EVERY_SECOND)
    env = {"BUS_SESSION_TIMEOUT": SESSION_TIMEOUT}
    started = 0

    def new_gateway() -> GatewayProcess:
        nonlocal started
        started += 1
        gateway = GatewayProcess(
            kafka, prefix, tmp_path, manifest=manifest, env=env, name=f"gateway{started}"
        )
        gateway.start()
        return gateway

    gateways = [new_gateway(), new_gateway()]
    kills = 0
    try:
        while kills < 3:
            leader = _wait_for_leader(gateways)
            _wait_for_fires(leader, _fired(leader) + 3)
            leader.kill()
            kills += 1
            gateways = [g for g in gateways if g is not leader] + [new_gateway()]
        _wait_for_fires(_wait_for_leader(gateways), 3)
    finally:
        for gateway in gateways:
            gateway.stop()
    fired = _ticks(kafka, prefix)
    ticks = [scheduled for scheduled, _ in fired]
    late = max((f - s).total_seconds() for s, f in fired)
    duplicates = len(ticks) - len(set(ticks))
    ordered = sorted(set(ticks))
    gaps = [(a, b) for a, b in itertools.pairwise(ordered) if b - a != timedelta(seconds=1)]
    print(f"R16: ticks={len(ticks)} duplicates={duplicates} gaps={len(gaps)} kills={kills}", end=" ")
    print(f"recovery_s={late:.1f}")
    assert duplicates == 0
    assert gaps == [], "catch_up: all fires every missed tick"


def _schedule(**spec: Any) -> Schedule:
    return parse_schedule(
        0, {"name": "report", "event": {"type": "report.requested"}, **spec}, duration=parse_duration
    )


def _checkpoint_values(kafka: KafkaEnv, prefix: str) -> list[bytes | None]:
    return [r.value() for r in kafka.read_all(naming.timer_topic(prefix), idle=1.0) if r.key() == b"report"]


def _run_until(scheduler: Scheduler, done: Any, what: str) -> None:
    """Run `scheduler` (it leads alone) until `done()` holds."""

    async def main() -> None:
        async with scheduler.running():
            await asyncio.to_thread(wait_until, done, timeout=60, what=what)

    asyncio.run(main())


def test_a_changed_or_dropped_schedule_fires_no_stale_tick_and_an_unchanged_one_catches_up(
    kafka: KafkaEnv,
) -> None:
    """`0 2 * * *` fires 02:00; changed at 10:00 to `0 9 * * *` it fires nothing then, and after a
    day's downtime its missed 09:00 once; dropped, its checkpoint is tombstoned."""
    prefix = kafka.prefix()
    settings = kafka.settings(prefix)
    ensure_topics(settings, ingress_topics(prefix))
    clock = [datetime(2026, 5, 4, 2, 0, 0, 500_000, tzinfo=UTC).timestamp()]
    nightly = Scheduler(settings, [_schedule(cron="0 2 * * *")], clock=lambda: clock[0])
    _run_until(nightly, lambda: nightly.fired == 1 or None, "the 02:00 tick")

    changed = Scheduler(settings, [_schedule(cron="0 2 * * *")], clock=lambda: clock[0])

    async def change() -> None:
        async with changed.running():
            await asyncio.to_thread(wait_until, lambda: changed.leading or None, timeout=60, what="the lead")
            clock[0] = datetime(2026, 5, 4, 10, tzinfo=UTC).timestamp()
            changed.update([_schedule(cron="0 9 * * *")], EdgeSchemas())
            await asyncio.to_thread(
                wait_until,
                lambda: len(_checkpoint_values(kafka, prefix)) >= 2 or None,
                timeout=30,
                what="a checkpoint",
            )

    asyncio.run(change())
    assert changed.fired == 0, "the 09:00 tick of the changed schedule is not fired at 10:00"

    clock[0] = datetime(2026, 5, 5, 10, tzinfo=UTC).timestamp()  # down from 10:00 to 10:00 next day
    resumed = Scheduler(settings, [_schedule(cron="0 9 * * *")], clock=lambda: clock[0])
    _run_until(resumed, lambda: resumed.fired == 1 or None, "the missed 09:00 tick")

    dropped = Scheduler(settings, [_schedule(cron="0 9 * * *")], clock=lambda: clock[0])

    async def drop() -> None:
        async with dropped.running():
            await asyncio.to_thread(wait_until, lambda: dropped.leading or None, timeout=60, what="the lead")
            dropped.update([], EdgeSchemas())
            await asyncio.to_thread(
                wait_until,
                lambda: _checkpoint_values(kafka, prefix)[-1] is None or None,
                timeout=30,
                what="a tombstone",
            )

    asyncio.run(drop())
    checkpoints = [read_checkpoint(value) for value in _checkpoint_values(kafka, prefix)]
    assert [c.through.hour if c else None for c in checkpoints] == [2, 10, 9, None]
    ticks = [header(r.headers(), "ce_scheduledtime") for r in kafka.read_all(naming.ingress_topic(prefix))]
    assert ticks == [b"2026-05-04T02:00:00Z", b"2026-05-05T09:00:00Z"], "nothing else, nothing stale"

"""The local autoscaler on the real broker: from zero on the first event, out on a backlog, back to
zero after the cooldown, every decision published with its reason (RELIABILITY R15, small)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from bus import naming
from bus.errors import KafkaError
from bus.kafka_binding import from_record
from bus.manifest import read
from bus.metrics import Registry
from bus.status import GroupSample
from bus.supervisor import Supervisor
from tests.support import KafkaEnv, unique, wait_until
from tests.worker_harness import check, publish, write_function

FN = "scaled"
OPTIONS = (
    "partitions: 4, concurrency: 1, "
    "scaling: {min: 0, max: 4, lag_threshold: 50, cooldown: 3s, stabilization: 2s}"
)


def test_scales_from_zero_out_on_a_backlog_and_back_to_zero_after_the_cooldown(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    path = write_function(tmp_path, prefix, FN, OPTIONS)
    manifest = read(path)
    settings = kafka.settings(prefix)
    environ = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "PATH": "/usr/bin:/bin"}
    registry = Registry()
    supervisor = Supervisor(
        settings,
        manifest,
        manifest_path=path,
        environ=environ,
        logs=tmp_path,
        python=sys.executable,
        registry=registry,
    )
    pool = supervisor.pools[FN]
    # A sample that fails (the broker busy, a leader moving) is skipped; the supervisor carries on.
    sample, calls = supervisor._monitor.sample, [0]

    def flaky_sample() -> dict[str, GroupSample]:
        calls[0] += 1
        if calls[0] == 2:
            raise KafkaError("Broker: Leader epoch is newer than broker epoch", retriable=True)
        return sample()

    supervisor._monitor.sample = flaky_sample  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    topic = naming.function_topic(prefix, FN)
    try:
        wait_until(
            lambda: supervisor.pools[FN].desired == 0 or None, timeout=10, what="a first decision of 0"
        )
        assert pool.actual == 0
        # From zero: the first event starts a replica and gets its result.
        began = time.monotonic()
        first = publish(kafka, topic, [{"key": "a", "seq": 0}], run=unique("first"), prefix=prefix)
        check(kafka, prefix, FN, first, timeout=30)
        from_zero = time.monotonic() - began
        # A backlog: 400 events of 20 ms each on 4 partitions -> lag 400 / threshold 50 -> 4 replicas.
        backlog = publish(
            kafka,
            topic,
            [{"key": f"k{i}", "seq": i, "sleep": 0.02} for i in range(400)],
            run=unique("b"),
            prefix=prefix,
        )
        wait_until(lambda: pool.actual == 4, timeout=30, what=f"4 replicas (now {pool.actual})")
        # Prometheus sees the same: the decision, its direction and the replicas running.
        wait_until(
            lambda: f'bus_function_replicas_actual{{function="{FN}"}} 4' in registry.render(),
            timeout=5,
            what="the replicas gauge at 4",
        )
        exposition = registry.render()
        assert f'bus_function_replicas_desired{{function="{FN}"}} 4' in exposition, exposition
        assert f'bus_scaling_decisions_total{{function="{FN}",direction="out"}}' in exposition, exposition
        figures = check(kafka, prefix, FN, {**first, **backlog}, timeout=60)
        assert (figures.lost, figures.dup_results) == (0, 0), figures.line()
        # Idle: after the stabilization window and the cooldown, back to zero.
        wait_until(lambda: pool.actual == 0 and pool.desired == 0, timeout=60, what="scale to zero")
    finally:
        stop.set()
        thread.join(timeout=10)
        supervisor.close(grace=20)
    print(f"\nfirst event handled {from_zero:.2f} s after publishing, from zero replicas")
    decisions = [
        from_record(m.key(), m.value(), m.headers()).data
        for m in kafka.read_all(naming.scaling_topic(prefix))
    ]
    desired = [d["desired"] for d in decisions]
    assert 4 in desired, desired
    assert desired[-1] == 0, desired
    assert any("scale out" in d["reason"] for d in decisions), [d["reason"] for d in decisions]
    assert any("scale to zero" in d["reason"] for d in decisions), [d["reason"] for d in decisions]
    # No flapping: once at 4, the count only goes down (one scale-in path to zero).
    assert calls[0] > 2, "the supervisor kept sampling after a failed sample"
    after_peak = desired[desired.index(4) :]
    assert after_peak == sorted(after_peak, reverse=True), desired

"""RELIABILITY R15 on the real broker: a 10x step load for 60 s, then idle.

The supervisor (the `bus up` autoscaler) runs one function whose handler takes 10 ms, so one
replica handles about 90 events/s. A base load of 20 events/s needs one replica; the step to 200
events/s needs three. Must hold: the group scales out within SCALE_OUT_WITHIN of the step, never
scales in and out again (no flapping: the replica count rises, then only falls), scales to zero
only after the cooldown of no lag, and every event has exactly one result.

`BUS_R15_SECONDS` sets the step's length (default 60, as RELIABILITY states).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from pathlib import Path

from bus import naming
from bus.kafka_binding import from_record
from bus.manifest import read
from bus.supervisor import Supervisor
from tests.support import KafkaEnv, unique, wait_until
from tests.worker_harness import check, publish, write_function

FN = "stepped"
COOLDOWN = 5.0
OPTIONS = (
    "partitions: 4, concurrency: 1, ordering: partition, "
    f"scaling: {{min: 0, max: 4, lag_threshold: 50, cooldown: {COOLDOWN:g}s, stabilization: 5s}}"
)
BASE_RATE, STEP_RATE = 20, 200
BASE_SECONDS = 5
STEP_SECONDS = float(os.environ.get("BUS_R15_SECONDS", "60"))
SCALE_OUT_WITHIN = 5.0
"""Seconds from the step to the decision to scale out: a few 1 s samples of growing lag."""


def test_r15_a_10x_step_load_scales_out_drains_and_scales_in_after_the_cooldown_without_flapping(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    path = write_function(tmp_path, prefix, FN, OPTIONS)
    environ = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "PATH": "/usr/bin:/bin"}
    supervisor = Supervisor(
        kafka.settings(prefix),
        read(path),
        manifest_path=path,
        environ=environ,
        logs=tmp_path,
        python=sys.executable,
    )
    pool = supervisor.pools[FN]
    stop = threading.Event()
    timeline: list[tuple[float, int, int]] = []  # (time, desired, actual), every 0.25 s

    def watch() -> None:
        while not stop.wait(0.25):
            timeline.append((time.monotonic(), pool.desired, pool.actual))

    threads = [
        threading.Thread(target=supervisor.run, args=(stop,), daemon=True),
        threading.Thread(target=watch, daemon=True),
    ]
    for thread in threads:
        thread.start()
    topic = naming.function_topic(prefix, FN)
    run = unique("r15")
    counter = itertools.count()

    def load(rate: int, seconds: float) -> dict[str, dict[str, object]]:
        datas = [
            {"key": f"k{(n := next(counter)) % 64}", "seq": n, "sleep": 0.01}
            for _ in range(int(rate * seconds))
        ]
        return publish(kafka, topic, datas, run=f"{run}-{rate}", prefix=prefix, rate=rate)

    try:
        acked = load(BASE_RATE, BASE_SECONDS)
        base_replicas = pool.actual
        step_began = time.monotonic()
        acked |= load(STEP_RATE, STEP_SECONDS)
        step_ended = time.monotonic()
        figures = check(kafka, prefix, FN, acked, timeout=120)
        drained = time.monotonic()
        wait_until(lambda: timeline[-1][1:] == (0, 0), timeout=60, what="scale to zero")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        supervisor.close(grace=20)

    changes = [
        (t, desired)
        for (t, desired, _), (_, before, _) in zip(timeline[1:], timeline, strict=False)
        if desired != before
    ]
    out_at = next((t for t, desired in changes if t > step_began and desired > max(base_replicas, 1)), None)
    peak = max(desired for _, desired, _ in timeline)
    zero_at = next(t for t, desired in changes if desired == 0 and t > step_ended)
    decisions = [
        from_record(m.key(), m.value(), m.headers()).data
        for m in kafka.read_all(naming.scaling_topic(prefix))
    ]
    print(
        f"\nR15: {figures.line()} base replicas {base_replicas}, peak {peak}; "
        f"scale-out {None if out_at is None else round(out_at - step_began, 1)} s after the step; "
        f"drained {drained - step_ended:.1f} s after the load, "
        f"zero {zero_at - drained:.1f} s after that; "
        f"replica counts {[d for _, d in changes]}; p99 {[d['p99_seconds'] for d in decisions][-3:]}"
    )
    assert (figures.lost, figures.dup_results) == (0, 0), figures.line()
    assert out_at is not None, (changes, step_began)
    assert out_at - step_began <= SCALE_OUT_WITHIN, (changes, step_began)
    assert peak >= 3, timeline
    counts = [desired for _, desired in changes]
    falling = next((i for i, (a, b) in enumerate(itertools.pairwise(counts)) if b < a), len(counts))
    assert counts[falling:] == sorted(counts[falling:], reverse=True), f"flapping: {counts}"
    # To zero only after the cooldown: lag lasts at least until the load ends.
    assert zero_at - step_ended >= COOLDOWN, (zero_at - step_ended, changes)
    reasons = [d["reason"] for d in decisions]
    assert any(r.startswith("scale to zero") and f"cooldown {COOLDOWN:g} s" in r for r in reasons), reasons
    assert any(isinstance(d["p99_seconds"], float) and d["p99_seconds"] >= 0.01 for d in decisions), (
        decisions[-3:]
    )

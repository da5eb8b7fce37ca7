"""RELIABILITY R1, R2, R3, R4, R8, R9 and R11 for worker groups, on the real broker.

Events go straight to the function topic (the router's output), so each scenario measures the
worker group alone. Run with `-s` to see each scenario's figures; `--events 100000` for a soak.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bus import naming
from bus.kafka.admin import ensure_topics
from bus.kafka.config import consumer_config
from bus.kafka_binding import from_record
from bus.topology import TopicSpec
from tests.support import KafkaEnv, unique, wait_until
from tests.worker_harness import WorkerProcess, check, publish, write_function

FN = "work"


def _setup(kafka: KafkaEnv, tmp_path: Path, options: str) -> tuple[str, Path, str]:
    prefix = kafka.prefix()
    manifest = write_function(tmp_path, prefix, FN, options)
    return prefix, manifest, naming.function_topic(prefix, FN)


def _datas(n: int, keys: int, key_prefix: str = "k", **extra: object) -> list[dict[str, object]]:
    seqs: dict[str, int] = {}
    out: list[dict[str, object]] = []
    for i in range(n):
        key = f"{key_prefix}{i % keys}"
        seqs[key] = seqs.get(key, -1) + 1
        out.append({"key": key, "seq": seqs[key], **extra})
    return out


def _under_faults(
    publishing: Callable[[], dict[str, Any]], fault: Callable[[], None], *, interval: float
) -> tuple[dict[str, Any], int]:
    """Publish in the background and strike `fault` every `interval` seconds until it is done."""
    faults = 0
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(publishing)
        while not done.done():
            time.sleep(interval)  # the interval between faults is the scenario, not a wait for a condition
            fault()
            faults += 1
        return done.result(), faults


def test_r1_key_mode_keeps_key_order_and_runs_beyond_the_partition_count(
    kafka: KafkaEnv, tmp_path: Path, events_n: int
) -> None:
    prefix, manifest, topic = _setup(kafka, tmp_path, "partitions: 2, ordering: key, concurrency: 16")
    worker = WorkerProcess(kafka, manifest, FN, tmp_path)
    worker.start()
    try:
        acked = publish(kafka, topic, _datas(events_n, keys=64), run=unique("r1"), prefix=prefix)
        # A slow tail (20 ms each) shows several keys of one partition running at once.
        acked |= publish(
            kafka,
            topic,
            _datas(200, keys=64, key_prefix="slow", sleep=0.02),
            run=unique("r1slow"),
            prefix=prefix,
        )
        figures = check(kafka, prefix, FN, acked, exec_log=worker.exec_log, ordered=True)
    finally:
        worker.stop()
    print(f"\nR1 {figures.line()}")
    assert (figures.lost, figures.dup_results, figures.order_violations) == (0, 0, 0), figures.line()
    assert figures.max_concurrency > 2, f"no parallelism beyond 2 partitions: {figures.line()}"


def test_r2_kill_9_of_workers_every_few_seconds_loses_nothing_and_publishes_each_result_once(
    kafka: KafkaEnv, tmp_path: Path, events_n: int
) -> None:
    prefix, manifest, topic = _setup(kafka, tmp_path, "partitions: 4, ordering: key, concurrency: 8")
    # A killed member leaves the group after its session timeout: the shortest the broker allows.
    fast = {"BUS_SESSION_TIMEOUT": "6"}
    workers = [WorkerProcess(kafka, manifest, FN, tmp_path, name=f"w{i}", env=fast) for i in range(2)]
    for worker in workers:
        worker.start()
    datas = _datas(events_n, keys=40, sleep=0.01)
    run = unique("r2")

    def kill_one() -> None:
        victim = random.choice(workers)
        victim.kill()
        victim.start(wait=False)

    try:
        # Events arrive over ~16 s; a random worker is killed every 5 s and started again.
        acked, kills = _under_faults(
            lambda: publish(kafka, topic, datas, run=run, prefix=prefix, rate=events_n / 16),
            kill_one,
            interval=5.0,
        )
        figures = check(kafka, prefix, FN, acked, ordered=True, timeout=180)
    finally:
        for worker in workers:
            worker.stop()
    print(f"\nR2 kills={kills} {figures.line()}")
    assert kills >= 3
    assert (figures.lost, figures.dup_results) == (0, 0), figures.line()


def test_r3_rolling_sigterm_drains_and_commits_so_nothing_runs_twice(
    kafka: KafkaEnv, tmp_path: Path, events_n: int
) -> None:
    prefix, manifest, topic = _setup(kafka, tmp_path, "partitions: 4, ordering: key, concurrency: 8")
    workers = [WorkerProcess(kafka, manifest, FN, tmp_path, name=f"w{i}") for i in range(2)]
    for worker in workers:
        worker.start()
    datas = _datas(events_n, keys=40, sleep=0.01)
    run = unique("r3")
    turn = iter(range(1_000_000))

    def restart_one() -> None:
        worker = workers[next(turn) % 2]
        worker.stop()
        worker.start()

    try:
        # Events arrive over ~12 s; every 3 s one worker after the other is stopped and started.
        acked, restarts = _under_faults(
            lambda: publish(kafka, topic, datas, run=run, prefix=prefix, rate=events_n / 12),
            restart_one,
            interval=3.0,
        )
        figures = check(kafka, prefix, FN, acked, exec_log=workers[0].exec_log, timeout=180)
    finally:
        for worker in workers:
            worker.stop()
    print(f"\nR3 restarts={restarts} {figures.line()}")
    assert restarts >= 2
    assert (figures.lost, figures.dup_results, figures.dup_exec) == (0, 0, 0), figures.line()


def test_r10_scaling_workers_1_4_1_while_publishing_loses_nothing(
    kafka: KafkaEnv, tmp_path: Path, events_n: int
) -> None:
    prefix, manifest, topic = _setup(kafka, tmp_path, "partitions: 4, ordering: key, concurrency: 8")
    workers = [WorkerProcess(kafka, manifest, FN, tmp_path, name=f"w{i}") for i in range(4)]
    workers[0].start()
    datas = _datas(events_n, keys=40, sleep=0.005)
    run = unique("r10")
    turn = iter(range(1_000_000))

    def rescale() -> None:
        if next(turn) % 2 == 0:
            for worker in workers[1:]:
                worker.start(wait=False)
            for worker in workers[1:]:
                worker.wait_ready()
        else:
            for worker in workers[1:]:
                assert worker.process is not None
                worker.process.terminate()
            for worker in workers[1:]:
                worker.stop()

    try:
        # Events arrive over ~30 s; every 10 s the group goes from 1 replica to 4 or back.
        acked, changes = _under_faults(
            lambda: publish(kafka, topic, datas, run=run, prefix=prefix, rate=events_n / 30),
            rescale,
            interval=10.0,
        )
        figures = check(kafka, prefix, FN, acked, ordered=True, timeout=180)
    finally:
        for worker in workers:
            worker.stop()
    rebalances = sum(worker.log.read_text().count('"partitions_assigned"') for worker in workers)
    print(f"\nR10 scale_changes={changes} rebalances={rebalances} {figures.line()}")
    assert changes >= 2
    assert (figures.lost, figures.dup_results, figures.order_violations) == (0, 0, 0), figures.line()


def test_r4_a_stopped_worker_past_its_session_is_fenced_when_it_wakes(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix, manifest, topic = _setup(kafka, tmp_path, "partitions: 2, ordering: partition, concurrency: 2")
    zombie = WorkerProcess(kafka, manifest, FN, tmp_path, name="zombie", env={"BUS_SESSION_TIMEOUT": "6"})
    zombie.start()
    wait_until(zombie.assigned, timeout=30, what="the first worker to own the partitions")
    # Slow events, so the zombie holds finished-but-uncommitted work when it is stopped.
    acked = publish(kafka, topic, _datas(300, keys=10, sleep=0.02), run=unique("r4"), prefix=prefix)
    healthy = WorkerProcess(kafka, manifest, FN, tmp_path, name="healthy")
    try:
        assert zombie.process is not None
        time.sleep(0.5)  # let it get going: the fault is a stop in the middle of work
        zombie.process.send_signal(signal.SIGSTOP)
        healthy.start()
        wait_until(
            healthy.assigned, timeout=40, what="the healthy worker to take over after the session timeout"
        )
        time.sleep(2.0)
        zombie.process.send_signal(signal.SIGCONT)
        figures = check(kafka, prefix, FN, acked, timeout=120)
    finally:
        if zombie.process is not None and zombie.process.poll() is None:
            zombie.process.send_signal(signal.SIGCONT)
        zombie.stop()
        healthy.stop()
    print(f"\nR4 {figures.line()}")
    assert (figures.lost, figures.dup_results) == (0, 0), figures.line()


def test_r8_poison_events_land_in_the_dlq_with_complete_records_while_the_partition_flows(
    kafka: KafkaEnv, tmp_path: Path, events_n: int
) -> None:
    prefix, manifest, topic = _setup(
        kafka,
        tmp_path,
        "partitions: 2, ordering: key, concurrency: 8, retry: {attempts: 3, backoff: [200ms, 400ms]}",
    )
    worker = WorkerProcess(kafka, manifest, FN, tmp_path)
    worker.start()
    datas = _datas(events_n, keys=30)
    for index in range(0, len(datas), 50):
        datas[index]["poison"] = True
    run = unique("r8")
    try:
        acked = publish(kafka, topic, datas, run=run, prefix=prefix)
        poison = {f"{run}-{index}" for index in range(0, len(datas), 50)}
        figures = check(kafka, prefix, FN, acked, poison=poison, ordered=True)
    finally:
        worker.stop()
    print(f"\nR8 {figures.line()}")
    assert (figures.lost, figures.dup_results, figures.dlq_wrong, figures.order_violations) == (0, 0, 0, 0)
    assert figures.dlq == len(poison)
    some = next(iter(poison))
    assert figures.dead_letters[some][0] == "ValueError"
    error = figures.errors[some]
    assert error["attempts"] == 3
    assert error["topic"] == topic
    assert error["event"]["id"] == some
    assert error["traceback"]
    assert error["first_attempt_time"] <= error["last_attempt_time"]


def test_r8_attempt_times_are_when_the_handler_ran_not_when_its_run_was_sent(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """Four slow failures of four keys are sent together and start 0.4 s apart in the host's one
    thread: so do their attempt times."""
    prefix, manifest, topic = _setup(
        kafka, tmp_path, "partitions: 1, ordering: key, concurrency: 1, retry: {attempts: 1}"
    )
    worker = WorkerProcess(kafka, manifest, FN, tmp_path)
    run = unique("r8t")
    datas = [{"key": f"k{n}", "seq": 0, "sleep": 0.4, "poison": True} for n in range(4)]
    ensure_topics(kafka.settings(prefix), [TopicSpec(topic, 1)])
    acked = publish(kafka, topic, datas, run=run, prefix=prefix)  # waiting before the replica starts
    assert len(acked) == 4
    worker.start()
    try:
        figures = check(kafka, prefix, FN, acked, poison=set(acked))
    finally:
        worker.stop()
    assert figures.dlq == 4
    starts = [figures.errors[f"{run}-{n}"]["first_attempt_time"] for n in range(4)]
    seconds = [datetime.fromisoformat(text).timestamp() for text in starts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(seconds)]
    assert all(gap >= 0.3 for gap in gaps), f"attempt times {starts}"
    assert all(e["first_attempt_time"] == e["last_attempt_time"] for e in figures.errors.values())


def test_r8_a_failing_key_waits_behind_its_retry_while_other_keys_flow(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix, manifest, topic = _setup(
        kafka, tmp_path, "partitions: 1, ordering: key, concurrency: 4, retry: {attempts: 3, backoff: [1s]}"
    )
    worker = WorkerProcess(kafka, manifest, FN, tmp_path)
    worker.start()
    run = unique("keys")
    datas = [{"key": "slow", "seq": 0, "fail_attempts": 2}] + [
        {"key": "slow" if i % 5 == 0 else f"k{i}", "seq": i + 1} for i in range(40)
    ]
    try:
        acked = publish(kafka, topic, datas, run=run, prefix=prefix)
        figures = check(kafka, prefix, FN, acked, ordered=True)
        results = kafka.read_all(naming.result_topic(prefix, FN))
    finally:
        worker.stop()
    order = [from_record(m.key(), m.value(), m.headers()).data for m in results]
    slow = [d["seq"] for d in order if d["key"] == "slow"]
    assert slow == sorted(slow), slow
    assert slow[0] == 0, slow
    first_slow = next(i for i, d in enumerate(order) if d["key"] == "slow")
    assert first_slow > 20, f"other keys should finish while 'slow' waits ~2 s for its retries: {order[:5]}"
    assert order[first_slow]["attempt"] == 3
    assert (figures.lost, figures.dup_results, figures.order_violations) == (0, 0, 0), figures.line()


def test_a_stalled_key_does_not_hold_up_the_keys_bundled_behind_it(kafka: KafkaEnv, tmp_path: Path) -> None:
    """Once the handler is known to be fast, a partition's keys share host runs; a key whose call
    then blocks holds up only its own later events: the other keys' finish while it waits."""
    prefix, manifest, topic = _setup(
        kafka, tmp_path, "partitions: 1, ordering: key, concurrency: 4, timeout: 90s"
    )
    results_topic = naming.result_topic(prefix, FN)
    gate = tmp_path / "gate"
    worker = WorkerProcess(kafka, manifest, FN, tmp_path)
    worker.start()
    try:
        # Fast events first: the replica learns the handler's duration and bundles keys from then on.
        acked = publish(
            kafka, topic, _datas(300, keys=100, key_prefix="warm"), run=unique("warm"), prefix=prefix
        )
        kafka.read(results_topic, until=lambda records: len(records) >= 300, timeout=60)
        stalled = {"key": "stalled", "seq": 0, "wait_for": str(gate)}
        datas = [*_datas(100, keys=100), stalled, *_datas(200, keys=200, key_prefix="after")]
        acked |= publish(kafka, topic, datas, run=unique("stall"), prefix=prefix)
        # Every other event finishes while the stalled one waits for the gate (60 s at most).
        kafka.read(results_topic, until=lambda records: len(records) >= 600, timeout=30)
        gate.touch()
        figures = check(kafka, prefix, FN, acked, exec_log=worker.exec_log, ordered=True)
    finally:
        gate.touch()
        worker.stop()
    print(f"\nstalled key {figures.line()}")
    assert (figures.lost, figures.dup_results, figures.order_violations) == (0, 0, 0), figures.line()


def test_r9_hang_exit_and_memory_blow_up_each_end_in_the_dlq_with_its_cause(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix, manifest, topic = _setup(
        kafka, tmp_path, "partitions: 1, concurrency: 1, timeout: 1s, memory: 256Mi, retry: {attempts: 1}"
    )
    worker = WorkerProcess(kafka, manifest, FN, tmp_path)
    worker.start()
    run = unique("r9")
    datas = [
        {"key": "a", "seq": 0},
        {"key": "a", "seq": 1, "hang": True},
        {"key": "a", "seq": 2},
        {"key": "a", "seq": 3, "exit": 7},
        {"key": "a", "seq": 4},
        {"key": "a", "seq": 5, "alloc_mb": 2048},
        {"key": "a", "seq": 6},
    ]
    try:
        acked = publish(kafka, topic, datas, run=run, prefix=prefix)
        poison = {f"{run}-1", f"{run}-3", f"{run}-5"}
        figures = check(kafka, prefix, FN, acked, poison=poison, timeout=60)
        assert worker.process is not None
        assert worker.process.poll() is None, "the worker replica died"
    finally:
        worker.stop()
    print(f"\nR9 {figures.line()} {figures.dead_letters}")
    assert (figures.lost, figures.dup_results, figures.dlq_wrong) == (0, 0, 0), figures.line()
    assert figures.dead_letters[f"{run}-1"][0] == "TimeoutError"
    assert figures.dead_letters[f"{run}-3"][0] == "HandlerCrashed"
    assert "7" in figures.dead_letters[f"{run}-3"][1]
    assert figures.dead_letters[f"{run}-5"][0] == "MemoryError"


def _committed(kafka: KafkaEnv, prefix: str, topic: str, partition: int) -> int:
    consumer = Consumer(consumer_config(kafka.settings(prefix), naming.function_group(prefix, FN)))
    try:
        [tp] = consumer.committed([TopicPartition(topic, partition)], 10)
        return int(tp.offset)
    finally:
        consumer.close()


def test_r11_the_committed_offset_never_passes_an_unfinished_event(kafka: KafkaEnv, tmp_path: Path) -> None:
    prefix, manifest, topic = _setup(
        kafka, tmp_path, "partitions: 1, ordering: key, concurrency: 8, timeout: 60s"
    )
    worker = WorkerProcess(kafka, manifest, FN, tmp_path)
    worker.start()
    run = unique("r11")
    datas = [{"key": "first", "seq": 0, "sleep": 10}] + [{"key": f"k{i}", "seq": i} for i in range(1, 200)]
    try:
        acked = publish(kafka, topic, datas, run=run, prefix=prefix)
        results_topic = naming.result_topic(prefix, FN)
        # Everything after the slow first event finishes (other keys run in parallel) ...
        kafka.read(results_topic, until=lambda records: len(records) >= 199, timeout=60)
        # ... but the commit stays at the first, unfinished event.
        assert _committed(kafka, prefix, topic, 0) == 0
        worker.kill()
        worker.start()
        figures = check(kafka, prefix, FN, acked, exec_log=worker.exec_log, timeout=90)
    finally:
        worker.stop()
    print(f"\nR11 {figures.line()}")
    # The 199 finished events are not run again after the kill (the commit's metadata says so).
    assert (figures.lost, figures.dup_results, figures.dup_exec) == (0, 0, 0), figures.line()


def _run_worker(kafka: KafkaEnv, manifest: Path) -> subprocess.CompletedProcess[str]:
    """Run one worker replica of FN to its exit (for workers that must refuse to start)."""
    return subprocess.run(
        [sys.executable, "-m", "workers", "-f", str(manifest), "--function", FN],
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_handler_that_cannot_be_imported_stops_the_worker_with_the_reason(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    path = tmp_path / "bus.yaml"
    path.write_text(f"prefix: {prefix}\nfunctions:\n  {FN}: {{handler: 'missing_module:f'}}\n")
    done = _run_worker(kafka, path)
    assert done.returncode == 1
    assert "missing_module" in done.stderr


def test_a_retry_topic_with_other_partitions_than_its_function_topic_stops_the_worker(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix, manifest, _topic = _setup(kafka, tmp_path, "partitions: 2, retry: {attempts: 2, backoff: [1s]}")
    ensure_topics(kafka.settings(prefix), [TopicSpec(naming.retry_topic(prefix, FN, 1), 3)])
    done = _run_worker(kafka, manifest)
    assert done.returncode == 1
    assert f"{naming.retry_topic(prefix, FN, 1)} has 3" in done.stderr


def _shrink_retries_while_one_waits(
    kafka: KafkaEnv, tmp_path: Path, before: str, after: str, data: dict[str, object]
) -> tuple[str, str, dict[str, dict[str, Any]], WorkerProcess]:
    """Run `data`'s event under the policy `before` until its retry waits in `retry.2`, stop the
    worker, change the policy to `after` (fewer levels), and start the worker again."""
    prefix, manifest, topic = _setup(kafka, tmp_path, f"partitions: 1, ordering: key, retry: {before}")
    worker = WorkerProcess(kafka, manifest, FN, tmp_path)
    worker.start()
    try:
        acked = publish(kafka, topic, [data], run=unique("shrink"), prefix=prefix)
        kafka.read(naming.retry_topic(prefix, FN, 2), until=lambda records: len(records) >= 1, timeout=60)
    finally:
        worker.stop()
    write_function(tmp_path, prefix, FN, f"partitions: 1, ordering: key, retry: {after}")
    worker.start()
    return prefix, next(iter(acked)), acked, worker


def test_a_retry_waiting_in_a_level_the_changed_policy_dropped_ends_in_the_dlq(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """attempts 3 → 2 while attempt 3 waits (60 s) in retry.2: at once, the dead letter and the
    complete error record of the 2 attempts made, saying the retry policy changed."""
    prefix, event_id, acked, worker = _shrink_retries_while_one_waits(
        kafka,
        tmp_path,
        "{attempts: 3, backoff: [200ms, 60s]}",
        "{attempts: 2, backoff: [200ms]}",
        {"key": "a", "seq": 0, "poison": True},
    )
    try:
        figures = check(kafka, prefix, FN, acked, poison={event_id}, timeout=40)
    finally:
        worker.stop()
    assert (figures.lost, figures.dlq, figures.dlq_wrong) == (0, 1, 0), figures.line()
    error_type, reason = figures.dead_letters[event_id]
    assert error_type == "ValueError"
    assert "retry policy changed" in reason
    error = figures.errors[event_id]
    assert error["attempts"] == 2
    assert error["topic"] == naming.function_topic(prefix, FN)
    assert error["event"]["id"] == event_id
    assert error["first_attempt_time"] <= error["last_attempt_time"]
    assert f"{event_id} 3 " not in worker.exec_log.read_text()  # the third attempt never ran


def test_a_retry_waiting_in_a_level_the_changed_policy_dropped_still_runs_when_attempts_are_left(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """backoff [200ms, 2s] → [200ms] with 3 attempts kept: the retry waiting in retry.2 runs its
    third attempt, which succeeds."""
    prefix, _, acked, worker = _shrink_retries_while_one_waits(
        kafka,
        tmp_path,
        "{attempts: 3, backoff: [200ms, 2s]}",
        "{attempts: 3, backoff: [200ms]}",
        {"key": "a", "seq": 0, "fail_attempts": 2},
    )
    try:
        figures = check(kafka, prefix, FN, acked, timeout=40)
        results = kafka.read_all(naming.result_topic(prefix, FN))
    finally:
        worker.stop()
    assert (figures.lost, figures.dup_results) == (0, 0), figures.line()
    [result] = results
    assert from_record(result.key(), result.value(), result.headers()).data["attempt"] == 3

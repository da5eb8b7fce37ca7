"""`POST /functions/{name}/invoke` on the real broker (bus.invoke): a synchronous call answers with
the function's result or its error and status, through each gateway replica's own reply topic;
`mode=async` answers 202 and the outcome goes to the function's destinations."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx

from bus import naming
from bus.kafka.control_store import apply_file
from bus.kafka_binding import from_record
from tests.support import GatewayProcess, KafkaEnv, wait_until
from tests.worker_harness import WorkerProcess

HANDLERS = """
from workers import DeadLetter, Retry


def echo(event, ctx):
    return {"echo": event.data, "attempt": ctx.attempt, "type": event.type}


def fails(event, ctx):
    what = (event.data or {}).get("what")
    if what == "refuse":
        raise DeadLetter("not for me")
    if what == "later":
        raise Retry(after=7)
    raise ValueError("boom")
"""


def test_sync_calls_answer_with_results_and_errors_through_two_gateways(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    (tmp_path / "fns.py").write_text(HANDLERS)
    manifest = tmp_path / "bus.yaml"
    manifest.write_text(
        f"prefix: {prefix}\nfunctions:\n"
        "  echo: {handler: 'fns:echo', partitions: 2, concurrency: 4, ordering: none}\n"
        "  fails: {handler: 'fns:fails', partitions: 1, retry: {attempts: 3, backoff: [1s]}}\n"
    )
    gateways = [GatewayProcess(kafka, prefix, tmp_path, manifest=manifest, name=f"gw{n}") for n in (1, 2)]
    workers = [WorkerProcess(kafka, manifest, name, tmp_path, name=f"w-{name}") for name in ("echo", "fails")]
    try:
        for worker in workers:
            worker.start()
        for gateway in gateways:
            gateway.start()
        wait_until(lambda: all(w.assigned() for w in workers), timeout=30, what="workers assigned")

        def call(url: str, n: int) -> httpx.Response:
            return httpx.post(f"{url}/functions/echo/invoke", json={"n": n}, timeout=60)

        # Both replicas at once: each gets the replies to its own calls.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: (n, call(gateways[n % 2].url, n)), range(16)))
        for n, response in answers:
            assert response.status_code == 200, response.text
            assert response.json() == {"echo": {"n": n}, "attempt": 1, "type": "bus.function.invoked"}
            assert response.headers["bus-event-id"]

        url = gateways[0].url
        failed = httpx.post(f"{url}/functions/fails/invoke", json={"what": "raise"}, timeout=60)
        assert failed.status_code == 500, failed.text
        assert failed.json()["error_type"] == "ValueError"
        assert failed.json()["message"] == "boom"
        refused = httpx.post(f"{url}/functions/fails/invoke", json={"what": "refuse"}, timeout=60)
        assert (refused.status_code, refused.json()["message"]) == (422, "not for me")
        later = httpx.post(f"{url}/functions/fails/invoke", json={"what": "later"}, timeout=60)
        assert (later.status_code, later.headers.get("retry-after")) == (503, "7"), later.text

        # Synchronous failures are the caller's: one attempt, no retries, nothing in the DLQ.
        assert kafka.read_all(naming.dlq_topic(prefix, "fails"), idle=1.0) == []
        errors = kafka.read_all(naming.error_topic(prefix, "fails"), idle=1.0)
        assert sorted(from_record(m.key(), m.value(), m.headers()).data["attempts"] for m in errors) == [
            1,
            1,
            1,
        ]

        missing = httpx.post(f"{url}/functions/nope/invoke", json={}, timeout=10)
        assert missing.status_code == 404
        assert httpx.post(f"{url}/functions/echo/invoke?mode=later", timeout=10).status_code == 400

        # Asynchronously: 202 at once; the result goes to the success destination.
        queued = httpx.post(f"{url}/functions/echo/invoke?mode=async", json={"n": "a"}, timeout=10)
        assert queued.status_code == 202, queued.text
        (event_id,) = queued.json()["ids"]
        results = naming.result_topic(prefix, "echo")

        def landed() -> bool:
            for message in kafka.read_all(results, idle=0.5):
                result = from_record(message.key(), message.value(), message.headers())
                if result.extensions.get("causationid") == event_id:
                    return True
            return False

        wait_until(landed, timeout=30, what="the asynchronous invocation's result")
    finally:
        for process in [*gateways, *workers]:
            process.stop()


def test_a_sync_call_nobody_answers_is_504_and_still_runs_later(kafka: KafkaEnv, tmp_path: Path) -> None:
    prefix = kafka.prefix()
    (tmp_path / "fns.py").write_text(HANDLERS)
    manifest = tmp_path / "bus.yaml"
    manifest.write_text(f"prefix: {prefix}\nfunctions:\n  echo: {{handler: 'fns:echo', partitions: 1}}\n")
    gateway = GatewayProcess(kafka, prefix, tmp_path, manifest=manifest)
    worker = WorkerProcess(kafka, manifest, "echo", tmp_path, name="w-echo")
    try:
        apply_file(kafka.settings(prefix), manifest, prefix=None)  # creates the function's topics
        gateway.start()
        waited = httpx.post(f"{gateway.url}/functions/echo/invoke?timeout=0.5", json={"n": 1}, timeout=30)
        assert waited.status_code == 504, waited.text
        assert waited.json()["error"] == "no_reply"
        event_id = waited.headers["bus-event-id"]
        worker.start()  # the event waited on Kafka; it runs now, its result goes to the destination
        results = naming.result_topic(prefix, "echo")
        wait_until(
            lambda: any(
                from_record(m.key(), m.value(), m.headers()).extensions.get("causationid") == event_id
                for m in kafka.read_all(results, idle=0.5)
            ),
            timeout=30,
            what="the result of the call that timed out",
        )
    finally:
        gateway.stop()
        worker.stop()

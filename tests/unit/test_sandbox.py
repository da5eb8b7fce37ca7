"""Handler isolation (workers.sandbox, workers.host): real host processes, no broker."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bus.errors import HandlerLoadError
from bus.events import CloudEvent, to_json_dict
from workers.host import (
    EXIT_MEMORY,
    _Progress,
    calls_of,
    data_limit,
    decode_outcomes,
    encode_outcome,
    encode_runs,
    read_frame,
    read_runs,
)
from workers.invocation import Call, Finished, HandedBack, Invocation, Outcome, Results, Run
from workers.sandbox import START_FAILURES, TIMEOUT_GRACE, Sandbox, host_environment

HANDLERS = """
import asyncio
import os
import sys
import time

from workers.signals import DeadLetter, Retry


def main(event, ctx):
    do = event.data["do"]
    if do == "ok":
        return {"echo": event.data, "attempt": ctx.attempt, "pid": os.getpid()}
    if do == "none":
        return None
    if do == "set":
        return {1, 2}
    if do == "raise":
        raise ValueError("boom")
    if do == "retry":
        raise Retry(after=7)
    if do == "dead":
        raise DeadLetter("poison pill")
    if do == "exit":
        sys.exit(2)
    if do == "emit":
        return [ctx.emit("thing.made", {"n": n}) for n in range(2)]
    if do == "sleep":
        time.sleep(event.data["s"])
        return {"pid": os.getpid(), "attempt": ctx.attempt}
    if do == "hang":
        time.sleep(60)
    if do == "crash":
        time.sleep(event.data.get("s", 0))
        os._exit(event.data.get("code", 3))
    if do == "alloc":
        bytearray(2 << 30)
        return "allocated"
    if do == "env":
        return sorted(os.environ)
    if do == "print":
        print("a handler printing to stdout")
        return "printed"
    if do == "fork":
        child = os.fork()
        if child == 0:  # holds the host's pipes, as a multiprocessing worker would
            if event.data["setsid"]:
                os.setsid()
            time.sleep(30)
            os._exit(0)
        with open(event.data["pidfile"], "w") as out:
            out.write(str(child))
        time.sleep(60)
    if do == "bad-text":  # a lone surrogate, as in a file name that is not UTF-8
        text = "path \\udc80"
        how = event.data["how"]
        if how == "raise":
            raise ValueError(text)
        if how == "dead":
            raise DeadLetter(text)
        if how == "retry":
            raise Retry(reason=text)
        if how == "emit":
            ctx.emit("thing.made", {"path": text})
        return text
    if do == "garble":  # a frame the host would not send, on its protocol pipe, then wait
        payload = event.data.get("frame", "[[1,2,3,4,5]]").encode()
        frame = sys._getframe()
        while "_out_fd" not in dir(frame.f_locals.get("self")):
            frame = frame.f_back
        os.write(frame.f_locals["self"]._out_fd, len(payload).to_bytes(4, "big") + payload)
        time.sleep(60)
    if do == "wait":  # until the test creates the file
        deadline = time.monotonic() + 30
        while not os.path.exists(event.data["gate"]) and time.monotonic() < deadline:
            time.sleep(0.005)
        if event.data.get("then") == "raise":
            raise ValueError("after the wait")
        return "waited"
    if do == "recurse":  # through C (a __getattr__ slot) at each level: the deepest stack use
        return Deep(event.data["depth"]).bottom
    raise AssertionError(do)


class Deep:
    def __init__(self, depth):
        self.depth = depth

    def __getattr__(self, name):
        return 0 if self.depth == 0 else getattr(Deep(self.depth - 1), name) + 1


async def amain(event, ctx):
    do = event.data["do"]
    if do == "sleep":
        await asyncio.sleep(event.data["s"])
        return "slept"
    if do == "ok":
        return {"echo": event.data}
    if do == "raise":
        raise ValueError("async boom")
    if do == "wait":
        deadline = time.monotonic() + 30
        while not os.path.exists(event.data["gate"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return "waited"
    raise AssertionError(do)
"""


class Outcomes:
    """The on_outcomes callback of a test: collects outcomes and waits for them with a deadline."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.seen: dict[int, list[Outcome]] = {}
        self.order: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, outcomes: list[Finished]) -> None:
        with self._changed:
            for outcome in outcomes:
                assert isinstance(outcome, Outcome)  # no short forms: these sandboxes build no results
                self.seen.setdefault(outcome.id, []).append(outcome)
                self.order.append(outcome.id)
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()

    def wait(self, *ids: int, timeout: float = 10.0) -> dict[int, Outcome]:
        with self._changed:
            arrived = self._changed.wait_for(lambda: all(i in self.seen for i in ids), timeout)
            assert arrived, f"waited {timeout}s for outcomes of {ids}; saw {self.seen}"
            return {i: self.seen[i][0] for i in ids}


Start = Callable[..., tuple[Sandbox, Outcomes]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start sandboxes on a handler module in tmp_path; close them and check one outcome per id after."""
    (tmp_path / "fns.py").write_text(textwrap.dedent(HANDLERS), encoding="utf-8")
    started: list[tuple[Sandbox, Outcomes]] = []

    def make(
        handler: str = "fns:main",
        concurrency: int = 1,
        memory_mb: int = 256,
        on_outcomes: Callable[[list[Finished]], None] | None = None,
        **kw: Any,
    ) -> tuple[Sandbox, Outcomes]:
        outcomes = Outcomes()
        sandbox = Sandbox(
            handler=handler,
            base_dir=str(tmp_path),
            function="fn",
            prefix="bus",
            concurrency=concurrency,
            memory_mb=memory_mb,
            on_outcomes=on_outcomes or outcomes,
            **kw,
        )
        sandbox.start()
        started.append((sandbox, outcomes))
        return sandbox, outcomes

    yield make
    for sandbox, outcomes in started:
        sandbox.close(grace=0)
        assert {i: len(o) for i, o in outcomes.seen.items() if len(o) != 1} == {}


def event(data: Any, id: str = "e-1") -> bytes:
    return orjson.dumps(to_json_dict(CloudEvent.create(id=id, source="test", type="t", data=data)))


STRUCTURED = (("content-type", b"application/cloudevents+json"),)


def call(id: int, data: Any, *, timeout: float = 5.0, attempt: int = 1) -> Invocation:
    return Invocation(id=id, event=event(data, id=f"e-{id}"), attempt=attempt, timeout=timeout)


def test_results_and_signals_come_back_as_outcomes(start: Start) -> None:
    """Return values, exceptions, Retry and DeadLetter cross the process boundary with their shapes."""
    sandbox, outcomes = start()
    actions = ["ok", "none", "set", "raise", "retry", "dead", "exit"]
    for i, do in enumerate(actions):
        sandbox.submit(call(i, {"do": do}, attempt=2))
    got = outcomes.wait(*range(len(actions)))
    assert orjson.loads(got[0].value or b"") == {
        "echo": {"do": "ok"},
        "attempt": 2,
        "pid": sandbox_pid(got[0]),
    }
    assert (got[1].kind, got[1].value) == ("ok", b"null")
    assert (got[2].kind, got[2].error_type, got[2].cause) == ("failed", "ResultNotSerializable", "result")
    assert (got[3].kind, got[3].error_type, got[3].message, got[3].cause) == (
        "failed",
        "ValueError",
        "boom",
        "exception",
    )
    assert "raise ValueError" in got[3].traceback
    assert (got[4].kind, got[4].retry_after) == ("retry", 7)
    assert (got[5].kind, got[5].message) == ("dead_letter", "poison pill")
    assert (got[6].kind, got[6].error_type) == ("failed", "SystemExit")
    assert sandbox.restarts == 0


def sandbox_pid(outcome: Outcome) -> int:
    pid = orjson.loads(outcome.value or b"")["pid"]
    assert isinstance(pid, int)
    return pid


def test_emitted_events_travel_with_the_outcome(start: Start) -> None:
    """ctx.emit in the host gives structured events whose ids depend only on the input and the order."""
    sandbox, outcomes = start()
    sandbox.submit(call(1, {"do": "emit"}))
    sandbox.submit(Invocation(id=2, event=event({"do": "emit"}, id="e-1"), attempt=2, timeout=5))
    first, again = outcomes.wait(1, 2).values()
    ids = orjson.loads(first.value or b"")
    assert [orjson.loads(raw)["id"] for raw in first.emitted] == ids
    assert orjson.loads(again.value or b"") == ids
    made = orjson.loads(first.emitted[0])
    assert (made["type"], made["data"], made["causationid"]) == ("thing.made", {"n": 0}, "e-1")
    assert made["source"] == "bus://bus/functions/fn"


def test_async_handlers_run_concurrently_on_the_host_loop(start: Start) -> None:
    """An async handler runs up to `concurrency` invocations at once on the host's event loop."""
    sandbox, outcomes = start("fns:amain", concurrency=8)
    began = time.monotonic()
    for i in range(8):
        sandbox.submit(call(i, {"do": "sleep", "s": 0.2}))
    got = outcomes.wait(*range(8))
    assert time.monotonic() - began < 1.0
    assert {o.value for o in got.values()} == {b'"slept"'}


def test_async_timeout_is_cooperative(start: Start) -> None:
    """An async handler past its timeout is cancelled by the host itself: no restart."""
    sandbox, outcomes = start("fns:amain")
    sandbox.submit(call(1, {"do": "sleep", "s": 30}, timeout=0.3))
    sandbox.submit(call(2, {"do": "ok"}))
    late, fine = outcomes.wait(1, 2).values()
    assert (late.kind, late.error_type, late.cause) == ("failed", "TimeoutError", "timeout")
    assert late.message == "did not finish within 0.3s"
    assert fine.kind == "ok"
    assert sandbox.restarts == 0


def test_sync_handlers_run_in_a_pool_of_concurrency_threads(start: Start) -> None:
    """16 invocations sleeping 0.2 s with concurrency 16 take about 0.2 s, not 3.2 s."""
    sandbox, outcomes = start(concurrency=16)
    began = time.monotonic()
    for i in range(16):
        sandbox.submit(call(i, {"do": "sleep", "s": 0.2}))
    outcomes.wait(*range(16))
    assert time.monotonic() - began < 1.0


def test_a_hanging_handler_times_out_and_the_next_host_serves(start: Start) -> None:
    """A hanging sync handler fails with TimeoutError once timeout and grace pass; a new host takes over."""
    sandbox, outcomes = start()
    began = time.monotonic()
    sandbox.submit(call(1, {"do": "hang"}, timeout=0.5))
    hung = outcomes.wait(1)[1]
    waited = time.monotonic() - began
    assert 0.5 <= waited < 0.5 + TIMEOUT_GRACE + 1.5
    assert (hung.kind, hung.error_type, hung.cause) == ("failed", "TimeoutError", "timeout")
    assert hung.message == "did not finish within 0.5s"
    sandbox.submit(call(2, {"do": "ok"}))
    assert outcomes.wait(2)[2].kind == "ok"
    assert sandbox.restarts == 1


def test_the_neighbour_of_a_timed_out_invocation_runs_again_unharmed(start: Start) -> None:
    """Invocations on the host killed for another's timeout run again on the next host, same attempt."""
    sandbox, outcomes = start(concurrency=2)
    sandbox.submit(call(1, {"do": "hang"}, timeout=0.2))
    sandbox.submit(call(2, {"do": "sleep", "s": 1.0}, attempt=3))
    got = outcomes.wait(1, 2)
    assert got[1].cause == "timeout"
    assert got[2].kind == "ok"
    assert orjson.loads(got[2].value or b"")["attempt"] == 3
    assert sandbox.restarts == 1


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie that nobody reaps counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@pytest.mark.parametrize("setsid", [False, True], ids=["in-the-host-group", "in-a-session-of-its-own"])
def test_a_child_forked_by_a_hung_handler_holds_nothing_up(
    start: Start, tmp_path: Path, setsid: bool
) -> None:
    """A child holding the host's pipes delays neither the next host nor close; in the host group it dies."""
    sandbox, outcomes = start()
    pidfile = tmp_path / "child.pid"
    began = time.monotonic()
    sandbox.submit(call(1, {"do": "fork", "pidfile": str(pidfile), "setsid": setsid}, timeout=0.5))
    sandbox.submit(call(2, {"do": "ok"}))
    try:
        got = outcomes.wait(1, 2)
        assert (got[1].cause, got[2].kind) == ("timeout", "ok")
        assert time.monotonic() - began < 0.5 + TIMEOUT_GRACE + 2.0  # room for the next host's start
        closing = time.monotonic()
        sandbox.close(grace=1)
        assert time.monotonic() - closing < 2.0
        child = int(pidfile.read_text())
        deadline = time.monotonic() + 2.0
        while not setsid and alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert alive(child) == setsid
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_text_that_is_not_utf8_costs_no_outcome(start: Start) -> None:
    """Lone surrogates in a message, reason, result or emitted event fail only their own invocation."""
    sandbox, outcomes = start(concurrency=4)
    hows = ["raise", "dead", "retry", "emit", "return"]
    for i, how in enumerate(hows):
        sandbox.submit(call(i, {"do": "bad-text", "how": how}))
    sandbox.submit(call(9, {"do": "ok"}))
    got = outcomes.wait(*range(len(hows)), 9, timeout=5)
    assert [(got[i].kind, got[i].error_type, got[i].cause) for i in range(len(hows))] == [
        ("failed", "ValueError", "exception"),
        ("dead_letter", "DeadLetter", "exception"),
        ("retry", "Retry", "exception"),
        ("failed", "TypeError", "exception"),
        ("failed", "ResultNotSerializable", "result"),
    ]
    assert [got[i].message for i in range(3)] == ["path \\udc80"] * 3
    assert "ValueError: path \\udc80" in got[0].traceback
    assert got[9].kind == "ok"
    assert sandbox.restarts == 0


@pytest.mark.parametrize("gone", ["python", "fns.py"])
def test_hosts_that_cannot_start_fail_the_waiting_invocations_until_one_can(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture, gone: str
) -> None:
    """After START_FAILURES failed starts in a row waiting invocations fail; starts go on until one works."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    sandbox, outcomes = start(python=str(python))
    (tmp_path / gone).rename(tmp_path / "moved")
    with caplog.at_level(logging.ERROR, logger="bus.sandbox"):
        sandbox.submit(call(1, {"do": "crash"}))
        assert outcomes.wait(1)[1].error_type == "HandlerCrashed"
        sandbox.submit(call(2, {"do": "ok"}))
        waited = outcomes.wait(2)[2]
    assert (waited.kind, waited.error_type, waited.cause) == ("failed", "HostStartFailed", "crash")
    assert waited.message.startswith(f"{START_FAILURES} attempts to start a handler host failed: handler")
    logged = [r for r in caplog.records if r.getMessage() == "host_start_failed"]
    assert len(logged) >= START_FAILURES
    (tmp_path / "moved").rename(tmp_path / gone)
    sandbox.submit(call(3, {"do": "ok"}))
    assert outcomes.wait(3)[3].kind == "ok"


def test_handler_threads_have_stack_enough_for_the_recursion_limit(start: Start) -> None:
    """Recursion close to the default limit of 1000, through C at each level, fits a handler thread."""
    sandbox, outcomes = start(concurrency=2)
    sandbox.submit(call(1, {"do": "recurse", "depth": 900}))
    assert outcomes.wait(1)[1].value == b"900"


def test_an_outcome_that_cannot_be_sent_becomes_a_failure_of_its_own() -> None:
    """Escaped surrogates go through as text; a value that is not UTF-8 fails only its invocation."""
    frame = (
        b"["
        + b",".join(
            [
                encode_outcome(Outcome(id=1, kind="failed", message="caf\udce9", cause="exception")),
                encode_outcome(Outcome(id=2, kind="ok", value=b"\xff", duration=0.5)),
                encode_outcome(Outcome(id=3, kind="ok", value=b"1")),
            ]
        )
        + b"]"
    )
    first, second, third = decode_outcomes(frame)
    assert isinstance(first, Outcome)
    assert isinstance(second, Outcome)
    assert isinstance(third, Outcome)
    assert first.message == "caf\\udce9"
    assert (second.kind, second.error_type, second.cause, second.duration) == (
        "failed",
        "OutcomeNotSerializable",
        "result",
        0.5,
    )
    assert (third.kind, third.value) == ("ok", b"1")


def test_the_data_limit_counts_small_thread_stacks() -> None:
    """The data limit is the memory budget plus 1 MiB of stack per handler thread and per spare thread."""
    assert data_limit(256, 64) == (256 + 64 + 8) << 20


@pytest.mark.parametrize(
    ("do", "error_type", "cause", "says"),
    [
        # os._exit with nothing else in flight: that invocation, naming the exit code.
        ("crash", "HandlerCrashed", "crash", "exited with code 3"),
        # A malformed outcome: the host is killed, and the invocation says why, not a crash.
        ("garble", "HostProtocolError", "protocol", "malformed outcome [1, 2, 3, 4, 5]"),
    ],
)
def test_a_host_that_dies_alone_charges_its_invocation_with_the_cause_and_a_new_one_serves(
    start: Start, do: str, error_type: str, cause: str, says: str
) -> None:
    """A host that dies with one invocation in flight fails it with the cause; the next runs."""
    sandbox, outcomes = start()
    sandbox.submit(call(1, {"do": do}))
    died = outcomes.wait(1)[1]
    assert (died.kind, died.error_type, died.cause) == ("failed", error_type, cause)
    assert says in died.message
    sandbox.submit(call(2, {"do": "ok"}))
    assert outcomes.wait(2)[2].kind == "ok"


def test_a_host_out_of_memory_outside_a_handler_is_a_memory_failure(start: Start) -> None:
    """A host exiting with the out-of-memory code charges its invocation with cause "memory"."""
    sandbox, outcomes = start(memory_mb=128)
    sandbox.submit(call(1, {"do": "crash", "code": EXIT_MEMORY}))
    died = outcomes.wait(1)[1]
    assert (died.error_type, died.cause) == ("MemoryError", "memory")
    assert died.message.startswith("memory limit of 128 MiB exceeded")


def test_a_crash_among_several_is_charged_to_the_culprit_only(start: Start) -> None:
    """With several in flight, each runs again alone; only the one that crashes alone is charged."""
    sandbox, outcomes = start(concurrency=4)
    sandbox.submit(call(1, {"do": "crash", "s": 0.1}))
    for i in (2, 3, 4):
        sandbox.submit(call(i, {"do": "sleep", "s": 0.3}))
    got = outcomes.wait(1, 2, 3, 4)
    assert got[1].error_type == "HandlerCrashed"
    assert [got[i].kind for i in (2, 3, 4)] == ["ok", "ok", "ok"]
    assert sandbox.restarts >= 2


def test_allocating_past_the_memory_limit_is_a_memory_error(start: Start) -> None:
    """A 2 GiB allocation under a 256 MiB limit fails with cause "memory"; the host keeps serving."""
    sandbox, outcomes = start(memory_mb=256)
    sandbox.submit(call(1, {"do": "alloc"}))
    blown = outcomes.wait(1)[1]
    assert (blown.kind, blown.error_type, blown.cause) == ("failed", "MemoryError", "memory")
    assert blown.message.startswith("memory limit of 256 MiB exceeded")
    sandbox.submit(call(2, {"do": "ok"}))
    assert outcomes.wait(2)[2].kind == "ok"
    assert sandbox.restarts == 0


def test_the_host_sees_no_platform_credentials(start: Start) -> None:
    """Kafka and bus variables and the function's secrets are not in the handler's environment."""
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": "/home/fn",
        "BUS_KAFKA_BOOTSTRAP": "kafka:9092",
        "KAFKA_SASL_PASSWORD": "hunter2",
        "BUS_API_KEY": "k",
        "BUS_LOG_LEVEL": "WARNING",
        "UPLOADS_SECRET": "s3cr3t",
        "APP_SETTING": "kept",
    }
    sandbox, outcomes = start(environ=environ, secret_names=["UPLOADS_SECRET"])
    sandbox.submit(call(1, {"do": "env"}))
    names = set(orjson.loads(outcomes.wait(1)[1].value or b""))
    assert {"PATH", "HOME", "BUS_LOG_LEVEL", "APP_SETTING", "MALLOC_ARENA_MAX"} <= names
    assert not names & {"BUS_KAFKA_BOOTSTRAP", "KAFKA_SASL_PASSWORD", "BUS_API_KEY", "UPLOADS_SECRET"}


def test_host_environment_drops_credentials_and_caps_arenas() -> None:
    """The host environment is the worker's less BUS_*/KAFKA_* (but the log level) and named secrets."""
    env = host_environment(
        {"BUS_X": "1", "KAFKA_Y": "2", "BUS_LOG_LEVEL": "DEBUG", "S": "3", "T": "4"}, ["S"]
    )
    assert env["BUS_LOG_LEVEL"] == "DEBUG"
    assert env["T"] == "4"
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert not {"BUS_X", "KAFKA_Y", "S"} & set(env)


def test_printing_handlers_do_not_disturb_the_protocol(start: Start) -> None:
    """A handler's print goes to stderr, not into the frames the host writes."""
    sandbox, outcomes = start()
    sandbox.submit(call(1, {"do": "print"}))
    assert outcomes.wait(1)[1].value == b'"printed"'


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        ("nosuchmodule:main", r"cannot import 'nosuchmodule'"),
        ("fns:missing", r"'fns' has no attribute 'missing'"),
    ],
)
def test_a_handler_that_cannot_load_fails_start(start: Start, handler: str, reason: str) -> None:
    """start() raises HandlerLoadError with the host's reason, naming the module."""
    with pytest.raises(HandlerLoadError, match=reason):
        start(handler)


def test_ready_is_logged_with_the_cold_start(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    """The host's start is logged as host_ready with its cold start in milliseconds."""
    with caplog.at_level(logging.INFO, logger="bus.sandbox"):
        sandbox, _ = start()
    ready = [r for r in caplog.records if r.getMessage() == "host_ready"]
    assert ready
    assert ready[-1].fields["cold_start_ms"] > 0  # type: ignore[attr-defined]
    assert 0 < sandbox.cold_start_seconds < 10


def test_close_waits_for_in_flight_invocations(start: Start) -> None:
    """close() lets what is running finish and deliver, then stops the host; submit is refused after."""
    sandbox, outcomes = start()
    sandbox.submit(call(1, {"do": "sleep", "s": 0.3}))
    sandbox.close(grace=5)
    assert outcomes.seen[1][0].kind == "ok"
    assert sandbox.in_flight() == 0
    with pytest.raises(RuntimeError, match="not running"):
        sandbox.submit(call(2, {"do": "ok"}))


def test_close_gives_up_after_grace_without_an_outcome(start: Start) -> None:
    """An invocation still running when the grace ends gets no outcome; close returns promptly."""
    sandbox, outcomes = start()
    sandbox.submit(call(1, {"do": "hang"}, timeout=30))
    began = time.monotonic()
    sandbox.close(grace=0.2)
    assert time.monotonic() - began < 3
    assert outcomes.seen == {}


def test_outcomes_arrive_on_a_sandbox_thread(start: Start) -> None:
    """on_outcome runs on the sandbox's own threads, never on the caller's."""
    sandbox, outcomes = start()
    sandbox.submit(call(1, {"do": "ok"}))
    outcomes.wait(1)
    assert all(name.startswith("bus-sandbox-") for name in outcomes.threads)


def test_a_host_whose_input_ends_exits_after_its_deadlines(tmp_path: Path) -> None:
    """A host whose parent is gone (stdin at its end) exits once its last deadline passes, even if hung."""
    (tmp_path / "fns.py").write_text(textwrap.dedent(HANDLERS), encoding="utf-8")
    config = {"handler": "fns:main", "base_dir": str(tmp_path), "function": "fn", "prefix": "bus"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-P",
            "-m",
            "workers.host",
            orjson.dumps({**config, "concurrency": 1, "memory_mb": 256}),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=host_environment(os.environ),
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert "ready" in orjson.loads(read_frame(proc.stdout) or b"{}")
        hang = (1, 1, None, event({"do": "hang"}), STRUCTURED)
        proc.stdin.write(encode_runs([Run(calls=[hang], timeout=0.3)]))
        proc.stdin.close()
        began = time.monotonic()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - began < 1.0  # at once, not after the hanging handler
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_failing_on_outcome_does_not_stop_the_sandbox(start: Start) -> None:
    """An exception in the caller's on_outcomes is logged; later outcomes still arrive."""
    outcomes = Outcomes()
    raised = threading.Event()

    def flaky(delivered: list[Finished]) -> None:
        if any(isinstance(outcome, Outcome) and outcome.id == 1 for outcome in delivered):
            raised.set()
            raise RuntimeError("caller bug")
        outcomes(delivered)

    sandbox, _ = start(on_outcomes=flaky)
    sandbox.submit(call(1, {"do": "ok"}))
    assert raised.wait(10)
    sandbox.submit(call(2, {"do": "ok"}))
    assert outcomes.wait(2)[2].kind == "ok"


def run_of(
    *calls: tuple[int, Any], timeout: float = 5.0, stop: bool = False, breaks: tuple[int, ...] = ()
) -> Run:
    return Run(
        calls=[(id, 1, None, event(data, id=f"e-{id}"), STRUCTURED) for id, data in calls],
        timeout=timeout,
        stop_on_failure=stop,
        breaks=breaks,
    )


def test_a_run_runs_in_order_and_reports_each_outcome(start: Start) -> None:
    """A run's invocations run one after another on one host thread; each gets its own outcome, in order."""
    sandbox, outcomes = start(concurrency=4)
    sandbox.submit_runs([run_of(*((i, {"do": "sleep", "s": 0.01}) for i in range(1, 6)))])
    got = outcomes.wait(*range(1, 6))
    assert outcomes.order == [1, 2, 3, 4, 5]
    assert all(o.kind == "ok" for o in got.values())


def test_a_run_stopping_on_failure_skips_the_rest(start: Start) -> None:
    """With stop_on_failure the calls after the first failure do not run: they come back skipped."""
    sandbox, outcomes = start()
    sandbox.submit_runs([run_of((1, {"do": "ok"}), (2, {"do": "raise"}), (3, {"do": "ok"}), stop=True)])
    got = outcomes.wait(1, 2, 3)
    assert [got[i].kind for i in (1, 2, 3)] == ["ok", "failed", "skipped"]
    sandbox.submit_runs([run_of((4, {"do": "raise"}), (5, {"do": "ok"}))])
    assert [outcomes.wait(4, 5)[i].kind for i in (4, 5)] == ["failed", "ok"]  # without it, all run


def test_a_timeout_inside_a_run_is_charged_to_the_late_call(start: Start) -> None:
    """A run's call is timed from the answer before it: the hanging call times out, in time."""
    sandbox, outcomes = start()
    began = time.monotonic()
    sandbox.submit_runs(
        [
            run_of(
                (1, {"do": "sleep", "s": 0.3}),
                (2, {"do": "sleep", "s": 0.3}),
                (3, {"do": "hang"}),
                (4, {"do": "ok"}),
                timeout=0.5,
            )
        ]
    )
    got = outcomes.wait(1, 2, 3, 4)
    waited = time.monotonic() - began
    assert [got[i].kind for i in (1, 2, 4)] == ["ok", "ok", "skipped"]
    assert (got[3].error_type, got[3].cause) == ("TimeoutError", "timeout")
    assert 0.6 + 0.5 <= waited < 0.6 + 0.5 + TIMEOUT_GRACE + 1.5
    sandbox.submit(call(5, {"do": "ok"}))
    assert outcomes.wait(5)[5].kind == "ok"
    assert sandbox.restarts == 1


def test_a_crash_inside_a_run_is_charged_to_its_call_alone(start: Start) -> None:
    """A crash mid-run: the first unanswered call runs again alone, the rest come back skipped.

    The caller runs the skipped ones again (as the worker does): only the crashing call is charged.
    """
    sandbox, outcomes = start()
    data = {1: {"do": "ok"}, 2: {"do": "crash"}, 3: {"do": "ok"}, 4: {"do": "ok"}}
    final: dict[int, Outcome] = {}
    tries = itertools.count(100)
    names: dict[int, int] = {}  # submitted id -> the call it stands for
    todo = [1, 2, 3, 4]
    deadline = time.monotonic() + 20
    while todo and time.monotonic() < deadline:
        ids = [next(tries) for _ in todo]
        names.update(zip(ids, todo, strict=True))
        sandbox.submit_runs([run_of(*((i, data[names[i]]) for i in ids))])
        got = outcomes.wait(*ids)
        todo = [names[i] for i in ids if got[i].kind == "skipped"]
        final.update({names[i]: got[i] for i in ids if got[i].kind != "skipped"})
    assert [final[i].kind for i in (1, 3, 4)] == ["ok", "ok", "ok"]
    assert (final[2].error_type, final[2].cause) == ("HandlerCrashed", "crash")


@pytest.mark.parametrize("handler", ["fns:main", "fns:amain"])
def test_other_lanes_behind_a_stalled_call_are_handed_back_and_run_meanwhile(
    start: Start, tmp_path: Path, handler: str
) -> None:
    """Calls of other lanes bundled behind a call that runs long run on another thread; its own
    lane's later calls stay behind it, in order."""
    gate = tmp_path / "gate"
    sandbox, outcomes = start(handler=handler, concurrency=2)
    wait, ok = {"do": "wait", "gate": str(gate)}, {"do": "ok"}
    sandbox.submit_runs([run_of((1, wait), (2, ok), (3, ok), (4, ok), (5, ok), breaks=(2, 3))])
    got = outcomes.wait(3, 4, 5)
    assert [got[i].kind for i in (3, 4, 5)] == ["ok", "ok", "ok"]
    assert 1 not in outcomes.seen  # still waiting
    assert 2 not in outcomes.seen  # behind it, in its lane
    gate.touch()
    got = outcomes.wait(1, 2)
    assert [got[i].kind for i in (1, 2)] == ["ok", "ok"]
    assert outcomes.order.index(1) < outcomes.order.index(2)
    assert sandbox.restarts == 0


def test_a_run_ended_by_a_failure_has_nothing_left_to_hand_back() -> None:
    """After stop_on_failure skipped the rest of a run, a cut the watch had decided on before finds
    nothing: the skipped calls are never handed back as well (they got their one outcome)."""
    calls: list[Call] = [(id, 1, None, b"{}", STRUCTURED) for id in range(1, 5)]
    progress = _Progress(calls, (1, 3))
    assert progress.cut() == 2  # a stall in the first lane's call: the other lanes go back
    progress = _Progress(calls, (1, 3))
    progress.index = progress.end = 1  # what the host's _run leaves after a failure of the first call
    assert progress.cut() is None


def test_no_hand_back_while_every_handler_thread_is_busy(start: Start) -> None:
    """With no thread free (concurrency 1), the calls behind a stalled one stay in its run: handed
    back, they would queue behind the runs sent meanwhile and finish later than staying put."""
    sandbox, outcomes = start(concurrency=1)
    stalled = run_of((1, {"do": "sleep", "s": 0.4}), (2, {"do": "ok"}), breaks=(1,))
    queued = [run_of((id, {"do": "ok"})) for id in (3, 4)]
    sandbox.submit_runs([stalled, *queued])
    outcomes.wait(1, 2, 3, 4)
    assert outcomes.order == [1, 2, 3, 4]


def test_a_stalled_call_keeps_its_deadline_when_the_rest_of_its_run_is_handed_back(start: Start) -> None:
    """The hanging call times out on time (its clock is not restarted by the other lanes'
    outcomes); its lane's next call is skipped, the other lane's call ran long before."""
    sandbox, outcomes = start(concurrency=2)
    began = time.monotonic()
    sandbox.submit_runs(
        [run_of((1, {"do": "hang"}), (2, {"do": "ok"}), (3, {"do": "ok"}), timeout=2.0, breaks=(2,))]
    )
    assert outcomes.wait(3)[3].kind == "ok"
    assert time.monotonic() - began < 2.0  # before the hanging call's timeout
    got = outcomes.wait(1, 2)
    waited = time.monotonic() - began
    assert (got[1].error_type, got[1].cause, got[2].kind) == ("TimeoutError", "timeout", "skipped")
    assert 2.0 <= waited < 2.0 + TIMEOUT_GRACE + 1.5


def test_a_failure_after_a_hand_back_skips_only_its_own_lane(start: Start, tmp_path: Path) -> None:
    """With stop_on_failure, a stalled call that then fails skips its lane's later calls; the
    handed-back lanes ran on their own."""
    gate = tmp_path / "gate"
    sandbox, outcomes = start(concurrency=2)
    fail = {"do": "wait", "gate": str(gate), "then": "raise"}
    sandbox.submit_runs([run_of((1, fail), (2, {"do": "ok"}), (3, {"do": "ok"}), stop=True, breaks=(2,))])
    assert outcomes.wait(3)[3].kind == "ok"
    gate.touch()
    got = outcomes.wait(1, 2)
    assert (got[1].kind, got[2].kind) == ("failed", "skipped")


def test_a_hand_back_that_splits_a_lane_is_a_protocol_error(start: Start) -> None:
    """A host may hand back calls only from a lane's first on: otherwise a key could run twice at once."""
    sandbox, outcomes = start(concurrency=2)
    garble = {"do": "garble", "frame": '[["back", 1]]'}  # its own call: the middle of its lane
    sandbox.submit_runs([run_of((1, garble), (2, {"do": "ok"}), (3, {"do": "ok"}), breaks=(2,))])
    got = outcomes.wait(1, 2, 3)
    assert (got[1].error_type, got[1].cause) == ("HostProtocolError", "protocol")
    assert "split a lane's calls" in got[1].message
    assert (got[2].kind, got[3].kind) == ("skipped", "skipped")


def test_runs_travel_to_the_host_with_their_breaks() -> None:
    """What encode_runs frames, read_runs and calls_of give back: timeout, stop flag, breaks, calls."""
    run = run_of(
        (1, {"do": "ok"}), (2, {"do": "ok"}), (3, {"do": "ok"}), timeout=2.5, stop=True, breaks=(1, 2)
    )
    [(timeout, stop, breaks, pickled)] = read_runs(encode_runs([run])[4:])
    assert (timeout, stop, breaks, calls_of(pickled)) == (2.5, True, (1, 2), run.calls)


def test_a_runs_tail_and_head_keep_its_breaks_in_place() -> None:
    """Splitting a run at a break moves the later breaks along with the calls."""
    run = run_of(*((i, {"do": "ok"}) for i in range(5)), breaks=(2, 3))
    tail, head = run.tail(2), run.head(2)
    assert ([call[0] for call in tail.calls], tail.breaks) == ([2, 3, 4], (1,))
    assert ([call[0] for call in head.calls], head.breaks) == ([0, 1], ())
    assert run.tail(3).breaks == ()
    assert run.head(4).breaks == (2, 3)


def test_hand_backs_are_read_and_checked() -> None:
    """`["back", id]` is a hand-back; with anything but an id it is malformed."""
    assert decode_outcomes(b'[["back", 7]]') == [HandedBack(7)]
    for bad in (b'[["back", "7"]]', b'[["fwd", 7]]'):
        with pytest.raises(ValueError, match="malformed outcome"):
            decode_outcomes(bad)


def collector(count: int) -> tuple[list[Finished], threading.Event, Callable[[list[Finished]], None]]:
    """What a sandbox delivers, and an event set once it answered `count` invocations."""
    delivered: list[Finished] = []
    arrived = threading.Event()

    def collect(outcomes: list[Finished]) -> None:
        delivered.extend(outcomes)
        if sum(len(o.ids) if isinstance(o, Results) else 1 for o in delivered) >= count:
            arrived.set()

    return delivered, arrived, collect


def test_results_come_back_as_records_built_by_the_host(start: Start) -> None:
    """With results on, ok outcomes of a run come as `Results` with the result records the host built."""
    delivered, arrived, collect = collector(3)
    sandbox, _ = start(on_outcomes=collect, results=True, max_record_bytes=1 << 20)
    sandbox.submit_runs([run_of((1, {"do": "none"}), (2, {"do": "ok"}), (3, {"do": "none"}))])
    assert arrived.wait(10)
    assert all(isinstance(results, Results) for results in delivered)
    ids = [id for results in delivered for id in results.ids]  # type: ignore[union-attr]
    records = [
        (key, value, headers)
        for results in delivered
        for key, value, headers in zip(results.keys, results.values, results.headers, strict=True)  # type: ignore[union-attr]
    ]
    durations = [d for results in delivered for d in results.durations]  # type: ignore[union-attr]
    assert ids == [1, 2, 3]
    key, value, headers = records[0]
    assert (key, value, headers["ce_type"], headers["ce_causationid"]) == (
        None,
        None,
        "bus.function.result",
        "e-1",
    )
    assert headers["ce_source"] == "bus://bus/functions/fn"
    assert orjson.loads(records[1][1] or "")["echo"] == {"do": "ok"}
    assert all(d >= 0 for d in durations)


@pytest.mark.parametrize(("middle", "stop"), [("raise", False), ("emit", True), ("retry", False)])
def test_a_full_outcome_between_oks_keeps_the_runs_order(start: Start, middle: str, stop: bool) -> None:
    """With results on, [ok, <a full outcome>, ok] comes back in that order: the ok after it is not
    folded into the `Results` before it (which the sandbox refuses as out of order, killing the host)."""
    delivered, arrived, collect = collector(3)
    sandbox, _ = start(on_outcomes=collect, results=True, max_record_bytes=1 << 20)
    sandbox.submit_runs([run_of((1, {"do": "ok"}), (2, {"do": middle}), (3, {"do": "ok"}), stop=stop)])
    assert arrived.wait(10)
    order = [id for o in delivered for id in (o.ids if isinstance(o, Results) else [o.id])]
    assert order == [1, 2, 3]
    assert sandbox.restarts == 0


RESULTS = [[1, 2], [0.5, 0.25], ["k", None], [None, "1"], [{"ce_id": "a"}, {}]]


@pytest.mark.parametrize(
    ("index", "bad"),
    [
        (0, []),
        (0, [1, "2"]),
        (0, [1.0, 2]),
        (1, [0.5]),
        (1, [0.5, "x"]),
        (1, [0.5, float("nan")]),
        (1, [0.5, -1.0]),
        (1, [0.5, 1e308]),
        (2, ["k", 1]),
        (2, ["k"]),
        (3, [None, 1]),
        (4, [{"ce_id": 1}, {}]),
        (4, [["ce_id", "a"], {}]),
        (4, {}),
    ],
)
def test_malformed_results_are_refused(index: int, bad: object) -> None:
    """The host is not trusted: every list of `Results` is checked, element by element (ValueError)."""
    fields = list(RESULTS)
    fields[index] = bad
    with pytest.raises(ValueError, match="malformed outcome"):
        decode_outcomes(orjson.dumps([fields]))
    (good,) = decode_outcomes(orjson.dumps([RESULTS]))
    assert good == Results(*RESULTS)  # type: ignore[arg-type]  # the lists as JSON reads them
    (bare,) = decode_outcomes(orjson.dumps([[[1, 2], [0.5, 0.25], [], [], []]]))
    assert bare == Results([1, 2], [0.5, 0.25], [], [], [])


LONG = [1, "failed", None, [], "ValueError", "boom", "", None, "exception", 0.5]


@pytest.mark.parametrize(
    ("index", "bad"),
    [(0, [1]), (0, "1"), (1, "evil"), (2, 1), (3, [1]), (3, "x"), (4, None), (7, "soon"), (9, None)],
)
def test_a_malformed_long_form_outcome_is_refused(index: int, bad: object) -> None:
    """The host is not trusted: every field of a long-form outcome is checked (ValueError)."""
    fields = list(LONG)
    fields[index] = bad
    with pytest.raises(ValueError, match="malformed outcome"):
        decode_outcomes(orjson.dumps([fields]))
    (good,) = decode_outcomes(orjson.dumps([LONG]))
    assert isinstance(good, Outcome)
    assert good.error_type == "ValueError"

"""The worker's side of handler isolation: one host process, watched, restarted, fed invocations.

A `Sandbox` runs a function's handler in a child process (`workers.host`) started with
`subprocess.Popen`, never forked (the worker has Kafka client threads). The host sees the
worker's environment without platform credentials, has its data segment capped, and lives in
its own session so a Ctrl-C on the worker's terminal does not cut handlers off mid-way.

Invocations travel in runs (`workers.invocation.Run`): a host runs a run's invocations one
after another on one handler thread and reports each outcome as it ends (several share a write,
`workers.host.FLUSH_AFTER`). A run that bundles several lanes' calls (`Run.breaks`) may come
back in part: behind a call that runs long the host hands back the other lanes' calls
(`workers.invocation.HandedBack`), and they are sent again as a run of their own. Three threads
serve a sandbox: the host thread (starts hosts, reads outcomes and sends the next runs as room
frees up, restarts after an exit), the sender (sends what `submit` queues) and the watchdog
(kills a host whose invocation is past its deadline). A host is sent up to `concurrency` runs
to run plus a few more to queue, so a new one starts without a round trip; the sandbox mirrors
the host's first-in-first-out queue to know when each run started, and takes an invocation of a
run to start when the outcome before it arrives, and so knows when its deadline falls. Every
submitted invocation gets exactly one outcome, unless `close` returns first:

- timeout: the late invocation fails ("TimeoutError", cause "timeout") and the rest of its run is
  "skipped"; the host is killed and the other runs on it run again on the next host, same
  attempt (they did nothing wrong);
- crash: with one invocation unanswered on the host it is charged ("HandlerCrashed", cause
  "crash", or "MemoryError"/"memory" when the host ran out of memory); with several, the first
  unanswered one of each run runs again alone (`solo`), the rest are "skipped", and only one
  that takes a host down while alone is charged;
- protocol: a host that sends a malformed frame or outcome is killed; what it held is settled as
  for a crash, but charged as "HostProtocolError" (cause "protocol"), naming what was malformed;
- no host: after `START_FAILURES` failed starts in a row, each further failure fails every
  invocation waiting for a host ("HostStartFailed", cause "crash"); starts go on, backing off.

A skipped invocation did not run (or its outcome was lost with its host): its caller runs it
again when it likes, in order behind the ones before it.

Signals go to the host's process group, so what a handler forked dies with its host, and a host
counts as gone when its process exits, even while a child it left holds its pipes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

import orjson

from bus.errors import HandlerLoadError
from bus.kafka_binding import STRUCTURED_CONTENT_TYPE
from bus.logs import log_event
from workers.host import EXIT_MEMORY, decode_outcomes, encode_runs, read_frame
from workers.invocation import (
    Call,
    Finished,
    HandedBack,
    Invocation,
    Outcome,
    Results,
    Run,
    crashed,
    failed,
    timed_out,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["MAX_BACKOFF", "START_FAILURES", "START_TIMEOUT", "TIMEOUT_GRACE", "Sandbox", "host_environment"]

logger = logging.getLogger("bus.sandbox")

TIMEOUT_GRACE = 0.5
"""Seconds past an invocation's timeout before its host is killed (an async handler's own
timeout fires first and costs no restart)."""
START_TIMEOUT = 60.0
"""Seconds a host may take to import its handler before it counts as failing to start."""
MAX_BACKOFF = 5.0
"""Longest pause between restarts of a host that keeps dying without getting anything done."""
START_FAILURES = 5
"""Failed host starts in a row after which the invocations waiting for a host fail ("HostStartFailed")."""
QUEUED = 4
"""Runs a host holds queued beyond its `concurrency` (at least; `concurrency` when larger)."""

_NEVER = float("inf")
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_CREDENTIAL_PREFIXES = ("BUS_", "KAFKA_")
_KEPT = frozenset({"BUS_LOG_LEVEL"})
# The directory holding the `workers` and `bus` packages goes first on the host's path; `-P`
# keeps the working directory off it, so nothing there shadows them.
_PACKAGES_ROOT = str(Path(__file__).resolve().parent.parent)


def host_environment(environ: Mapping[str, str], secret_names: Iterable[str] = ()) -> dict[str, str]:
    """The host's environment: `environ` without platform credentials and the named secrets."""
    secrets = set(secret_names)
    env = {
        name: value
        for name, value in environ.items()
        if name not in secrets and (name in _KEPT or not name.startswith(_CREDENTIAL_PREFIXES))
    }
    env["MALLOC_ARENA_MAX"] = "2"  # glibc's per-thread arenas would multiply a threaded host's heap
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGES_ROOT + (os.pathsep + path if path else "")
    return env


_STRUCTURED = ((("content-type", STRUCTURED_CONTENT_TYPE.encode())),)


@dataclass(slots=True, eq=False)
class _Flight:
    """A run sent to a host and not answered in full yet."""

    run: Run
    host: _Process
    left: int
    """Calls not answered yet (the last ones of the run: outcomes come in order)."""
    started: float = 0.0
    """When the host began its current call, as far as the sandbox can tell; 0 while queued there."""
    deadline: float = _NEVER


class _Exit:
    """Tells when a host process exits, without reaping it (its pid keeps naming its group).

    Through a pidfd where Linux has one; elsewhere by `Popen.poll` every 0.1 s, which reaps.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        try:
            self.fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux 5.3+
            self.fd = -1

    def wait(self, timeout: float | None) -> bool:
        """Whether the host exits within `timeout` seconds (None: wait until it does)."""
        if self.fd >= 0:
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            return bool(poller.poll(None if timeout is None else timeout * 1000))
        deadline = _NEVER if timeout is None else time.monotonic() + timeout
        while self._proc.poll() is None:
            if (remaining := deadline - time.monotonic()) <= 0:
                return False
            time.sleep(min(remaining, 0.1))
        return True

    def watch(self, fd: int, events: int) -> Callable[[], bool]:
        """A wait until `fd` is ready for `events` (False) or the host has exited (True)."""
        poller = select.poll()
        poller.register(fd, events)
        if self.fd >= 0:
            pidfd = self.fd
            poller.register(pidfd, select.POLLIN)
            return lambda: any(ready == pidfd for ready, _ in poller.poll())

        def wait() -> bool:
            while not poller.poll(100):
                if self._proc.poll() is not None:
                    return True
            return False

        return wait

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Output(io.RawIOBase):
    """The read end of a host's output pipe, at its end once the host has exited and it is drained.

    A process the handler forked holds the pipe's write end as long as it lives: the end of
    file alone would keep the sandbox waiting for it after its host is dead.
    """

    def __init__(self, pipe: IO[bytes], exited: _Exit) -> None:
        self._pipe = pipe
        self._fd = pipe.fileno()
        self._exited = exited.watch(self._fd, select.POLLIN)
        os.set_blocking(self._fd, False)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: WriteableBuffer) -> int:
        while True:
            try:
                return os.readv(self._fd, [buffer])
            except BlockingIOError:
                if self._exited():
                    # What the host wrote before it exited is in the pipe already.
                    with contextlib.suppress(BlockingIOError):
                        return os.readv(self._fd, [buffer])
                    return 0

    def close(self) -> None:
        if not self.closed:
            self._pipe.close()
        super().close()


@dataclass(eq=False)
class _Process:
    """One host process and the sandbox's mirror of what it runs and holds queued."""

    proc: subprocess.Popen[bytes]
    exited: _Exit
    reader: BinaryIO
    running: int = 0
    queued: deque[_Flight] = field(default_factory=deque)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    signal_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held to signal its group and to reap it, so no signal goes to a pid reaped (free for reuse)."""
    killed_for: str = ""
    """Why the sandbox killed it ("timeout", "start", "close", "protocol"); "" while it lives or if it
    died alone."""
    broke: str = ""
    """What it sent that broke the protocol (killed for "protocol"): its invocations' failure says so."""
    progressed: bool = False
    """Whether it delivered an outcome: a host that dies without any counts towards backoff."""

    def write(self, payload: bytes) -> None:
        """Write all of `payload`; BrokenPipeError once the host has exited (whoever holds its pipe)."""
        stdin = self.proc.stdin
        assert stdin is not None
        with self.write_lock:
            fd = stdin.fileno()  # ValueError once released
            view = memoryview(payload)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    if self.exited.watch(fd, select.POLLOUT)():
                        raise BrokenPipeError(f"host {self.proc.pid} has exited") from None

    def signal(self, signum: int) -> None:
        """Send `signum` to the host's process group: the host and whatever its handler forked."""
        with self.signal_lock:
            if self.proc.returncode is None:  # not reaped: the host's pid still names its group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signum)

    def kill(self, reason: str) -> None:
        self.killed_for = self.killed_for or reason
        self.signal(signal.SIGKILL)

    def reap(self) -> int:
        """Wait for the host to exit, kill what is left in its group, then collect its exit code."""
        self.exited.wait(None)
        self.signal(signal.SIGKILL)  # a handler's child must not outlive its host
        with self.signal_lock:
            return self.proc.wait()

    def release(self) -> None:
        """Close the pipes of a reaped host."""
        with self.write_lock, contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.reader.close()
        self.exited.close()


class Sandbox:
    """A function's handler in a separate, restartable process; see the module docstring."""

    cold_start_seconds: float
    """Spawn to ready of the latest host, in seconds."""
    restarts: int
    """Hosts started after the first one."""

    def __init__(
        self,
        *,
        handler: str,
        base_dir: str,
        function: str,
        prefix: str,
        concurrency: int,
        memory_mb: int,
        on_outcomes: Callable[[list[Finished]], None],
        environ: Mapping[str, str] | None = None,
        secret_names: Iterable[str] = (),
        python: str = sys.executable,
        start_timeout: float = START_TIMEOUT,
        results: bool = False,
        max_record_bytes: int = 0,
    ) -> None:
        """`environ` is what the host's environment is made from (default: this process's).

        `on_outcomes` is called from a sandbox thread, one call at a time, with the outcomes that
        arrived together (those of one run in order); it may call `submit` but must not block
        for long or call `close`. With `results` the host builds the result record of each ok
        invocation without emitted events (`workers.outcome.result_record`, failing one over
        `max_record_bytes`) and delivers it in the short form (`workers.invocation.Finished`).
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._handler = handler
        self._function = function
        self._concurrency = concurrency
        self._window = concurrency + max(QUEUED, concurrency)
        self._memory_mb = memory_mb
        self._results = results
        self._on_outcomes = on_outcomes
        self._start_timeout = start_timeout
        config = {
            "handler": handler,
            "base_dir": base_dir,
            "function": function,
            "prefix": prefix,
            "concurrency": concurrency,
            "memory_mb": memory_mb,
            "results": results,
            "max_record_bytes": max_record_bytes,
        }
        self._command = [python, "-P", "-m", "workers.host", orjson.dumps(config).decode()]
        self._env = host_environment(os.environ if environ is None else environ, secret_names)
        self._lock = threading.Lock()
        self._sendable = threading.Condition(self._lock)
        self._watch = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._send_lock = threading.Lock()  # taking a batch and writing it, so hosts get them in order
        self._deliver_lock = threading.Lock()
        self._stop = threading.Event()
        self._state = "new"  # new -> running -> closing -> stopping -> closed
        self._pending: deque[Run] = deque()
        self._flights: dict[int, _Flight] = {}
        """Each call sent to a host and not answered, by id: its run's flight."""
        self._live: dict[_Flight, None] = {}
        """Runs sent to a host and not answered in full, in the order sent (a dict: an ordered set)."""
        self._outstanding: set[int] = set()
        self._solos = 0
        self._host: _Process | None = None
        self._starting: _Process | None = None
        self._watch_at = _NEVER
        self._threads: list[threading.Thread] = []
        self.cold_start_seconds = 0.0
        self.restarts = 0

    # -- the runtime's interface -------------------------------------------------------------

    def start(self) -> None:
        """Start the host and wait until its handler is imported; HandlerLoadError if it cannot be."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError("a sandbox starts once")
            self._state = "running"
        try:
            host = self._spawn()
        except BaseException:
            with self._lock:
                self._state = "closed"
            raise
        with self._lock:
            self._host = host
        loops = {"host": self._serve_hosts, "send": self._send_loop, "watch": self._watch_loop}
        for name, target in loops.items():
            thread = threading.Thread(target=target, name=f"bus-sandbox-{name}-{self._function}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def submit(self, invocation: Invocation) -> None:
        """Queue one invocation of an event in the JSON format (a run of one)."""
        call: Call = (invocation.id, invocation.attempt, None, invocation.event, _STRUCTURED)
        self.submit_runs([Run(calls=[call], timeout=invocation.timeout)])

    def submit_runs(self, runs: list[Run]) -> None:
        """Queue runs; each call's one outcome reaches `on_outcomes` later. Never waits for the host."""
        with self._lock:
            if self._state != "running":
                raise RuntimeError(f"sandbox of function {self._function!r} is not running ({self._state})")
            ids = {call[0] for run in runs for call in run.calls}
            if len(ids) != sum(len(run.calls) for run in runs) or not self._outstanding.isdisjoint(ids):
                raise ValueError("an invocation id submitted is already in flight (or given twice)")
            self._outstanding |= ids
            self._pending.extend(runs)
            if len(self._live) < self._window:
                self._sendable.notify()

    def in_flight(self) -> int:
        """Invocations submitted and not answered yet (queued here, queued in the host or running)."""
        with self._lock:
            return len(self._outstanding)

    def close(self, grace: float = 5.0) -> None:
        """Stop taking invocations, give those outstanding up to `grace` seconds, then stop the host.

        Invocations still outstanding when the grace ends get no outcome: their host is killed
        and, on Kafka, their records are consumed again by whoever takes the partition next.
        No outcome is delivered after close returns. Call it once, not from `on_outcome`.
        """
        deadline = time.monotonic() + grace
        with self._lock:
            if self._state in ("new", "closed"):
                self._state = "closed"
                return
            self._state = "closing"
            while self._outstanding and (remaining := deadline - time.monotonic()) > 0:
                self._drained.wait(remaining)
            self._state = "stopping"
            self._stop.set()
            self._sendable.notify_all()
            self._watch.notify_all()
            host = self._host
            starting = self._starting
        if starting is not None:
            starting.kill("close")
        if host is not None:
            self._stop_host(host, max(deadline - time.monotonic(), 0.5))
        for thread in self._threads:
            thread.join()
        with self._lock:
            self._state = "closed"
            self._host = None

    # -- hosts -------------------------------------------------------------------------------

    def _spawn(self) -> _Process:
        """Start a host and wait for its handler to load; HandlerLoadError if it does not."""
        spawned = time.monotonic()
        try:
            proc = subprocess.Popen(
                self._command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self._env,
                start_new_session=True,  # the terminal's Ctrl-C is for the worker, which closes gracefully
                bufsize=0,
            )
        except OSError as exc:
            raise HandlerLoadError(
                f"handler {self._handler!r}: cannot start its host with {self._command[0]!r} ({exc})"
            ) from exc
        assert proc.stdin is not None
        assert proc.stdout is not None
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):  # a bigger pipe means fewer wake-ups, nothing more
                fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        os.set_blocking(proc.stdin.fileno(), False)  # `_Process.write` waits for room or the host's exit
        exited = _Exit(proc)
        reader = io.BufferedReader(_Output(proc.stdout, exited), 1 << 16)
        host = _Process(proc=proc, exited=exited, reader=reader)
        with self._lock:
            self._starting = host  # for close() to stop
        timer = threading.Timer(self._start_timeout, host.kill, args=("start",))
        timer.daemon = True
        timer.start()
        try:
            payload = read_frame(host.reader)
        finally:
            timer.cancel()
            with self._lock:
                self._starting = None
        hello = _hello(payload)
        ready = hello.get("ready")
        if not isinstance(ready, int | float):
            code = self._discard(host, 1.0)
            error = hello.get("error")
            if isinstance(error, str):
                raise HandlerLoadError(error)
            if host.killed_for == "start":
                reason = f"not imported within {self._start_timeout:g}s"
            elif payload is not None:
                reason = f"its host sent {payload[:80]!r} instead of a hello"
            else:
                reason = f"the host {_exit_text(code)} before loading it"
            raise HandlerLoadError(f"handler {self._handler!r}: {reason}")
        self.cold_start_seconds = time.monotonic() - spawned
        log_event(
            logger,
            "host_ready",
            function=self._function,
            pid=proc.pid,
            cold_start_ms=round(self.cold_start_seconds * 1000, 1),
            import_ms=round(ready * 1000, 1),
            restarts=self.restarts,
        )
        return host

    def _stop_host(self, host: _Process, wait: float) -> None:
        """End of input (the host finishes and exits), then SIGTERM, then SIGKILL, to its group."""
        host.killed_for = host.killed_for or "close"
        # A writer stuck on a full pipe holds the lock: then the signals below do the stopping.
        if host.write_lock.acquire(timeout=0.2):
            try:
                with contextlib.suppress(OSError):
                    assert host.proc.stdin is not None
                    host.proc.stdin.close()
            finally:
                host.write_lock.release()
        for signum, patience in ((None, wait), (signal.SIGTERM, 1.0), (signal.SIGKILL, None)):
            if signum is not None:
                host.signal(signum)
            if host.exited.wait(patience):
                return

    def _discard(self, host: _Process, wait: float) -> int:
        """Stop a host nobody reads from, reap it and close its pipes; its exit code."""
        self._stop_host(host, wait)
        code = host.reap()
        host.release()
        return code

    def _serve_hosts(self) -> None:
        """Read outcomes from the host; when it exits, settle what it held and start the next."""
        host = self._host
        failures = 0
        while host is not None:
            self._read_outcomes(host)
            code = host.reap()
            host.release()
            outcomes, cause = self._settle_exit(host, code)
            self._deliver(outcomes)
            if self._stop.is_set():
                return
            productive = host.progressed or outcomes or host.killed_for == "timeout"
            failures = 0 if productive else failures + 1
            log_event(
                logger,
                "host_restarted",
                level=logging.WARNING,
                function=self._function,
                cause=cause,
                exit=_exit_text(code),
                charged=len(outcomes),
            )
            host = self._next_host(failures)

    def _next_host(self, failures: int) -> _Process | None:
        """A new ready host, after a backoff when hosts keep dying unproductively; None once closing.

        After START_FAILURES failed starts in a row, every invocation waiting for a host fails
        ("HostStartFailed") at each further failure, while the starts go on with capped backoff.
        """
        failed_starts = 0
        while not self._stop.wait(_backoff(failures)):
            try:
                host = self._spawn()
            except Exception as exc:  # HandlerLoadError, but any failure must not end this thread
                failures += 1
                failed_starts += 1
                if self._stop.is_set():
                    break
                reason = str(exc) or repr(exc)
                log_event(
                    logger,
                    "host_start_failed",
                    level=logging.ERROR,
                    function=self._function,
                    reason=reason,
                    failed_starts=failed_starts,
                    retry_in_s=round(_backoff(failures), 3),
                )
                if failed_starts >= START_FAILURES:
                    self._fail_waiting(f"{failed_starts} attempts to start a handler host failed: {reason}")
                continue
            with self._lock:
                if not self._stop.is_set():
                    self.restarts += 1
                    self._host = host
                    self._sendable.notify()
                    return host
            self._discard(host, 0.5)
            break
        return None

    def _fail_waiting(self, message: str) -> None:
        """Fail every invocation waiting for a host, so its record is retried, not held forever."""
        outcomes: list[Finished] = []
        with self._lock:
            if self._stop.is_set():
                return
            for run in self._pending:
                # As if a host had run them: a run that stops on failure skips the rest.
                count = 1 if run.stop_on_failure else len(run.calls)
                outcomes += [
                    failed(call[0], error_type="HostStartFailed", message=message, cause="crash")
                    for call in run.calls[:count]
                ]
                outcomes += [Outcome(id=call[0], kind="skipped") for call in run.calls[count:]]
                for call in run.calls:
                    self._outstanding.discard(call[0])
            self._pending.clear()
            if not self._outstanding:
                self._drained.notify_all()
        self._deliver(outcomes)

    def _read_outcomes(self, host: _Process) -> None:
        while (payload := read_frame(host.reader)) is not None:
            try:
                outcomes = decode_outcomes(payload)
            except Exception as exc:  # a host that garbles its frames is broken (it is not trusted)
                self._refuse(host, str(exc) or repr(exc))
                continue
            delivered: list[Finished] = []
            garbled = ""
            with self._lock:
                now = time.monotonic()
                for outcome in outcomes:
                    try:
                        if isinstance(outcome, HandedBack):
                            self._hand_back(outcome, host, now)
                            continue
                        flight = self._answer(outcome, host)
                    except ValueError as exc:
                        garbled = str(exc)
                        break
                    if flight is None:  # it timed out already
                        continue
                    if not flight.started:  # answered before the mirror saw it start: it ran all the same
                        flight.host.queued.remove(flight)
                        self._begin(flight, now)
                    if flight.left:
                        self._restart_clock(flight, now)  # its next call starts now
                    else:
                        self._land(flight, now)
                    delivered.append(outcome)
                if not self._outstanding:
                    self._drained.notify_all()
            if garbled:
                self._refuse(host, garbled)
            host.progressed = True
            self._send_next()
            self._deliver(delivered)

    def _refuse(self, host: _Process, error: str) -> None:
        """Kill a host that broke the protocol; `error` (what it sent) becomes its invocations' message."""
        error = error[:500]
        log_event(logger, "host_protocol_error", level=logging.ERROR, function=self._function, error=error)
        host.broke = host.broke or error
        host.kill("protocol")

    def _answer(self, outcome: Finished, host: _Process) -> _Flight | None:
        """Note the calls `outcome` answers (lock held): their flight, or None when it is not
        `host`'s any more; ValueError for `Results` out of their run's order."""
        flights = self._flights
        if type(outcome) is Results:
            ids = outcome.ids
            flight = flights.get(ids[0])
            if flight is None or flight.host is not host:
                return None
            answered = len(flight.run.calls) - flight.left
            if ids != [call[0] for call in flight.run.calls[answered : answered + len(ids)]]:
                raise ValueError(f"outcomes {ids!r:.200} out of their run's order")
            if len(outcome.keys) != (len(ids) if self._results else 0):
                # With results on, a result missing would commit its input with nothing published.
                raise ValueError(f"outcomes {ids!r:.200} without one result record each")
            for id in ids:
                del flights[id]
            self._outstanding.difference_update(ids)
            flight.left -= len(ids)
            return flight
        id = outcome.id  # type: ignore[union-attr]  # an Outcome
        flight = flights.get(id)
        if flight is None or flight.host is not host:
            return None
        del flights[id]
        self._outstanding.discard(id)
        flight.left -= 1
        return flight

    def _hand_back(self, back: HandedBack, host: _Process, now: float) -> None:
        """Queue the calls a host handed back as a run of their own, ahead of the rest (lock held);
        ValueError when that would split a lane's calls.

        They are sent again rather than queued in the host by itself, so the mirror of the host's
        queue stays exact: the run keeps its clock, the new one starts as any run sent does.
        """
        flight = self._flights.get(back.id)
        if flight is None or flight.host is not host:
            return  # timed out already, or of a host gone
        run = flight.run
        ids = [call[0] for call in run.calls]
        start = ids.index(back.id, len(ids) - flight.left)  # among the unanswered: the last ones
        if start not in run.breaks:
            raise ValueError(f"calls handed back from {back.id} split a lane's calls")
        tail = run.tail(start)
        flight.run = run.head(start)
        flight.left -= len(tail.calls)
        for call in tail.calls:
            del self._flights[call[0]]
        self._pending.appendleft(tail)
        if not flight.started:  # the host runs it: its mirror lags
            host.queued.remove(flight)
            self._begin(flight, now)
        if not flight.left:
            self._land(flight, now)

    def _unanswered(self, flight: _Flight) -> list[Call]:
        """The calls of a flight still waiting for their outcome, in run order (lock held)."""
        flights = self._flights
        return [call for call in flight.run.calls if flights.get(call[0]) is flight]

    def _drop(self, flight: _Flight) -> list[Call]:
        """Forget a flight and its unanswered calls, which are returned (lock held)."""
        calls = self._unanswered(flight)
        for call in calls:
            del self._flights[call[0]]
        self._live.pop(flight, None)
        self._solos -= flight.run.solo
        return calls

    def _settle_exit(self, host: _Process, code: int) -> tuple[list[Finished], str]:
        """Outcomes charged (or skipped) for a host's exit, and its cause; the innocent run again."""
        cause = "memory" if code == EXIT_MEMORY else "crash"
        if host.killed_for == "protocol":
            cause = "protocol"  # killed here (SIGKILL) for what it sent, not a crash of its own
        with self._lock:
            if self._host is host:
                self._host = None
            lost = [(flight, self._drop(flight)) for flight in list(self._live) if flight.host is host]
            if self._stop.is_set():
                return [], "close"
            charged: list[tuple[_Flight, Call]] = []
            skipped: list[Call] = []
            again: list[Run] = []
            if host.killed_for == "timeout":
                # The late one is settled already; the other runs did nothing wrong.
                reason = "timeout"
                again = [flight.run.tail(len(flight.run.calls) - len(calls)) for flight, calls in lost]
            elif sum(len(calls) for _, calls in lost) == 1 or any(flight.run.solo for flight, _ in lost):
                # Alone on the host: nothing else can have done it. (A queued neighbour might have
                # started unseen, so "alone" counts everything the host held, not what it ran.)
                reason = cause
                charged = [(flight, call) for flight, calls in lost for call in calls]
            else:
                # Each run's first unanswered call may have done it: each runs again alone. The
                # rest of a run must not run ahead of its first (key order): they are skipped.
                reason = cause
                for flight, calls in lost:
                    again.append(Run(calls=calls[:1], timeout=flight.run.timeout, solo=True))
                    skipped.extend(calls[1:])
            self._pending.extendleft(reversed(again))
            now = time.monotonic()
            outcomes: list[Finished] = [
                crashed(
                    call[0],
                    message=self._crash_message(host, code, cause),
                    cause=cause,
                    duration=now - flight.started if flight.started else 0.0,
                )
                for flight, call in charged
            ]
            outcomes += [Outcome(id=call[0], kind="skipped") for call in skipped]
            for _, call in charged:
                self._outstanding.discard(call[0])
            for call in skipped:
                self._outstanding.discard(call[0])
            if not self._outstanding:
                self._drained.notify_all()
        return outcomes, reason

    def _crash_message(self, host: _Process, code: int, cause: str) -> str:
        if cause == "protocol":
            return f"the handler host broke the worker's protocol and was killed: {host.broke}"
        if cause == "memory":
            return f"memory limit of {self._memory_mb} MiB exceeded: the handler host {_exit_text(code)}"
        return f"the handler host {_exit_text(code)} while running this invocation"

    # -- sending and watching ----------------------------------------------------------------

    def _send_loop(self) -> None:
        """Send what `submit` queues (the host thread sends the next ones itself as outcomes land)."""
        while True:
            with self._lock:
                while not (self._stop.is_set() or self._can_send()):
                    self._sendable.wait()
                if self._stop.is_set():
                    return
            self._send_next()

    def _send_next(self) -> None:
        """Send whatever the landed outcomes made room for, from this thread (no hand-off)."""
        with self._send_lock:
            with self._lock:
                batch = self._take()
                if not batch:
                    return
                host = self._fly(batch)
            self._write(host, batch)

    def _can_send(self) -> bool:
        """Whether `_take` would take anything (lock held)."""
        host = self._host
        if host is None or host.killed_for or self._solos or not self._pending:
            return False
        return len(self._live) < self._window and not (self._pending[0].solo and self._live)

    def _take(self) -> list[Run]:
        """What to send now: up to the host's window, a solo run only on its own."""
        if self._stop.is_set() or not self._can_send():
            return []
        batch: list[Run] = []
        room = self._window - len(self._live)
        while self._pending and len(batch) < room:
            run = self._pending[0]
            if run.solo and (self._live or batch):
                break
            batch.append(self._pending.popleft())
            if run.solo:
                break
        return batch

    def _fly(self, batch: list[Run]) -> _Process:
        """Record `batch` as sent to the current host, started or queued there (lock held)."""
        host = self._host
        assert host is not None
        now = time.monotonic()
        flights = self._flights
        for run in batch:
            flight = _Flight(run, host, len(run.calls))
            self._live[flight] = None
            for call in run.calls:
                flights[call[0]] = flight
            self._solos += run.solo
            if host.running < self._concurrency:
                self._begin(flight, now)
            else:
                host.queued.append(flight)
        return host

    def _begin(self, flight: _Flight, now: float) -> None:
        """The host has started `flight` (it runs its queue first in, first out): its clock starts."""
        flight.host.running += 1
        self._restart_clock(flight, now)

    def _restart_clock(self, flight: _Flight, now: float) -> None:
        """The flight's next call starts now (lock held)."""
        flight.started = now
        flight.deadline = now + flight.run.timeout + TIMEOUT_GRACE
        if flight.deadline < self._watch_at:
            self._watch_at = flight.deadline
            self._watch.notify()

    def _land(self, flight: _Flight, now: float) -> None:
        """Forget a flight answered in full; the host starts its next queued one (lock held)."""
        self._live.pop(flight, None)
        self._solos -= flight.run.solo
        host = flight.host
        host.running -= 1
        if host.queued:
            self._begin(host.queued.popleft(), now)

    def _write(self, host: _Process, batch: list[Run]) -> None:
        # OSError or ValueError (closed): the host is gone, and its exit puts these back in the queue.
        with contextlib.suppress(OSError, ValueError):
            host.write(encode_runs(batch))

    def _watch_loop(self) -> None:
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                now = time.monotonic()
                late = [flight for flight in self._live if flight.deadline <= now]
                if not late:
                    deadlines = (flight.deadline for flight in self._live)
                    self._watch_at = min(deadlines, default=_NEVER)
                    self._watch.wait(None if self._watch_at == _NEVER else self._watch_at - now)
                    continue
                outcomes: list[Finished] = []
                for flight in late:
                    # Its host dies next; what else it held goes to the next host, so the mirror
                    # of this one no longer matters. The rest of its run waits behind it: skipped.
                    calls = self._drop(flight)
                    for call in calls:
                        self._outstanding.discard(call[0])
                    if calls:
                        outcomes.append(
                            timed_out(calls[0][0], timeout=flight.run.timeout, duration=now - flight.started)
                        )
                        outcomes += [Outcome(id=call[0], kind="skipped") for call in calls[1:]]
                    flight.host.killed_for = flight.host.killed_for or "timeout"
                if not self._outstanding:
                    self._drained.notify_all()
            for host in {flight.host for flight in late}:
                host.kill("timeout")
            self._deliver(outcomes)

    def _deliver(self, outcomes: list[Finished]) -> None:
        if outcomes:
            with self._deliver_lock:
                try:
                    self._on_outcomes(outcomes)
                except Exception:  # the caller's bug must not stop the sandbox's threads
                    logger.exception("on_outcomes failed for %d outcomes", len(outcomes))


def _hello(payload: bytes | None) -> dict[str, Any]:
    """A host's first frame as a dict; empty for none or for garbage."""
    try:
        hello = orjson.loads(payload) if payload is not None else {}
    except orjson.JSONDecodeError:
        return {}
    return hello if isinstance(hello, dict) else {}


def _backoff(failures: int) -> float:
    """No pause before the first restart; then 0.1 s doubling up to MAX_BACKOFF."""
    return 0.0 if failures <= 1 else min(MAX_BACKOFF, 0.1 * 2 ** (failures - 2))


def _exit_text(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"

"""The handler host: a child process that imports one handler once and runs its invocations.

Started by `workers.sandbox` as `python -P -m workers.host CONFIG_JSON`; never forked from the
worker. It talks to its parent over its stdin and stdout pipes in frames of a 4-byte big-endian
length and an orjson payload:

- host -> parent, first: `{"ready": import_seconds, "pid": pid}` or `{"error": reason}`;
- parent -> host: a list of runs (`workers.invocation.Run`), pickled: the parent is trusted, and
  a run carries its input records' raw bytes (the host decodes the events, on its own core);
- host -> parent: a list of entries in orjson (the host is not trusted: never pickle): the
  fields of one `Outcome` in order (bytes as text), `[id]` for one skipped, for ok
  invocations of one run in a row that emitted nothing, `[ids, durations, keys, values,
  headers]` (`workers.invocation.Results`: their result records built here, one list per
  field, so a run of no-op calls costs the parent a few C-level checks, not an object each),
  or `["back", id]`: the calls of a run from `id` on are handed back, not run here
  (`workers.invocation.HandedBack`, `HAND_BACK_AFTER`);
- end of stdin: exit at once. The parent ends it after its in-flight invocations were answered
  (a graceful close) or because it died; either way nobody waits for what still runs, and a
  handler left running by a dead worker would run a second time beside its re-delivery.

Before the handler is imported the host caps its data segment (RLIMIT_DATA), makes every thread
it starts from then on take a 1 MiB stack (`STACK_BYTES`), and moves the protocol off fds 0 and
1, so a handler's `print` or child process cannot corrupt the frames.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import io
import itertools
import logging
import os
import pickle
import queue
import resource
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import IO, Any, BinaryIO

import orjson

from bus.clock import now_rfc3339
from bus.errors import InvalidEvent
from bus.events import CloudEvent
from bus.invoke import REPLY_EXTENSION
from bus.kafka_binding import from_record, record_size
from bus.logs import configure
from workers.handlers import Context, Handler, load_handler, new_context
from workers.invocation import (
    Call,
    Finished,
    HandedBack,
    Outcome,
    Results,
    Run,
    call_sync,
    describe,
    failed,
    is_async,
    run_async,
    utf8_safe,
)
from workers.outcome import result_headers, result_record

__all__ = [
    "EXIT_MEMORY",
    "STACK_BYTES",
    "calls_of",
    "data_limit",
    "decode_outcomes",
    "encode_outcome",
    "encode_runs",
    "main",
    "read_frame",
    "read_runs",
]

EXIT_MEMORY = 86
"""Exit code of a host that ran out of memory outside a handler (its own bookkeeping)."""
STACK_BYTES = 1 << 20
"""Stack of every thread the host starts, its handler's own included (`threading.stack_size`).

Recursion to the default limit of 1000 through C at each level (a `__getattr__` slot) needs
about 0.75 MiB; pure Python calls need almost none. A handler that raises the recursion limit
and recurses deeper crashes its host (SIGSEGV), which is charged to it like any crash.
"""
SPARE_THREADS = 8
"""Threads beyond the handler pool whose stacks the data limit leaves room for (the flush or loop
thread, the hand-back watch, user threads)."""
FLUSH_AFTER = 0.003
"""Seconds an outcome may wait to share a write with later ones while the host has more to run
(a handler thread writes what is held once it is this old, when its invocation ends). Each
frame costs both processes a few wake-ups and reads; 1 ms cost a no-op function about a tenth
more CPU per event than this, and a lone invocation is written at once either way."""
FLUSH_LATEST = 0.005
"""Seconds an outcome waits at most: the flush thread writes it when handlers run long.

The sandbox starts an invocation's clock when the outcome before it in its run arrives, so this
is also how early (at most) a timeout can be counted; it is far inside `TIMEOUT_GRACE`."""
FLUSH_COUNT = 512
"""Outcomes held for one write at most."""
HAND_BACK_AFTER = 0.1
"""Seconds a call may run before the calls of other lanes behind it in its run are handed back
(`workers.invocation.Run.breaks`): twenty times the handler time a bundle of lanes is made for
(`workers.runtime.BUNDLE_SECONDS`), so a fast handler's bundles are not cut, not even on a busy
machine. Another key's call waits behind a stalled one about this long (a quarter more at most:
the watch's period), plus a round trip through the worker, which sends them again as a run of
their own (the worker's mirror of this host's queue stays exact, and with it every deadline)."""

_LENGTH = struct.Struct(">I")


def data_limit(memory_mb: int, concurrency: int) -> int:
    """RLIMIT_DATA bytes for a host: the memory budget plus the thread stacks it reserves.

    Thread stacks count as data although they are mostly never touched: `STACK_BYTES` for each
    handler thread and for `SPARE_THREADS` more.
    """
    return (memory_mb << 20) + (concurrency + SPARE_THREADS) * STACK_BYTES


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's payload from a buffered stream; None at its end."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = _LENGTH.unpack(head)
    payload = stream.read(length)
    return payload if len(payload) == length else None


def frame(payload: bytes) -> bytes:
    """`payload` with its length in front."""
    return _LENGTH.pack(len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to a blocking fd."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def encode_runs(runs: Sequence[Run]) -> bytes:
    """The frame carrying `runs` to a host: each run's calls pickled apart (`read_runs`).

    Pickled without the memo (`Pickler.fast`: runs hold no cycles), about a quarter of the
    time: every header of every record is a new object, so the memo only ever grew.
    """
    return frame(
        _pickled([(run.timeout, run.stop_on_failure, run.breaks, _pickled(run.calls)) for run in runs])
    )


def _pickled(value: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, 5)
    pickler.fast = True  # the documented attribute: no memo
    pickler.dump(value)
    return buffer.getvalue()


_Queued = tuple[float, bool, tuple[int, ...], bytes]
"""A run as read from the parent: (timeout, stop_on_failure, breaks, pickled calls)."""


def read_runs(payload: bytes) -> list[_Queued]:
    """The runs in a frame from the parent, as (timeout, stop_on_failure, breaks, pickled calls).

    A run's calls are unpickled when it starts (`calls_of`): until then they are one bytes
    object, which the collector never walks (thousands of queued calls' tuples, at each young
    collection, cost a host a few microseconds per event).
    """
    runs: list[_Queued] = pickle.loads(payload)  # noqa: S301 - from the trusted parent
    return runs


def calls_of(pickled: bytes) -> list[Call]:
    """A run's calls, from `read_runs`."""
    calls: list[Call] = pickle.loads(pickled)  # noqa: S301 - from the trusted parent
    return calls


def decode_outcomes(payload: bytes) -> list[Finished | HandedBack]:
    """The entries of a frame a host sent; ValueError or TypeError for anything malformed.

    `Results` are checked list by list at C speed, since the worker hands their records to its
    producer as they are.
    """
    finished: list[Finished | HandedBack] = []
    for fields in orjson.loads(payload):
        size = len(fields)
        if size == 5:
            finished.append(_results(fields))
        elif size == 1:
            if type(fields[0]) is not int:
                raise ValueError(f"malformed outcome {fields!r:.200}")
            finished.append(Outcome(id=fields[0], kind="skipped"))
        elif size == 2:
            if fields[0] != "back" or type(fields[1]) is not int:
                raise ValueError(f"malformed outcome {fields!r:.200}")
            finished.append(HandedBack(fields[1]))
        else:
            (id, kind, value, emitted, error_type, message, trace, retry_after, cause, duration) = fields
            _check_long_form(fields)
            finished.append(
                Outcome(
                    id=id,
                    kind=kind,
                    value=value.encode() if value is not None else None,
                    emitted=tuple(text.encode() for text in emitted),
                    error_type=error_type,
                    message=message,
                    traceback=trace,
                    retry_after=retry_after,
                    cause=cause,
                    duration=duration,
                )
            )
    return finished


_INT = frozenset({int})
_NUMBER = frozenset({int, float})
_TEXT = frozenset({str, type(None)})
_DICT = frozenset({dict})


_LONGEST = 7 * 24 * 3600.0
"""Longest duration a host may report, in seconds: anything beyond is garbage (the worker's
running mean of durations must stay finite)."""


def _results(fields: list[Any]) -> Results:
    """`Results` from their entry, every field checked: ids, numbers, text, headers of text."""
    ids, durations, keys, values, headers = fields
    count = len(ids) if type(ids) is list else 0
    if not (
        count
        and type(durations) is list
        and len(durations) == count
        and type(keys) is list
        and type(values) is list
        and type(headers) is list
        and len(keys) == len(values) == len(headers)
        and len(keys) in (0, count)
        and {*map(type, ids)} <= _INT
        and {*map(type, durations)} <= _NUMBER
        and all(0.0 <= duration <= _LONGEST for duration in durations)  # NaN fails both
        and {*map(type, keys)} <= _TEXT
        and {*map(type, values)} <= _TEXT
        and {*map(type, headers)} <= _DICT
    ):
        raise ValueError(f"malformed outcome {fields!r:.200}")
    try:
        "".join(itertools.chain.from_iterable(map(dict.values, headers)))  # every value text
    except TypeError:
        raise ValueError(f"malformed outcome {fields!r:.200}") from None
    return Results(ids, durations, keys, values, headers)


_KINDS = frozenset({"ok", "failed", "retry", "dead_letter", "invalid", "skipped"})


def _check_long_form(fields: list[Any]) -> None:
    """ValueError unless every field of a long-form outcome has its type: the host is not trusted."""
    (id, kind, value, emitted, error_type, message, trace, retry_after, cause, duration) = fields
    texts = (error_type, message, trace, cause)
    if (
        type(id) is not int
        or kind not in _KINDS
        or (value is not None and type(value) is not str)
        or type(emitted) is not list
        or any(type(text) is not str for text in emitted)
        or any(type(text) is not str for text in texts)
        or (retry_after is not None and type(retry_after) not in (int, float))
        or type(duration) not in (int, float)
    ):
        raise ValueError(f"malformed outcome {fields!r:.200}")


def encode_outcome(outcome: Outcome) -> bytes:
    """One outcome as JSON for a host's frame, whatever its text holds.

    Lone surrogates (a file name that is not UTF-8, in a message) are escaped; an outcome that
    still cannot be encoded becomes a failure of its own invocation, never of its neighbours'.
    """
    try:
        return orjson.dumps(_fields(outcome))
    except (TypeError, ValueError):  # orjson.JSONEncodeError: surrogates in the text, most likely
        pass
    escaped = replace(
        outcome,
        error_type=utf8_safe(outcome.error_type),
        message=utf8_safe(outcome.message),
        traceback=utf8_safe(outcome.traceback),
    )
    try:
        return orjson.dumps(_fields(escaped))
    except MemoryError:
        raise
    except Exception as exc:  # anything else in it: the value or an emitted event
        unsendable = failed(
            outcome.id,
            error_type="OutcomeNotSerializable",
            message=utf8_safe(f"the host cannot send this outcome ({outcome.kind}): {exc!r}"),
            cause="result" if outcome.kind == "ok" else "exception",
        )
        return orjson.dumps(_fields(replace(unsendable, duration=outcome.duration)))


def _fields(outcome: Outcome) -> list[Any]:
    return [
        outcome.id,
        outcome.kind,
        outcome.value.decode() if outcome.value is not None else None,
        [raw.decode() for raw in outcome.emitted],
        outcome.error_type,
        outcome.message,
        outcome.traceback,
        outcome.retry_after,
        outcome.cause,
        outcome.duration,
    ]


_Record = tuple[str | None, str | None, dict[str, str]]
"""A result record's key, value and headers as text."""


class _Segment:
    """Ok outcomes of one run in a row, held for the next write (`workers.invocation.Results`).

    Filled by its run's handler thread and sealed by whoever takes it for a write (both under
    the host's lock): outcomes after that open a new segment.
    """

    __slots__ = ("durations", "headers", "ids", "keys", "sealed", "values")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.durations: list[float] = []
        self.keys: list[str | None] = []
        self.values: list[str | None] = []
        self.headers: list[dict[str, str]] = []
        self.sealed = False

    def add(self, id: int, duration: float, record: _Record | None) -> None:
        self.ids.append(id)
        self.durations.append(duration)
        if record is not None:
            key, value, headers = record
            self.keys.append(key)
            self.values.append(value)
            self.headers.append(headers)

    def encode(self) -> bytes:
        """The segment's entry; should any text not encode (decoded text never has lone surrogates),
        each outcome's long form instead, and the worker builds the records."""
        try:
            return orjson.dumps([self.ids, self.durations, self.keys, self.values, self.headers])
        except TypeError:
            values = self.values or [None] * len(self.ids)
            return b",".join(
                encode_outcome(
                    Outcome(
                        id=id, kind="ok", value=(value or "null").encode(errors="surrogatepass"), duration=d
                    )
                )
                for id, d, value in zip(self.ids, self.durations, values, strict=True)
            )


class _Progress:
    """Where a running run of several lanes' calls is: the hand-back watch's view of it."""

    __slots__ = ("breaks", "calls", "end", "index")

    def __init__(self, calls: list[Call], breaks: tuple[int, ...]) -> None:
        self.calls = calls
        self.breaks = breaks
        self.end = len(calls)
        """Where the run ends here: its length, or the break from which its calls were handed back."""
        self.index = 0
        """The call running (or about to): set by the run as each outcome is reported."""

    def cut(self) -> int | None:
        """Hand back the calls of the lanes after the running call's: the first one's id, or None
        when none is left behind it. (Under the host's lock; on the loop for async handlers.)"""
        breaks = self.breaks
        at = bisect.bisect_right(breaks, self.index)
        if at == len(breaks) or breaks[at] >= self.end:
            return None
        self.end = breaks[at]
        return self.calls[self.end][0]


class _Host:
    """Runs the runs as they arrive and writes their outcomes back, batching what is ready."""

    def __init__(
        self,
        handler: Handler,
        *,
        function: str,
        prefix: str,
        concurrency: int,
        memory_mb: int,
        out_fd: int,
        results: bool = False,
        max_record_bytes: int = 0,
    ) -> None:
        self._handler = handler
        self._function = function
        self._prefix = prefix
        self._memory_mb = memory_mb
        self._out_fd = out_fd
        self._results = results
        self._max_record_bytes = max_record_bytes
        self._logger = logging.getLogger(f"bus.fn.{function}")
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # taking a batch and writing it: frames keep run order
        self._held = threading.Condition(self._lock)
        self._held_since = 0.0
        self._held_count = 0
        self._outbox: list[bytes | _Segment] = []
        self._writing = False
        self._inbox: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._watched: dict[_Progress, None] = {}
        """Runs of several lanes' calls running now (an ordered set, under the lock)."""
        self._watching = threading.Condition(self._lock)
        self._idle = 0
        """Handler threads waiting for a run (sync handlers): a hand-back is for one of them."""
        self._clock_ms = -1
        self._clock_text = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        if is_async(handler):
            self._loop = asyncio.new_event_loop()
            self._slots = asyncio.Semaphore(concurrency)
            self._tasks: set[asyncio.Task[None]] = set()
            threading.Thread(target=self._loop.run_forever, name="bus-host-loop", daemon=True).start()
            threading.Thread(target=self._watch, name="bus-host-watch", daemon=True).start()
        else:
            # Exactly `concurrency` threads taking runs first in, first out. Not a
            # ThreadPoolExecutor: its per-call Future and semaphore cost a third of the host's
            # throughput with a no-op handler (docs/decisions/handler-isolation.md).
            for n in range(concurrency):
                threading.Thread(target=self._work, name=f"bus-handler-{n}", daemon=True).start()
            threading.Thread(target=self._flusher, name="bus-host-flush", daemon=True).start()
            threading.Thread(target=self._watch, name="bus-host-watch", daemon=True).start()

    def serve(self, stream: BinaryIO) -> None:
        """Start every run read from `stream` until it ends (then the caller exits at once)."""
        while (payload := read_frame(stream)) is not None:
            runs = read_runs(payload)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._start_tasks, runs)
            else:
                for run in runs:
                    self._inbox.put(run)

    def _prepare(self, call: Call, timeout: float) -> tuple[CloudEvent, Context]:
        _, attempt, key, value, headers = call
        event = from_record(key, value, headers)
        ctx = new_context(
            self._function,
            attempt,
            time.monotonic() + timeout,
            event.id,
            self._logger,
            self._prefix,
            event.source,
        )
        return event, ctx

    def _unready(self, call: Call, exc: Exception) -> bytes:
        if isinstance(exc, InvalidEvent):
            invalid = Outcome(id=call[0], kind="invalid", error_type="InvalidEvent", message=str(exc))
            return encode_outcome(invalid)
        return encode_outcome(_unreadable(call[0], exc))

    def _plain(self, event: CloudEvent) -> bool:
        """Whether an ok outcome of `event` without emitted events needs nothing of the worker's
        `Judge` (a synchronous caller waits for a reply: bus.invoke)."""
        return not event.extensions or REPLY_EXTENSION not in event.extensions

    def _result(self, id: int, event: CloudEvent, value: bytes, duration: float) -> _Record | Outcome:
        """The result record of a plain ok outcome; or, when it cannot be one, the outcome to
        send: a failure when it is over the record limit, the ok one for text that is not UTF-8."""
        event_key = event.partition_key
        text = None if value == b"null" else value
        headers = result_headers(prefix=self._prefix, function=self._function, cause=event, time=self._now())
        # Text is at most 4 bytes a character: most results are far below the limit, counted so.
        size = len(event_key or "") + _RESULT_NAMES + sum(map(len, headers.values()))
        if len(text or b"") + 4 * size > self._max_record_bytes:
            record = result_record(
                prefix=self._prefix,
                function=self._function,
                cause=event,
                value=value,
                time=headers["ce_time"],
            )
            if (total := record_size(record)) > self._max_record_bytes:
                # As workers.verdict.check_fits says it: the result can never be published.
                return Outcome(
                    id=id,
                    kind="failed",
                    error_type="ValueError",
                    message=f"result is {total} bytes; records are limited to {self._max_record_bytes}",
                    cause="result",
                    duration=duration,
                )
        try:
            return event_key, text.decode() if text is not None else None, headers
        except UnicodeDecodeError:  # not from orjson: the worker decides
            return Outcome(id=id, kind="ok", value=value, duration=duration)

    def _encode(self, event: CloudEvent, outcome: Outcome) -> bytes:
        """An outcome's entry: `Results` of one for a plain ok with results on, else the long form."""
        if not self._results or outcome.kind != "ok" or outcome.emitted or not self._plain(event):
            return encode_outcome(outcome)
        assert outcome.value is not None
        record = self._result(outcome.id, event, outcome.value, outcome.duration)
        if type(record) is Outcome:
            return encode_outcome(record)
        segment = _Segment()
        segment.add(outcome.id, float(outcome.duration), record)  # type: ignore[arg-type]  # a _Record
        return segment.encode()

    def _now(self) -> str:
        """The time as RFC 3339 text, formatted once per millisecond."""
        ms = time.time_ns() // 1_000_000
        if ms != self._clock_ms:
            self._clock_text = now_rfc3339()
            self._clock_ms = ms
        return self._clock_text

    # --- sync handlers: a pool of threads, outcomes written by whoever is due ---------------

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            timeout, stop_on_failure, breaks, pickled = self._inbox.get()
            with self._lock:
                self._idle -= 1
            try:
                calls = calls_of(pickled)
                if not breaks:
                    self._run(timeout, stop_on_failure, calls, None)
                    continue
                progress = self._watch_run(calls, breaks)
                try:
                    self._run(timeout, stop_on_failure, calls, progress)
                finally:
                    self._unwatch_run(progress)
            except MemoryError:
                os._exit(EXIT_MEMORY)  # not even an outcome fits: the parent reports the memory cause

    def _run(
        self, timeout: float, stop_on_failure: bool, calls: list[Call], progress: _Progress | None
    ) -> None:
        """Run a run's calls in order; each outcome is reported (held for a shared write) before
        the next call starts, since the sandbox times a call from its predecessor's outcome.

        A run of several lanes' calls (`progress`) ends early where `_watch` handed the rest back."""
        segment: _Segment | None = None
        end = len(calls)
        lock = self._lock
        n = 0
        while n < end:
            call = calls[n]
            entry, ok, duration, record = self._call(call, timeout)
            stop = False
            with lock:
                if progress is not None:
                    end = progress.end
                outbox = self._outbox  # a write since the last call replaced it
                if entry is None:
                    if segment is None or segment.sealed:
                        segment = _Segment()
                        outbox.append(segment)
                    segment.add(call[0], duration, record)
                    self._held_count += 1
                else:
                    outbox.append(entry)
                    self._held_count += 1
                    segment = None  # a later ok must come after this entry, in a segment of its own
                    if stop_on_failure and not ok:
                        skipped = _skipped(calls[n + 1 : end])
                        outbox.extend(skipped)
                        self._held_count += len(skipped)
                        stop = True
                n += 1
                if progress is not None:
                    progress.index = n
                    if stop:  # the rest was reported skipped: nothing is left to hand back
                        progress.end = n
                held = self._hold(urgent=(n == end or stop) and self._inbox.empty())
            if not held:
                self._flush_sync()
            if stop:
                return

    # --- handing back the other lanes' calls behind a call that runs long -------------------

    def _watch_run(self, calls: list[Call], breaks: tuple[int, ...]) -> _Progress:
        """Start watching a run of several lanes' calls that starts now."""
        progress = _Progress(calls, breaks)
        with self._lock:
            self._watched[progress] = None
            self._watching.notify()
        return progress

    def _unwatch_run(self, progress: _Progress) -> None:
        with self._lock:
            del self._watched[progress]

    def _watch(self) -> None:
        """Every quarter of HAND_BACK_AFTER while runs of several lanes run: hand back the other
        lanes' calls behind a call that has been running HAND_BACK_AFTER."""
        seen: dict[_Progress, tuple[int, float]] = {}
        while True:
            handed = False
            with self._lock:
                while not self._watched:
                    seen.clear()
                    self._watching.wait()
                now = time.monotonic()
                for progress in self._watched:
                    index, since = seen.get(progress, (-1, 0.0))
                    if index != progress.index:
                        seen[progress] = (progress.index, now)
                    elif now - since >= HAND_BACK_AFTER:
                        if self._loop is not None:
                            self._loop.call_soon_threadsafe(self._hand_back_async, progress, index)
                        elif not self._idle:
                            pass  # handed back now, the calls would wait behind the runs queued here
                        elif (first := progress.cut()) is not None:
                            self._outbox.append(orjson.dumps(["back", first]))
                            self._held_count += 1
                            handed = True
                for gone in seen.keys() - self._watched.keys():
                    del seen[gone]
            if handed:
                self._flush_sync()
            time.sleep(HAND_BACK_AFTER / 4)

    def _hand_back_async(self, progress: _Progress, index: int) -> None:
        """On the loop: hand back the other lanes' calls of a run still at the call `_watch` saw,
        when a slot is free to run them (else they would wait behind the runs waiting for one)."""
        if self._slots.locked():
            return
        if progress.index == index and (first := progress.cut()) is not None:
            self._queue(orjson.dumps(["back", first]))

    def _hold(self, *, urgent: bool) -> bool:
        """Whether what was just reported may wait to share a write (lock held): not when `urgent`
        (nothing else to run), when many wait, or when the oldest has waited FLUSH_AFTER."""
        if urgent or self._held_count >= FLUSH_COUNT:
            return False
        held_since = self._held_since
        if not held_since:
            self._held_since = time.monotonic()
            self._held.notify()
            return True
        return time.monotonic() - held_since < FLUSH_AFTER

    def _call(self, call: Call, timeout: float) -> tuple[bytes | None, bool, float, _Record | None]:
        """Run one call: (None, True, duration, result record or None) for a plain ok outcome,
        else (its entry, whether it is ok, 0, None)."""
        id = call[0]
        try:
            event, ctx = self._prepare(call, timeout)
        except Exception as exc:
            return self._unready(call, exc), False, 0.0, None
        try:
            result = call_sync(self._handler, event, ctx, id=id, memory_mb=self._memory_mb)
        except BaseException as exc:  # a KeyboardInterrupt raised by the handler itself
            return encode_outcome(_raised_outside(id, exc)), False, 0.0, None
        if type(result) is not tuple:
            outcome: Outcome = result  # type: ignore[assignment]  # call_sync's other return
            return self._encode(event, outcome), outcome.kind == "ok", 0.0, None
        value, duration = result
        if not self._results or not self._plain(event):  # the worker decides, with the value
            return encode_outcome(Outcome(id=id, kind="ok", value=value, duration=duration)), True, 0.0, None
        record = self._result(id, event, value, duration)
        if type(record) is Outcome:
            return encode_outcome(record), record.kind == "ok", 0.0, None
        return None, True, duration, record  # type: ignore[return-value]  # a _Record

    def _flusher(self) -> None:
        """Write held outcomes once the oldest has waited FLUSH_LATEST (handlers running long)."""
        while True:
            with self._lock:
                while not self._held_since:
                    self._held.wait()
                held_since = self._held_since
            time.sleep(max(0.0, held_since + FLUSH_LATEST - time.monotonic()))
            with self._lock:
                due = self._held_since == held_since  # else written meanwhile, and held anew
            if due:
                self._flush_sync()

    def _flush_sync(self) -> None:
        try:
            with self._write_lock:
                with self._lock:
                    batch, self._outbox, self._held_since, self._held_count = self._outbox, [], 0.0, 0
                    for item in batch:
                        if type(item) is _Segment:
                            item.sealed = True
                if batch:
                    write_all(self._out_fd, _batch_frame([_entry(item) for item in batch]))
        except MemoryError:
            os._exit(EXIT_MEMORY)
        except OSError:
            os._exit(0)  # the parent is gone: nobody to report to

    # --- async handlers: one task per run on the loop ---------------------------------------

    def _start_tasks(self, runs: list[_Queued]) -> None:
        assert self._loop is not None
        for timeout, stop_on_failure, breaks, pickled in runs:
            task = self._loop.create_task(
                self._run_async(timeout, stop_on_failure, calls_of(pickled), breaks)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_async(
        self, budget: float, stop_on_failure: bool, calls: list[Call], breaks: tuple[int, ...]
    ) -> None:
        async with self._slots:
            progress = self._watch_run(calls, breaks) if breaks else None
            try:
                await self._run_calls_async(budget, stop_on_failure, calls, progress)
            finally:
                if progress is not None:
                    self._unwatch_run(progress)

    async def _run_calls_async(
        self, budget: float, stop_on_failure: bool, calls: list[Call], progress: _Progress | None
    ) -> None:
        """`_run` on the loop: the same order, the same early end after a hand-back."""
        end = len(calls)
        n = 0
        while n < end:
            call = calls[n]
            try:
                try:
                    event, ctx = self._prepare(call, budget)
                except Exception as exc:
                    encoded, ok = self._unready(call, exc), False
                else:
                    try:
                        outcome = await run_async(
                            self._handler, event, ctx, id=call[0], memory_mb=self._memory_mb
                        )
                    except BaseException as exc:  # a KeyboardInterrupt raised by the handler itself
                        outcome = _raised_outside(call[0], exc)
                    encoded, ok = self._encode(event, outcome), outcome.kind == "ok"
            except MemoryError:
                os._exit(EXIT_MEMORY)
            self._queue(encoded)
            if progress is not None:
                end = progress.end
            if stop_on_failure and not ok:
                for skipped in _skipped(calls[n + 1 : end]):
                    self._queue(skipped)
                if progress is not None:  # nothing is left to hand back (a cut already queued finds so)
                    progress.index = progress.end = n + 1
                return
            n += 1
            if progress is not None:
                progress.index = n

    def _queue(self, item: bytes) -> None:
        """On the loop: the outcomes of one loop iteration go out in one frame, after it."""
        self._outbox.append(item)
        if not self._writing:
            self._writing = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._outbox, self._writing = self._outbox, [], False
        try:
            write_all(self._out_fd, _batch_frame([_entry(item) for item in batch]))
        except MemoryError:
            os._exit(EXIT_MEMORY)
        except OSError:
            os._exit(0)


def _entry(item: bytes | _Segment) -> bytes:
    return item if type(item) is bytes else item.encode()  # type: ignore[union-attr]  # a _Segment


_RESULT_NAMES = len(
    "ce_specversion ce_id ce_source ce_type ce_time ce_subject ce_causationid ce_partitionkey content-type"
)
"""At least the length of a result record's header names (ASCII), together."""


def _skipped(calls: list[Call]) -> list[bytes]:
    """Outcomes of calls not run because one before them in their run failed."""
    return [orjson.dumps([call[0]]) for call in calls]


def _batch_frame(outcomes: list[bytes]) -> bytes:
    """The frame of a list of outcomes, each encoded already."""
    return frame(b"[" + b",".join(outcomes) + b"]")


def _unreadable(id: int, exc: Exception) -> Outcome:
    error_type, message, trace = describe(exc)
    message = f"the host cannot read the event: {message}"
    return failed(id, error_type=error_type, message=message, cause="exception", traceback=trace)


def _raised_outside(id: int, exc: BaseException) -> Outcome:
    error_type, message, trace = describe(exc)
    cause = "memory" if isinstance(exc, MemoryError) else "exception"
    return failed(id, error_type=error_type, message=message, cause=cause, traceback=trace)


def main(argv: Sequence[str] | None = None) -> int:
    """Host one handler as configured by the JSON in argv[1]; see the module docstring."""
    args = sys.argv if argv is None else argv
    config = orjson.loads(args[1])
    # The protocol moves to private fds; fd 1 becomes stderr and fd 0 /dev/null for user code.
    in_fd, out_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a TextIOWrapper on fd 1
    configure(os.environ.get("BUS_LOG_LEVEL", "INFO"))
    memory_mb, concurrency = int(config["memory_mb"]), int(config["concurrency"])
    limit = data_limit(memory_mb, concurrency)
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))  # the hard limit too: no raising it back
    threading.stack_size(STACK_BYTES)  # what the limit counts, for threads the handler starts too
    started = time.perf_counter()
    try:
        handler = load_handler(config["handler"], base_dir=config["base_dir"])
    except BaseException as exc:  # HandlerLoadError, but also SystemExit or MemoryError at import
        _, message, _ = describe(exc)
        if isinstance(exc, MemoryError):
            message = f"handler {config['handler']!r}: importing it needs more than {memory_mb} MiB"
        elif not message.startswith("handler "):
            message = f"handler {config['handler']!r}: importing it raised {type(exc).__name__} ({message})"
        write_all(out_fd, frame(orjson.dumps({"error": message})))
        return 1
    host = _Host(
        handler,
        function=config["function"],
        prefix=config["prefix"],
        concurrency=concurrency,
        memory_mb=memory_mb,
        out_fd=out_fd,
        results=bool(config.get("results", False)),
        max_record_bytes=int(config.get("max_record_bytes", 0)),
    )
    # What the handler's import left alive is never walked again (its garbage is collected first,
    # or frozen cycles would count against the memory limit for good). The threshold stays
    # Python's: a handler's garbage cycles may hold large objects under the memory limit.
    gc.collect()
    gc.freeze()
    write_all(out_fd, frame(orjson.dumps({"ready": time.perf_counter() - started, "pid": os.getpid()})))
    with open(in_fd, "rb", buffering=1 << 16) as stream:
        try:
            host.serve(stream)
        except MemoryError:
            os._exit(EXIT_MEMORY)
    # Handlers may have left non-daemon threads behind; they must not keep the host alive.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

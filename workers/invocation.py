"""One invocation of a handler and its outcome, as data (the handler host and `workers.testing`).

`run_sync` and `run_async` call a handler on one event and turn whatever happens into an
`Outcome`: a JSON return value, a `Retry` or `DeadLetter` signal, or a failure with its cause.
The host process and the test helper both call them, so a handler behaves the same in both.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from collections.abc import Awaitable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

import orjson

from bus.events import CloudEvent
from bus.kafka_binding import Headers
from workers.handlers import Context, Handler
from workers.signals import DeadLetter, Retry

__all__ = [
    "Call",
    "Finished",
    "HandedBack",
    "Invocation",
    "Kind",
    "Outcome",
    "Results",
    "Run",
    "call_sync",
    "crashed",
    "describe",
    "failed",
    "is_async",
    "run_async",
    "run_coroutine",
    "run_sync",
    "timed_out",
    "utf8_safe",
]

Kind = Literal["ok", "failed", "retry", "dead_letter", "invalid", "skipped"]
""""invalid": the input record is not a readable CloudEvent (no handler ran; `message` says why);
"skipped": not run because an earlier invocation of its run failed or its host died (not charged)."""

Call = tuple[int, int, bytes | None, bytes | None, Headers | None]
"""One invocation as sent to a host: (id, attempt, key, value, headers) of its input record."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Invocation:
    """A request to run the handler on one event."""

    id: int
    """Unique among the invocations of one sandbox, chosen by the caller."""
    event: bytes
    """The input CloudEvent in the JSON format (`orjson.dumps(to_json_dict(event))`)."""
    attempt: int
    """1 for the first attempt."""
    timeout: float
    """Seconds of wall clock the handler may run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """Invocations a host runs one after another, in order, on one handler thread (one lane's records).

    With `stop_on_failure` (key ordering) the host stops at the first invocation that does not
    end "ok" and reports the rest as "skipped": a key's later events wait behind its retry.
    """

    calls: list[Call]
    timeout: float
    """Seconds of wall clock each invocation may run."""
    stop_on_failure: bool = False
    solo: bool = False
    """One call, run with nothing else in flight on the host (to find who crashed a host)."""
    breaks: tuple[int, ...] = ()
    """Where the calls of another lane begin, ascending (a run bundling several lanes' calls,
    `workers.runtime.Replica._bundle`); empty: all one lane's. Behind a call that runs long the
    host hands back the calls from the next break on (`HandedBack`): only a lane's own calls
    wait for it."""

    def tail(self, start: int) -> Run:
        """The run of the calls from `start` on (a break, or the first unanswered), breaks moved along."""
        return replace(
            self, calls=self.calls[start:], breaks=tuple(at - start for at in self.breaks if at > start)
        )

    def head(self, end: int) -> Run:
        """The run of the calls before `end`."""
        return replace(self, calls=self.calls[:end], breaks=tuple(at for at in self.breaks if at < end))


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one invocation ended."""

    id: int
    kind: Kind
    value: bytes | None = None
    """The JSON-encoded return value (kind "ok"); b"null" for None."""
    emitted: tuple[bytes, ...] = ()
    """Events the handler emitted with ctx.emit, in the CloudEvents JSON format (any kind)."""
    error_type: str = ""
    """e.g. "ValueError", "TimeoutError", "HandlerCrashed", "MemoryError", "ResultNotSerializable"."""
    message: str = ""
    traceback: str = ""
    retry_after: float | None = None
    """Kind "retry": the handler's `Retry(after=...)`; None: the retry policy's backoff."""
    cause: str = ""
    """exception | timeout | crash | memory | protocol | result; "" for ok ("signal" is reserved:
    never produced)."""
    duration: float = 0.0
    """Seconds the handler ran."""


class Results(NamedTuple):
    """Ok invocations of one run in a row that emitted nothing, as a host reports them: one entry per
    invocation in each list. The result records (`key`, `value`, `headers` as text, in
    `workers.outcome.result_record`'s shape) were built by the host; all three lists are empty
    when it builds none (a function without a success destination)."""

    ids: list[int]
    durations: list[float]
    """Seconds each handler call ran."""
    keys: list[str | None]
    values: list[str | None]
    headers: list[dict[str, str]]


Finished = Outcome | Results
"""What a sandbox delivers: one invocation's `Outcome`, or `Results` of several plain ok ones."""


class HandedBack(NamedTuple):
    """A host's word that the calls of a run from `id` on (a lane break) will not run there: a call
    before them ran long, and the other lanes' calls must not wait for it (`Run.breaks`). The
    sandbox sends them again as a run of their own; nothing else sees this."""

    id: int


def is_async(handler: Handler) -> bool:
    """Whether calling `handler` returns a coroutine: `async def`, or an object with an async __call__."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - the bound __call__ itself is what we inspect
    )


def run_sync(
    handler: Handler, event: CloudEvent, ctx: Context, *, id: int = 0, memory_mb: int | None = None
) -> Outcome:
    """Call a sync handler and describe what happened; a returned awaitable is run to completion.

    Only an awaitable is bounded by `ctx.deadline` here: a sync handler that hangs is the
    caller's to stop (the sandbox kills its host).
    """
    result = call_sync(handler, event, ctx, id=id, memory_mb=memory_mb)
    if type(result) is tuple:
        return Outcome(id=id, kind="ok", value=result[0], duration=result[1])
    return result  # type: ignore[return-value]  # an Outcome


def call_sync(
    handler: Handler, event: CloudEvent, ctx: Context, *, id: int = 0, memory_mb: int | None = None
) -> tuple[bytes, float] | Outcome:
    """`run_sync`, but an ok invocation that emitted nothing comes back as (its value as JSON,
    seconds it ran): the common case, with no `Outcome` made (the handler host's hot path)."""
    started = time.perf_counter()
    try:
        value = handler(event, ctx)
        if value is not None and type(value) not in _PLAIN and inspect.isawaitable(value):
            value = run_coroutine(_await_until(value, ctx.deadline))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit and friends from user code are failures too
        duration = time.perf_counter() - started
        if isinstance(exc, _Expired):
            budget = ctx.deadline - (time.monotonic() - duration)  # the deadline as seen at the start
            return timed_out(id, timeout=budget, duration=duration, emitted=tuple(ctx.emitted))
        return _raised(id, exc, ctx, duration, memory_mb)
    duration = time.perf_counter() - started
    if not ctx.emitted:
        try:
            return orjson.dumps(value), duration
        except TypeError:
            pass  # not JSON: `_returned` describes it
    return _returned(id, value, ctx, duration)


_PLAIN = frozenset({dict, list, str, int, float, bool, tuple})
"""Types of return values that are never awaitable (skips `inspect.isawaitable`'s ABC check)."""


async def run_async(
    handler: Handler, event: CloudEvent, ctx: Context, *, id: int = 0, memory_mb: int | None = None
) -> Outcome:
    """Await an async handler until `ctx.deadline` and describe what happened."""
    started = time.perf_counter()
    budget = ctx.deadline - time.monotonic()
    try:
        async with asyncio.timeout_at(_loop_time(ctx.deadline)) as scope:
            value = handler(event, ctx)
            if inspect.isawaitable(value):
                value = await value
    except KeyboardInterrupt:
        raise
    except TimeoutError as exc:
        duration = time.perf_counter() - started
        if scope.expired():
            return timed_out(id, timeout=budget, duration=duration, emitted=tuple(ctx.emitted))
        return _raised(id, exc, ctx, duration, memory_mb)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the host is cancelling us, not the handler raising
        return _raised(id, exc, ctx, time.perf_counter() - started, memory_mb)
    except BaseException as exc:  # as run_sync; caught here so asyncio never sees a SystemExit
        return _raised(id, exc, ctx, time.perf_counter() - started, memory_mb)
    return _returned(id, value, ctx, time.perf_counter() - started)


def timed_out(id: int, *, timeout: float, duration: float, emitted: tuple[bytes, ...] = ()) -> Outcome:
    """The outcome of an invocation that ran past its timeout."""
    return Outcome(
        id=id,
        kind="failed",
        emitted=emitted,
        error_type="TimeoutError",
        message=f"did not finish within {round(timeout, 3):g}s",
        cause="timeout",
        duration=duration,
    )


_CRASH_TYPES = {"memory": "MemoryError", "protocol": "HostProtocolError"}
"""Error types of a host's death by cause (any other: "HandlerCrashed")."""


def crashed(id: int, *, message: str, cause: str = "crash", duration: float = 0.0) -> Outcome:
    """The outcome of an invocation that took its host process down with it (or was on a host killed
    for breaking the protocol, cause "protocol")."""
    error_type = _CRASH_TYPES.get(cause, "HandlerCrashed")
    return Outcome(
        id=id, kind="failed", error_type=error_type, message=message, cause=cause, duration=duration
    )


def failed(id: int, *, error_type: str, message: str, cause: str, traceback: str = "") -> Outcome:
    """A failed outcome decided outside the handler (e.g. an input the host cannot read)."""
    return Outcome(
        id=id, kind="failed", error_type=error_type, message=message, traceback=traceback, cause=cause
    )


def describe(exc: BaseException) -> tuple[str, str, str]:
    """(type, message, traceback) of a user exception, even one whose __str__ raises.

    Text that is not UTF-8 (lone surrogates, as in a file name from `os.listdir`) is escaped.
    """
    error_type = utf8_safe(type(exc).__name__)
    try:
        message = utf8_safe(str(exc))
    except Exception:  # a broken __str__ must not crash the host
        message = f"<unprintable {error_type}>"
    try:
        trace = utf8_safe("".join(traceback.format_exception(exc)))
    except Exception:  # same for a broken traceback
        trace = ""
    return error_type, message, trace


def utf8_safe(text: str) -> str:
    """`text` with any lone surrogate escaped (`\\udc80`), so that it encodes as UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _returned(id: int, value: Any, ctx: Context, duration: float) -> Outcome:
    emitted = tuple(ctx.emitted)
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError: sets, objects, non-str keys, huge ints
        return Outcome(
            id=id,
            kind="failed",
            emitted=emitted,
            error_type="ResultNotSerializable",
            message=f"the return value is not JSON: {exc}",
            cause="result",
            duration=duration,
        )
    return Outcome(id=id, kind="ok", value=encoded, emitted=emitted, duration=duration)


def _signal_of(group: BaseExceptionGroup[BaseException]) -> Retry | DeadLetter | None:
    """The signal an exception group of signals only stands for (an `asyncio.TaskGroup` wraps
    what its tasks raise): a `DeadLetter` if one is there, else the `Retry` asking to wait longest;
    None when anything else is in it (a failure)."""
    signals, rest = group.split((Retry, DeadLetter))
    if signals is None or rest is not None:
        return None
    found = _leaves(signals)
    letters = [exc for exc in found if isinstance(exc, DeadLetter)]
    if letters:
        return letters[0]
    retries = [exc for exc in found if isinstance(exc, Retry)]
    return max(retries, key=lambda exc: -1.0 if exc.after is None else exc.after)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def _raised(id: int, exc: BaseException, ctx: Context, duration: float, memory_mb: int | None) -> Outcome:
    if isinstance(exc, BaseExceptionGroup) and (signal := _signal_of(exc)) is not None:
        exc = signal
    error_type, message, trace = describe(exc)
    emitted = tuple(ctx.emitted)
    if isinstance(exc, Retry):
        return Outcome(
            id=id,
            kind="retry",
            emitted=emitted,
            error_type=error_type,
            message=message,
            traceback=trace,
            retry_after=exc.after,
            cause="exception",
            duration=duration,
        )
    if isinstance(exc, DeadLetter):
        return Outcome(
            id=id,
            kind="dead_letter",
            emitted=emitted,
            error_type=error_type,
            message=utf8_safe(exc.reason) if isinstance(exc.reason, str) else message,
            traceback=trace,
            cause="exception",
            duration=duration,
        )
    cause = "exception"
    if isinstance(exc, MemoryError):
        cause = "memory"
        if memory_mb is not None:
            limit = f"memory limit of {memory_mb} MiB exceeded"
            message = f"{limit}: {message}" if message else limit
    return Outcome(
        id=id,
        kind="failed",
        emitted=emitted,
        error_type=error_type,
        message=message,
        traceback=trace,
        cause=cause,
        duration=duration,
    )


def _loop_time(deadline: float) -> float:
    """A time.monotonic() deadline on the running loop's clock (the same clock unless overridden)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


class _Expired(Exception):
    """An awaitable returned by a sync handler ran past the deadline."""


async def _await_until(awaitable: Awaitable[Any], deadline: float) -> Any:
    try:
        async with asyncio.timeout_at(_loop_time(deadline)) as scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise _Expired from None
        raise


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code (on a thread of its own if a loop runs here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bus-coroutine") as pool:
        return pool.submit(asyncio.run, coroutine).result()

"""Where a measurement's CPU went, per event: this process's main thread, its other threads
(librdkafka's, a committer), and the broker when it runs on this machine.

On a machine whose cores the broker shares with the client, a loop's rate is bounded by the CPU
all of them spend per event, not by the client's alone; these figures show which share grew
when a figure falls short of its limit (docs/decisions/router-stream-processor.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuMeter", "local_broker_pid", "process_cpu_seconds"]


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of process `pid` so far, its ended threads included; None where
    /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc_pid_stat(5), counted after the ")" that ends field 2.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_broker_pid(bootstrap: str) -> int | None:
    """The pid of the Kafka broker serving `bootstrap` if it runs on this machine: the one
    `kafka.Kafka` process here when the address is a loopback one; None otherwise (or when
    several run, as the test suite's do, and which one is meant cannot be told)."""
    host = bootstrap.split(",", maxsplit=1)[0].rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"kafka.Kafka" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found[0] if len(found) == 1 else None


@dataclass(slots=True)
class CpuMeter:
    """CPU spent between `start` and `per_event`, in microseconds per event.

    Start and read it on the thread that runs the loop: that thread's time is the `main` share.
    """

    broker_pid: int | None = None
    _main: float = 0.0
    _process: float = 0.0
    _broker: float | None = None

    def start(self) -> CpuMeter:
        """Take the starting readings; returns the meter."""
        self._main = time.thread_time()
        self._process = time.process_time()
        self._broker = process_cpu_seconds(self.broker_pid) if self.broker_pid else None
        return self

    def per_event(self, events: int) -> dict[str, float]:
        """Microseconds of CPU per event since `start`: `main` (this thread), `other` (this process's
        other threads) and `broker` (when it is known)."""
        if events <= 0:
            return {}
        main = time.thread_time() - self._main
        shares = {"main": main, "other": time.process_time() - self._process - main}
        if self._broker is not None and self.broker_pid:
            broker = process_cpu_seconds(self.broker_pid)
            if broker is not None:
                shares["broker"] = broker - self._broker
        return {name: round(seconds / events * 1e6, 1) for name, seconds in shares.items()}

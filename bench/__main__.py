"""`python -m bench [--quick] [--out FILE]`: measure on one broker, print one JSON document."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

import confluent_kafka

from bench import (
    aio,
    autoscale,
    faust_router,
    gateway,
    invoke,
    packages,
    raw,
    router,
    routing_workload,
    thinpath,
    transactional,
    worker,
)
from bench.broker import BenchKafka, open_broker
from bench.cpu import CpuMeter
from bench.report import Measurement, document, render
from bench.samples import Throughput
from bench.sizes import FULL, QUICK, Sizes
from bus.localkafka import KAFKA_VERSION
from bus.logs import configure, log_event

logger = logging.getLogger("bench")

GROUPS = (
    "confluent",
    "transactional",
    "router",
    "aiokafka",
    "gateway",
    "thinpath",
    "worker",
    "autoscale",
    "packages",
    "invoke",
)

Step = tuple[str, str, Callable[[], dict[str, Measurement]]]
"""(group, name, measure): `measure` returns the measurements it took, by name."""


def _router_steps(kafka: BenchKafka, sizes: Sizes, details: dict[str, Any], *, warm: bool) -> list[Step]:
    """The router group: one step per figure, sharing the workloads `prepare` fills once."""
    workloads: dict[int, router.Workload] = {}

    def prepare() -> dict[str, Measurement]:
        workloads.update(router.prepare(kafka, sizes))
        details["router_workload"] = router.describe(workloads)
        return {"router.transform.r1000": workloads[1000].sample}

    def warm_up() -> dict[str, Measurement]:
        # A fresh broker's transactions run several times slower for a while (bench.transactional).
        if not warm and sizes.router_txn_warm_up > 0:
            transactional.warm_up(kafka, replace(sizes, txn_warm_up=sizes.router_txn_warm_up))
        return {}

    def rules_alone() -> dict[str, Measurement]:
        manifest = routing_workload.manifest(1000, router.prefix(kafka, "rules-r1000"))
        records = routing_workload.records(1000, 2_000)
        return {
            "router.rules.r1000": router.rules_time(manifest, records, seconds=sizes.router_match_seconds)
        }

    def metered(name: str, measure: Callable[[CpuMeter], Throughput]) -> Step:
        """A figure whose CPU per event is reported too (bench.cpu), in the details."""

        def run() -> dict[str, Measurement]:
            meter = CpuMeter(kafka.broker_pid)
            taken = measure(meter)
            details.setdefault("router_cpu_us_per_event", {})[name] = meter.per_event(taken.events)
            return {name: taken}

        return ("router", name, run)

    def by_rules(
        name: str, measure: Callable[[BenchKafka, Sizes, router.Workload, CpuMeter], Throughput], rules: int
    ) -> Step:
        return metered(f"{name}.r{rules}", lambda meter: measure(kafka, sizes, workloads[rules], meter))

    def by_rules_unmetered(
        name: str, measure: Callable[[BenchKafka, Sizes, router.Workload], Measurement], rules: int
    ) -> Step:
        return (
            "router",
            f"{name}.r{rules}",
            lambda: {f"{name}.r{rules}": measure(kafka, sizes, workloads[rules])},
        )

    return [
        ("router", "router prepare", prepare),
        ("router", "router.rules.r1000", rules_alone),
        metered("router.raw", lambda meter: router.raw_rate(kafka, sizes, meter)),
        metered("router.fan", lambda meter: router.fan_rate(kafka, sizes, workloads[10], meter)),
        ("router", "router warm-up", warm_up),
        *(by_rules("router.tx", router.tx_rate, n) for n in router.RULE_COUNTS),
        *(by_rules("router.plain", router.plain_rate, n) for n in router.RULE_COUNTS),
        metered("router.raw.after", lambda meter: router.raw_rate(kafka, sizes, meter, label="raw-after")),
        *(by_rules_unmetered("faust", faust_router.measure, n) for n in (10, 1000)),
    ]


def _worker_steps(kafka: BenchKafka, sizes: Sizes, details: dict[str, Any], *, warm: bool) -> list[Step]:
    """The worker group: one replica per figure; every replica's cold start is reported at the end."""
    starts = worker.Starts()

    def warm_up() -> dict[str, Measurement]:
        # The replica commits in transactions, which a fresh broker runs slowly (bench.transactional).
        if not warm and sizes.worker_txn_warm_up > 0:
            transactional.warm_up(kafka, replace(sizes, txn_warm_up=sizes.worker_txn_warm_up))
        return {}

    def noop(ordering: str, concurrency: int) -> Step:
        name = f"worker.noop.{ordering}.c{concurrency}"

        def measure() -> dict[str, Measurement]:
            rate, shares = worker.noop_rate(kafka, sizes, starts, ordering=ordering, concurrency=concurrency)
            details.setdefault("worker_cpu_share", {})[name] = shares
            return {name: rate}

        return ("worker", name, measure)

    def sleep(ordering: str) -> Step:
        name = f"worker.sleep20.{ordering}"

        def measure() -> dict[str, Measurement]:
            rate, shares = worker.sleep_rate(kafka, sizes, starts, ordering=ordering)
            details.setdefault("worker_cpu_share", {})[name] = shares
            return {name: rate}

        return ("worker", name, measure)

    def latency() -> dict[str, Measurement]:
        trips, raw_trips = worker.round_trips(kafka, sizes, starts)
        return {"worker.latency": trips, "worker.raw_latency": raw_trips}

    def cold_starts() -> dict[str, Measurement]:
        details["worker_cold_starts"] = [asdict(start) for start in starts.taken]
        return {f"worker.cold_start.{span}": taken for span, taken in starts.latencies().items()}

    return [
        ("worker", "worker warm-up", warm_up),
        ("worker", "worker.raw", lambda: {"worker.raw": worker.raw_rate(kafka, sizes)}),
        *(noop(ordering, concurrency) for ordering, concurrency in worker.NOOP_RUNS),
        (
            "worker",
            "worker.raw.after",
            lambda: {"worker.raw.after": worker.raw_rate(kafka, sizes, label="w-after")},
        ),
        sleep("partition"),
        sleep("key"),
        ("worker", "worker.latency", latency),
        ("worker", "worker.cold_start", cold_starts),
    ]


def _invoke_step(kafka: BenchKafka, sizes: Sizes) -> Callable[[], dict[str, Measurement]]:
    def measure() -> dict[str, Measurement]:
        sync, raw_trips = invoke.round_trips(kafka, sizes)
        return {"invoke.sync": sync, "invoke.raw": raw_trips}

    return measure


def _autoscale_steps(kafka: BenchKafka, sizes: Sizes) -> list[Step]:
    """The autoscale group: backlog drain autoscaled and pinned, and the first event from zero."""

    def zero() -> dict[str, Measurement]:
        scaled, direct = autoscale.from_zero(kafka, sizes)
        return {"autoscale.from_zero": scaled, "autoscale.direct_start": direct}

    return [
        (
            "autoscale",
            "autoscale.drain.pinned",
            lambda: {"autoscale.drain.pinned": autoscale.drain_time(kafka, sizes, pinned=True)},
        ),
        (
            "autoscale",
            "autoscale.drain.auto",
            lambda: {"autoscale.drain.auto": autoscale.drain_time(kafka, sizes, pinned=False)},
        ),
        ("autoscale", "autoscale.from_zero", zero),
    ]


def _steps(kafka: BenchKafka, sizes: Sizes, details: dict[str, Any], groups: set[str]) -> list[Step]:
    def warm_up() -> dict[str, Measurement]:
        raw.warm_up(kafka, sizes)
        return {}

    def txn_warm_up() -> dict[str, Measurement]:
        transactional.warm_up(kafka, sizes)
        return {}

    def thin() -> dict[str, Measurement]:
        result = thinpath.measure(kafka, sizes)
        details["thinpath_http_statuses"] = result.statuses
        details["thinpath_cpu_share"] = result.cpu
        taken: dict[str, Measurement] = {
            "thinpath.single": result.single,
            "thinpath.single_latency": result.latency,
        }
        if result.batched is not None:
            taken["thinpath.batched"] = result.batched
        return taken

    def gateway_alone() -> dict[str, Measurement]:
        result = gateway.measure(kafka, sizes)
        details["gateway_http_statuses"] = result.statuses
        return {
            "gateway.null.single": result.null_single,
            "gateway.null.single_latency": result.null_latency,
            "gateway.single": result.single,
            "gateway.single_latency": result.latency,
            "gateway.batched": result.batched,
        }

    return [
        ("confluent", "warm-up", warm_up),
        ("confluent", "confluent.produce", lambda: {"confluent.produce": raw.produce_rate(kafka, sizes)}),
        (
            "confluent",
            "confluent.produce.uncompressed",
            lambda: {"confluent.produce.uncompressed": raw.produce_rate(kafka, sizes, compression="none")},
        ),
        ("confluent", "confluent.consume", lambda: {"confluent.consume": raw.consume_rate(kafka, sizes)}),
        (
            "confluent",
            "confluent.consume_produce",
            lambda: {"confluent.consume_produce": raw.consume_produce_rate(kafka, sizes)},
        ),
        ("confluent", "confluent.latency", lambda: {"confluent.latency": raw.latency(kafka, sizes)}),
        ("transactional", "transactional warm-up", txn_warm_up),
        (
            "transactional",
            "confluent.transactional_consume_produce",
            lambda: {
                "confluent.transactional_consume_produce": transactional.transactional_rate(kafka, sizes)
            },
        ),
        *_router_steps(kafka, sizes, details, warm="transactional" in groups),
        ("aiokafka", "aiokafka.produce", lambda: {"aiokafka.produce": aio.produce_rate(kafka, sizes)}),
        ("aiokafka", "aiokafka.consume", lambda: {"aiokafka.consume": aio.consume_rate(kafka, sizes)}),
        (
            "aiokafka",
            "aiokafka.consume_produce",
            lambda: {"aiokafka.consume_produce": aio.consume_produce_rate(kafka, sizes)},
        ),
        ("aiokafka", "aiokafka.latency", lambda: {"aiokafka.latency": aio.latency(kafka, sizes)}),
        ("gateway", "gateway", gateway_alone),
        ("thinpath", "thinpath", thin),
        *_worker_steps(kafka, sizes, details, warm=bool(groups & {"transactional", "router"})),
        *_autoscale_steps(kafka, sizes),
        ("packages", "packages.host", lambda: packages.host_starts(sizes.package_samples)),
        ("invoke", "invoke.sync", _invoke_step(kafka, sizes)),
    ]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about two minutes instead of about five")
    parser.add_argument("--out", type=Path, help="also write the JSON document to this file")
    parser.add_argument("--only", action="append", choices=GROUPS, help="measure only these groups")
    parser.add_argument("--events", type=int, help="events per raw produce and loop measurement")
    parser.add_argument("--consume-events", type=int, help="events per raw consume measurement")
    parser.add_argument("--latency-samples", type=int, help="records per raw latency measurement")
    parser.add_argument("--thin-events", type=int, help="events sent one per HTTP request")
    parser.add_argument("--thin-batch", type=int, help="events per request of the batched run (0 skips it)")
    parser.add_argument("--thin-batched-events", type=int, help="events sent in batched requests")
    parser.add_argument("--gateway-events", type=int, help="events sent one per request to the gateway alone")
    parser.add_argument("--concurrency", type=int, help="most HTTP requests in flight")
    parser.add_argument("--partitions", type=int, help="partitions of every throughput topic")
    parser.add_argument("--deadline", type=float, help="seconds any one raw measurement may take")
    parser.add_argument("--txn-warm-up", type=float, help="seconds of transactions before measuring them")
    parser.add_argument(
        "--router-events", type=int, help="events of the router's raw-loop limit (and most per run)"
    )
    parser.add_argument(
        "--router-seconds", type=float, help="seconds of routing each router run is sized for"
    )
    return parser.parse_args(argv)


def _sizes(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    overrides = {
        name: getattr(args, name)
        for name in (
            "events",
            "consume_events",
            "latency_samples",
            "thin_events",
            "thin_batch",
            "thin_batched_events",
            "gateway_events",
            "concurrency",
            "partitions",
            "deadline",
            "txn_warm_up",
            "router_events",
            "router_seconds",
        )
        if getattr(args, name) is not None
    }
    return replace(base, **overrides)


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "confluent_kafka": version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "aiokafka": version("aiokafka"),
        "faust_streaming": faust_router.installed_version() or "not installed",
        "httpx": version("httpx"),
        "uvicorn": version("uvicorn"),
    }


def _terminated(signum: int, frame: object) -> NoReturn:
    # Raising unwinds every `with` block: child processes and the broker are stopped on the way out.
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the measurements on one broker, print the report; 1 if any measurement failed."""
    args = _parse(argv)
    sizes = _sizes(args)
    groups = set(args.only or GROUPS)
    configure(os.environ.get("BUS_LOG_LEVEL", "WARNING"))
    logger.setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _terminated)
    started = time.time()
    clock = time.monotonic()
    load_before = os.getloadavg()
    measurements: dict[str, Measurement] = {}
    errors: dict[str, str] = {}
    details: dict[str, Any] = {}
    broker: dict[str, Any] = {}
    try:
        with open_broker(os.environ) as kafka:
            broker = {
                "bootstrap": kafka.bootstrap,
                "started_by_bench": kafka.started,
                "kafka_version": KAFKA_VERSION if kafka.started else "external",
            }
            for group, name, measure in _steps(kafka, sizes, details, groups):
                if group not in groups:
                    continue
                step_clock = time.monotonic()
                try:
                    measurements.update(measure())
                except Exception as exc:  # one failed measurement must not lose the others' figures
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    log_event(logger, "step_failed", step=name, reason=errors[name], level=logging.ERROR)
                else:
                    log_event(logger, "step_done", step=name, seconds=round(time.monotonic() - step_clock, 1))
    except Exception as exc:  # the broker itself could not be started or reached
        errors["broker"] = f"{type(exc).__name__}: {exc}"
    run = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.monotonic() - clock, 1),
        "quick": args.quick,
        "sizes": {name: getattr(sizes, name) for name in sizes.__dataclass_fields__},
        "broker": broker,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": _versions(),
        **details,
    }
    text = render(document(measurements=measurements, run=run, errors=errors))
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

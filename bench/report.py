"""The JSON document of a bench run: every figure with its unit, its limit and figure/limit (pure).

Limits are figures of the same run: the raw confluent-kafka figures are their own limits
(ratio 1), aiokafka's are compared with confluent-kafka's, the transactional loop with the
plain loop, and the thin path with the plain loop (throughput) and raw latency. The router's
and Faust's figures are compared with the plain loop copying the router's own input records
(`router.raw`, `router.raw_us`); the worker's with the plain loop copying the worker's input
records (`worker.raw`) and with round trips of the same records taken in turn with its own
(`worker.raw_latency`). For latencies and times per event a ratio above 1 means slower
than the limit; for rates a ratio below 1 means fewer events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from bench.samples import Latency, Throughput

__all__ = ["SPECS", "FigureSpec", "document", "figures", "render"]

Statistic = Literal["rate", "p50", "p99", "us_per_event"]
Measurement = Throughput | Latency

_UNITS: dict[Statistic, str] = {"rate": "events/s", "p50": "ms", "p99": "ms", "us_per_event": "µs/event"}


@dataclass(frozen=True, slots=True)
class FigureSpec:
    """One reported figure: which measurement it comes from, how, and what it is compared with."""

    name: str
    measurement: str
    statistic: Statistic
    limit: str
    """Name of the figure this one is divided by."""
    note: str


_LOOP = "consume a batch of up to 500, produce each record, commit offsets asynchronously"
_TXN = "bus.kafka.txloop.TransactionalLoop: one transaction per batch of up to 500, KIP-447 offsets"
_ONE = "one record in flight, produce() to record read back, linger.ms=2"
_AIO_ONE = "one record in flight, send() to getone(), linger_ms=2"
_HTTP = "HTTP POST (one structured event per request) to result read from the results topic"
_NULL = "the gateway's server answering 202 without Kafka (bench.null_gateway), one event per POST"
_GATEWAY = "POST /events, one structured event per request, 202 once Kafka acknowledged (bench.http_load)"
_GATEWAY_BATCH = "POST /events with sizes.thin_batch events per request, one transaction per group of batches"
_ROUTER_RAW = "the plain loop copying the router's input (~500-byte binary-mode CloudEvents) to one topic"
_ROUTER_FAN = (
    "the plain loop fanning the 10-rule input out as the router does (1.67 records per event, all 8"
    " function topics, one header added) without routing: the bound the fan-out alone sets"
)
_ROUTER_RAW_AFTER = (
    "router.raw measured again after the router's figures: its ratio is how far the limit drifted"
    " during them (other work on the machine, the broker's state)"
)
_ROUTER_TX = "bus.router.Router in bus.router.routing_loop (pipelined commits), {n} rules, fan-out ~1.6"
_ROUTER_PLAIN = "bus.router.Router in the plain loop (idempotent producer, async commits), {n} rules"
_FAUST = (
    "faust-streaming agent (at_least_once) sending the Router's outputs per event, {n} rules;"
    " stops after 2 x sizes.router_seconds (complete: false when Faust could not route them all)"
)


def _router_specs() -> tuple[FigureSpec, ...]:
    specs = [
        FigureSpec("router.raw", "router.raw", "rate", "router.raw", _ROUTER_RAW),
        FigureSpec("router.raw_us", "router.raw", "us_per_event", "router.raw_us", _ROUTER_RAW),
        FigureSpec("router.fan", "router.fan", "rate", "router.raw", _ROUTER_FAN),
    ]
    for mode, note in (("tx", _ROUTER_TX), ("plain", _ROUTER_PLAIN)):
        specs.extend(
            FigureSpec(f"router.{mode}.r{n}", f"router.{mode}.r{n}", "rate", "router.raw", note.format(n=n))
            for n in (10, 100, 1000)
        )
        specs.append(
            FigureSpec(
                f"router.{mode}_of_fan.r10",
                f"router.{mode}.r10",
                "rate",
                "router.fan",
                f"router.{mode}.r10 against the fan-out alone: what routing itself costs",
            )
        )
    specs.append(FigureSpec("router.raw.after", "router.raw.after", "rate", "router.raw", _ROUTER_RAW_AFTER))
    specs += [
        FigureSpec(
            "router.match_us.r1000",
            "router.transform.r1000",
            "us_per_event",
            "router.raw_us",
            "the Router transform without Kafka (decode, match, outputs), batches of 50, 1000 rules",
        ),
        FigureSpec(
            "router.rules_us.r1000",
            "router.rules.r1000",
            "us_per_event",
            "router.raw_us",
            "bus.routing.matching_rules alone on decoded events, 1000 rules",
        ),
    ]
    specs.extend(
        FigureSpec(f"faust.r{n}", f"faust.r{n}", "rate", "router.raw", _FAUST.format(n=n)) for n in (10, 1000)
    )
    return tuple(specs)


_WORKER_RAW = (
    "bench.router's plain loop copying sizes.events worker input records (binary-mode CloudEvents,"
    " 3 partitions) to one topic"
)
_WORKER_NOOP = (
    "one replica (python -m workers), no-op sync handler, ordering {ordering}, concurrency {n}, 3 partitions;"
    " first results read (read_committed) to the last"
)
_WORKER_SLEEP = (
    "one replica, handler sleeping 20 ms, 2 partitions, 64 keys, concurrency 64, ordering {ordering}{what}"
)
_WORKER_TRIP = (
    "one event in flight: publish to its result read, no-op handler, ordering partition, concurrency 1"
)
_WORKER_RAW_TRIP = "one record in flight: produce to read back (read_committed), in turn with worker.latency"
_WORKER_COLD = {
    "host": "spawn of the handler host to its handler imported (the worker_ready line's cold_start_ms)",
    "ready": "spawn of python -m workers to its worker_ready line (topics ensured, host ready)",
    "first_result": "spawn of python -m workers to the first result of its pre-filled topic read",
}
_WORKER_COLD_LIMIT = {"host": "host", "ready": "host", "first_result": "ready"}


def _worker_specs() -> tuple[FigureSpec, ...]:
    specs = [FigureSpec("worker.raw", "worker.raw", "rate", "worker.raw", _WORKER_RAW)]
    specs.extend(
        FigureSpec(
            f"worker.noop.{ordering}.c{n}",
            f"worker.noop.{ordering}.c{n}",
            "rate",
            "worker.raw",
            _WORKER_NOOP.format(ordering=ordering, n=n),
        )
        for ordering, n in (("partition", 1), ("partition", 16), ("key", 16))
    )
    specs += [
        FigureSpec(
            "worker.raw.after",
            "worker.raw.after",
            "rate",
            "worker.raw",
            "worker.raw measured again after the no-op figures: its ratio is how far the limit drifted",
        ),
        FigureSpec(
            "worker.sleep20.partition",
            "worker.sleep20.partition",
            "rate",
            "worker.sleep20.partition",
            _WORKER_SLEEP.format(ordering="partition", what=" (one in flight per partition: 100/s at most)"),
        ),
        FigureSpec(
            "worker.sleep20.key",
            "worker.sleep20.key",
            "rate",
            "worker.sleep20.partition",
            _WORKER_SLEEP.format(ordering="key", what=" (goal: 10x partition mode)"),
        ),
    ]
    for stat in ("p50", "p99"):
        specs += [
            FigureSpec(
                f"worker.raw_latency.{stat}",
                "worker.raw_latency",
                stat,
                f"worker.raw_latency.{stat}",
                _WORKER_RAW_TRIP,
            ),
            FigureSpec(
                f"worker.latency.{stat}", "worker.latency", stat, f"worker.raw_latency.{stat}", _WORKER_TRIP
            ),
        ]
    for span, note in _WORKER_COLD.items():
        specs.extend(
            FigureSpec(
                f"worker.cold_start.{span}.{stat}",
                f"worker.cold_start.{span}",
                stat,
                f"worker.cold_start.{_WORKER_COLD_LIMIT[span]}.{stat}",
                note,
            )
            for stat in ("p50", "p99")
        )
    return tuple(specs)


_DRAIN = "supervisor start to the last result of a backlog of 10 ms events on 4 partitions, {what}"
_ZERO = "publish to result read of one event, {what}"


def _autoscale_specs() -> tuple[FigureSpec, ...]:
    pinned = _DRAIN.format(what="min = max = 4 replicas (the limit)")
    auto = _DRAIN.format(what="autoscaled from min 1 to max 4 (goal: at most 1.25 x pinned)")
    direct = _ZERO.format(what="a replica spawned directly as it is published (the limit)")
    scaled = _ZERO.format(what="the group at zero replicas, the supervisor scaling from zero (goal < 2 s)")
    specs = [
        FigureSpec(
            "autoscale.drain.pinned", "autoscale.drain.pinned", "p50", "autoscale.drain.pinned", pinned
        ),
        FigureSpec("autoscale.drain.auto", "autoscale.drain.auto", "p50", "autoscale.drain.pinned", auto),
    ]
    for stat in ("p50", "p99"):
        specs += [
            FigureSpec(
                f"autoscale.direct_start.{stat}",
                "autoscale.direct_start",
                stat,
                f"autoscale.direct_start.{stat}",
                direct,
            ),
            FigureSpec(
                f"autoscale.from_zero.{stat}",
                "autoscale.from_zero",
                stat,
                f"autoscale.direct_start.{stat}",
                scaled,
            ),
        ]
    return tuple(specs)


_INVOKE = "POST /functions/{name}/invoke, one call in flight, no-op handler: HTTP answer with its result"
_INVOKE_RAW = "one record in flight: produce to read back, in the same step as invoke.sync"


def _invoke_specs() -> tuple[FigureSpec, ...]:
    specs: list[FigureSpec] = []
    for stat in ("p50", "p99"):
        specs += [
            FigureSpec(f"invoke.raw.{stat}", "invoke.raw", stat, f"invoke.raw.{stat}", _INVOKE_RAW),
            FigureSpec(f"invoke.sync.{stat}", "invoke.sync", stat, f"invoke.raw.{stat}", _INVOKE),
        ]
    return tuple(specs)


_HOST = "spawn of a handler host (workers.sandbox) to its handler imported, {what}"


def _packages_specs() -> tuple[FigureSpec, ...]:
    what = {
        "plain": "on the platform's interpreter (the limit)",
        "cached": "packaged function, environment cached (lookup included)",
        "uncached": "packaged function, environment built first (venv + pip, local wheel, no network)",
    }
    return tuple(
        FigureSpec(
            f"packages.host.{kind}.{stat}",
            f"packages.host.{kind}",
            stat,
            f"packages.host.plain.{stat}",
            _HOST.format(what=text),
        )
        for kind, text in what.items()
        for stat in ("p50", "p99")
    )


SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        "confluent.produce",
        "confluent.produce",
        "rate",
        "confluent.produce",
        "bus producer config: idempotent, acks=all, linger.ms=2, lz4; 200-byte values",
    ),
    FigureSpec(
        "confluent.produce.uncompressed",
        "confluent.produce.uncompressed",
        "rate",
        "confluent.produce",
        "as confluent.produce with compression.type=none, as aiokafka runs here",
    ),
    FigureSpec(
        "confluent.consume",
        "confluent.consume",
        "rate",
        "confluent.consume",
        "one group consumer, read_committed, first record to last",
    ),
    FigureSpec(
        "confluent.consume_produce", "confluent.consume_produce", "rate", "confluent.consume_produce", _LOOP
    ),
    FigureSpec("confluent.latency.p50", "confluent.latency", "p50", "confluent.latency.p50", _ONE),
    FigureSpec("confluent.latency.p99", "confluent.latency", "p99", "confluent.latency.p99", _ONE),
    FigureSpec(
        "aiokafka.produce",
        "aiokafka.produce",
        "rate",
        "confluent.produce",
        "enable_idempotence=True, acks=all, linger_ms=2, no compression",
    ),
    FigureSpec(
        "aiokafka.consume",
        "aiokafka.consume",
        "rate",
        "confluent.consume",
        "one group consumer, read_committed, getmany(max_records=500)",
    ),
    FigureSpec(
        "aiokafka.consume_produce",
        "aiokafka.consume_produce",
        "rate",
        "confluent.consume_produce",
        "getmany up to 500, send each, await commit of the batch's offsets",
    ),
    FigureSpec("aiokafka.latency.p50", "aiokafka.latency", "p50", "confluent.latency.p50", _AIO_ONE),
    FigureSpec("aiokafka.latency.p99", "aiokafka.latency", "p99", "confluent.latency.p99", _AIO_ONE),
    FigureSpec(
        "confluent.transactional_consume_produce",
        "confluent.transactional_consume_produce",
        "rate",
        "confluent.consume_produce",
        _TXN,
    ),
    FigureSpec("gateway.null.post", "gateway.null.single", "rate", "gateway.null.post", _NULL),
    FigureSpec(
        "gateway.null.latency.p50", "gateway.null.single_latency", "p50", "gateway.null.latency.p50", _NULL
    ),
    FigureSpec(
        "gateway.null.latency.p99", "gateway.null.single_latency", "p99", "gateway.null.latency.p99", _NULL
    ),
    FigureSpec("gateway.post", "gateway.single", "rate", "gateway.null.post", _GATEWAY),
    FigureSpec("gateway.latency.p50", "gateway.single_latency", "p50", "gateway.null.latency.p50", _GATEWAY),
    FigureSpec("gateway.latency.p99", "gateway.single_latency", "p99", "gateway.null.latency.p99", _GATEWAY),
    FigureSpec("gateway.batched_post", "gateway.batched", "rate", "confluent.produce", _GATEWAY_BATCH),
    FigureSpec("thinpath.http_to_result", "thinpath.single", "rate", "confluent.consume_produce", _HTTP),
    FigureSpec("thinpath.latency.p50", "thinpath.single_latency", "p50", "confluent.latency.p50", _HTTP),
    FigureSpec("thinpath.latency.p99", "thinpath.single_latency", "p99", "confluent.latency.p99", _HTTP),
    FigureSpec(
        "thinpath.batched_http_to_result",
        "thinpath.batched",
        "rate",
        "confluent.consume_produce",
        "as thinpath.http_to_result with a batch of events per request (see sizes.thin_batch)",
    ),
    *_router_specs(),
    *_worker_specs(),
    *_autoscale_specs(),
    *_packages_specs(),
    *_invoke_specs(),
)


def _value(spec: FigureSpec, measurement: Measurement) -> float:
    if spec.statistic == "rate":
        assert isinstance(measurement, Throughput), spec.name
        return measurement.rate
    if spec.statistic == "us_per_event":
        assert isinstance(measurement, Throughput), spec.name
        return measurement.seconds / measurement.events * 1e6 if measurement.events else 0.0
    assert isinstance(measurement, Latency), spec.name
    return measurement.percentile(50 if spec.statistic == "p50" else 99)


def _significant(number: float) -> float:
    return float(f"{number:.4g}")


def figures(measurements: Mapping[str, Measurement]) -> list[dict[str, Any]]:
    """The figures whose measurement was taken, in the order of SPECS."""
    values = {s.name: _value(s, measurements[s.measurement]) for s in SPECS if s.measurement in measurements}
    out: list[dict[str, Any]] = []
    for spec in SPECS:
        if spec.name not in values:
            continue
        measurement = measurements[spec.measurement]
        limit = values.get(spec.limit)
        figure: dict[str, Any] = {
            "name": spec.name,
            "value": _significant(values[spec.name]),
            "unit": _UNITS[spec.statistic],
            "limit": spec.limit,
            "ratio": _significant(values[spec.name] / limit) if limit else None,
        }
        if isinstance(measurement, Throughput):
            figure.update(events=measurement.events, seconds=round(measurement.seconds, 3))
        else:
            figure.update(samples=len(measurement.samples_ms))
        figure.update(complete=measurement.complete, note=spec.note)
        out.append(figure)
    return out


def document(
    *,
    measurements: Mapping[str, Measurement],
    run: Mapping[str, Any],
    errors: Mapping[str, str],
) -> dict[str, Any]:
    """The whole report: how the run went (`run`), its figures and the measurements that failed."""
    return {
        "bench": "bus kafka-client and thin-path limits",
        **run,
        "figures": figures(measurements),
        "errors": dict(errors),
    }


def render(doc: Mapping[str, Any]) -> str:
    """The report as indented JSON text."""
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()

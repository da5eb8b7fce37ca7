"""`python -m bench.avro_codecs [--events N] [--out FILE]`: Avro codecs against orjson, no broker.

Encodes and decodes one typical event data record (the `bus.object.*` notification data) with
fastavro, the `avro` package and orjson, plus bus's own paths (validate + encode, guarded decode),
and prints one JSON document in the shape of `python -m bench`'s: every figure in events/s, divided
by orjson's encode or decode figure of the same run. Each figure is the best of `--rounds` rounds,
taken in turns with the other figures, so a busy neighbour on a shared machine lowers it less.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import orjson

from bench.report import render
from bench.samples import Throughput
from bus.avro_codec import decode, encode
from bus.avro_schema import Schema, platform_book

__all__ = ["DATA", "FIGURES", "main", "measure"]

DATA: dict[str, Any] = {
    "provider": "s3",
    "bucket": "media-uploads",
    "key": "photos/2026/01/red flower.jpg",
    "size": 482_113,
    "etag": "d41d8cd98f00b204e9800998ecf8427e",
    "version_id": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
    "sequencer": "0055AED6DCD90281E5",
    "event_name": "ObjectCreated:Put",
    "region": "eu-west-1",
    "event_time": "2026-01-31T09:30:00.123Z",
}
"""One object notification's data, as bus.notifications builds it."""

# (name, limit, note): the limit is the orjson figure in the same direction.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("orjson.encode", "orjson.encode", "orjson.dumps(data)"),
    ("fastavro.encode", "orjson.encode", "fastavro.schemaless_writer to a BytesIO, parsed schema"),
    ("avro.encode", "orjson.encode", "avro.io.DatumWriter + BinaryEncoder (the avro package)"),
    ("bus.avro.encode", "orjson.encode", "bus.avro_codec.encode: validate with paths, then fastavro"),
    ("orjson.decode", "orjson.decode", "orjson.loads(body)"),
    ("fastavro.decode", "orjson.decode", "fastavro.schemaless_reader from a BytesIO, no guard"),
    ("avro.decode", "orjson.decode", "avro.io.DatumReader + BinaryDecoder (the avro package)"),
    ("bus.avro.decode", "orjson.decode", "bus.avro_codec.decode: size and bomb guard, then fastavro"),
)


def _codecs(schema: Schema) -> dict[str, Callable[[], object]]:
    """Each figure's one-event operation, all on the same data and bodies."""
    json_body = orjson.dumps(DATA)
    avro_body = encode(schema, DATA)
    reference = avro.schema.parse(schema.text)
    writer = avro.io.DatumWriter(reference)
    reader = avro.io.DatumReader(reference, reference)

    def fastavro_encode() -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema.wire, DATA)
        return out.getvalue()

    def avro_encode() -> bytes:
        out = io.BytesIO()
        writer.write(DATA, avro.io.BinaryEncoder(out))
        return out.getvalue()

    def avro_decode() -> object:
        return reader.read(avro.io.BinaryDecoder(io.BytesIO(avro_body)))

    return {
        "orjson.encode": lambda: orjson.dumps(DATA),
        "fastavro.encode": fastavro_encode,
        "avro.encode": avro_encode,
        "bus.avro.encode": lambda: encode(schema, DATA),
        "orjson.decode": lambda: orjson.loads(json_body),
        "fastavro.decode": lambda: fastavro.schemaless_reader(io.BytesIO(avro_body), schema.wire),
        "avro.decode": avro_decode,
        "bus.avro.decode": lambda: decode(schema, avro_body, max_bytes=1 << 20, max_items=100_000),
    }


def measure(events: int, rounds: int) -> dict[str, Throughput]:
    """The best of `rounds` timed loops of `events` calls, per figure."""
    schema = platform_book().types["bus.object.*"]
    codecs = _codecs(schema)
    for operation in codecs.values():  # every codec gives the same data back
        operation()
    if fastavro.schemaless_reader(io.BytesIO(encode(schema, DATA)), schema.wire) != DATA:
        raise AssertionError("fastavro does not round-trip the data")
    counts = {name: max(1, events // 20) if name.startswith("avro.") else events for name in codecs}
    best = dict.fromkeys(codecs, float("inf"))
    # Rounds go round every figure in turn, so a burst of load on a shared machine hits one round of
    # each figure rather than every round of one figure. The avro package is about two orders of
    # magnitude slower: it makes 1/20 of the calls to keep the run short.
    for _ in range(rounds):
        for name, operation in codecs.items():
            started = time.perf_counter()
            for _ in range(counts[name]):
                operation()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: Throughput(events=counts[name], seconds=best[name], target=counts[name]) for name in codecs}


def document(taken: dict[str, Throughput], run: dict[str, Any]) -> dict[str, Any]:
    """The report: each figure with its limit and ratio, as `bench.report` writes them."""
    figures: list[dict[str, Any]] = []
    for name, limit, note in FIGURES:
        value = taken[name].rate
        figures.append(
            {
                "name": name,
                "value": float(f"{value:.4g}"),
                "unit": "events/s",
                "limit": limit,
                "ratio": float(f"{value / taken[limit].rate:.4g}"),
                "events": taken[name].events,
                "seconds": round(taken[name].seconds, 4),
                "complete": taken[name].complete,
                "note": note,
            }
        )
    return {"bench": "bus avro codecs against orjson", **run, "figures": figures, "errors": {}}


def main(argv: list[str] | None = None) -> int:
    """Measure, print the JSON document, optionally write it to a file."""
    parser = argparse.ArgumentParser(prog="python -m bench.avro_codecs", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="calls per round (avro package: 1/20)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per figure; the fastest counts")
    parser.add_argument("--out", type=Path, help="also write the JSON document to this file")
    args = parser.parse_args(argv)
    started = time.time()
    load_before = os.getloadavg()
    taken = measure(args.events, args.rounds)
    schema = platform_book().types["bus.object.*"]
    run = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "sizes": {"events": args.events, "rounds": args.rounds},
        "body_bytes": {"json": len(orjson.dumps(DATA)), "avro": len(encode(schema, DATA))},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "python": platform.python_version(),
            "fastavro": version("fastavro"),
            "avro": version("avro"),
            "orjson": version("orjson"),
        },
    }
    text = render(document(taken, run))
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

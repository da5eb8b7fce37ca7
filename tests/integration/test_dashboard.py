"""`bus ui` on the real broker, rendered by headless Chromium: what the DOM says and what the pixels show."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer

from bus import naming
from bus.clock import now_rfc3339
from bus.dashboard_page import COLORS
from bus.events import CloudEvent
from bus.kafka.admin import ensure_topics
from bus.kafka.config import build, producer_config
from bus.kafka_binding import to_record
from bus.localkafka import free_port
from bus.manifest import read
from bus.status import SCALING_DECISION
from bus.topology import TopicSpec, manifest_topics
from tests.support import KafkaEnv, unique, write_manifest

MANIFEST = """
functions:
  resize: {handler: "handlers:echo", partitions: 2, scaling: {max: 4, lag_threshold: 100}}
"""

SCALE_OUT = "scale out 1->3: lag 240 / 100 per replica = 2.4 -> 3"
"""The reason of the decision the page must show."""

WINDOW = (1280, 1000)

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-device-scale-factor=1",
)  # fmt: skip


def _produce(kafka: KafkaEnv, topic: str, count: int) -> None:
    """Write `count` records to `topic`, spread over its partitions by the client."""
    producer = build(Producer, producer_config(kafka.settings()))
    for n in range(count):
        producer.produce(topic, value=b"%d" % n, key=b"%d" % n)
    assert producer.flush(30) == 0


def _decide(kafka: KafkaEnv, prefix: str, *, desired: int, actual: int, lag: int, reason: str) -> None:
    """Publish one decision as the supervisor does (`bus.supervisor`)."""
    at = now_rfc3339()
    event = CloudEvent.create(
        id=unique("d"), source=f"bus://{prefix}/supervisor/test", type=SCALING_DECISION, time=at,
        subject="resize", datacontenttype="application/json",
        data={"function": "resize", "desired": desired, "actual": actual, "reason": reason,
              "total_lag": lag, "p99_seconds": None, "at": at},
    )  # fmt: skip
    record = to_record(event)
    producer = build(Producer, producer_config(kafka.settings()))
    producer.produce(
        naming.scaling_topic(prefix), key=record.key, value=record.value, headers=list(record.headers)
    )
    assert producer.flush(30) == 0


def _state(url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{url}api/state", timeout=2)
    except httpx.HTTPError:
        return None
    body: dict[str, Any] = response.json()
    return body


def _wait_for(url: str, *, lag: int, points: int, timeout: float) -> dict[str, Any]:
    """`resize`'s state once it shows `lag`, 3 dead letters and 2 decisions over `points` samples."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = _state(url)
        f: dict[str, Any] = state["functions"]["resize"] if state else {}
        if state and f["status"]:
            seen = {
                "lag": f["status"]["lag"], "dlq": f["dlq"], "decisions": len(f["decisions"]),
                "points": len(f["history"]["t"]), "error": state["error"],
            }  # fmt: skip
            if seen["points"] >= points and (seen["lag"], seen["dlq"], seen["decisions"]) == (lag, 3, 2):
                return f
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {timeout}s waiting for lag {lag} over {points} samples; saw {seen}"
    )


def _png_rgb(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit non-interlaced RGB or RGBA PNG, as Chromium writes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + size
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour in (2, 6), interlace) == (8, True, 0), f"unexpected PNG format {header!r}"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + guess) & 0xFF
        previous = line
        rows.append(bytes(line) if channels == 3 else bytes(b for n, b in enumerate(line) if n % 4 != 3))
    return width, height, rows


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _chromium(url: str, tmp_path: Path) -> tuple[str, Path]:
    """Render `url` in headless Chromium: (the DOM after its scripts ran, a screenshot)."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: run `make system-deps`"
    shot = tmp_path / "dashboard.png"
    result = subprocess.run(
        [
            chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=2500",
            "--dump-dom", f"--screenshot={shot}", url,
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists(), result.stderr[-2000:]
    return result.stdout, shot


def test_the_dashboard_renders_lag_replicas_decisions_and_dead_letters(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """A function with lag, 3 dead letters and a scale-out: the page names them all and plots the lag."""
    path = write_manifest(tmp_path, kafka.prefix(), MANIFEST)
    parsed = read(path)
    prefix = parsed.prefix
    ensure_topics(kafka.settings(), [*manifest_topics(parsed), TopicSpec(naming.scaling_topic(prefix), 1)])
    topic = naming.function_topic(prefix, "resize")
    _produce(kafka, topic, 240)
    _produce(kafka, naming.dlq_topic(prefix, "resize"), 3)
    _decide(kafka, prefix, desired=1, actual=1, lag=0, reason="hold 1: lag 0 needs 1 replica")
    _decide(kafka, prefix, desired=3, actual=1, lag=240, reason=SCALE_OUT)

    port = free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_HOME": str(tmp_path)}
    with log.open("wb") as stderr:
        ui = subprocess.Popen(
            [sys.executable, "-m", "bus", "ui", "-f", str(path), "--port", str(port), "--interval", "0.25"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, lag=240, points=6, timeout=20)
        _produce(kafka, topic, 120)  # the lag rises: the line must go up to the right
        f = _wait_for(url, lag=360, points=14, timeout=20)

        assert f["decisions"][0]["reason"] == SCALE_OUT
        page = httpx.get(url, timeout=5)
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert httpx.get(f"{url}nothing-here", timeout=5).status_code == 404

        dom, shot = _chromium(url, tmp_path)
        assert re.search(r'<section[^>]*data-function="resize"', dom), dom[:3000]
        assert "<h2>resize</h2>" in dom
        assert SCALE_OUT in html.unescape(dom), "the decision's reason is in the table"
        assert re.search(r'<span[^>]*id="dlq-resize"[^>]*>3</span>', dom), "3 dead letters are shown"
        assert 'class="series series-lag"' in dom

        plot = re.search(r'class="chart-lag"[^>]*data-plot="(\d+),(\d+),(\d+),(\d+)"', dom)
        assert plot, "the lag chart says where its plot area is"
        left, top, width, height = (int(v) for v in plot.groups())
        _assert_lag_line(shot, left, top, width, height)
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=15)
    assert ui.returncode == 0, log.read_text()
    assert ui.stdout is not None
    assert f"dashboard at {url}" in ui.stdout.read().decode()
    assert re.search(rf'"event":"dashboard_serving".*"url":"{re.escape(url)}"', log.read_text())


def _assert_lag_line(shot: Path, left: int, top: int, width: int, height: int) -> None:
    """Pixels of the lag colour inside the plot area form a line across it, higher at its right end."""
    image_width, image_height, rows = _png_rgb(shot.read_bytes())
    assert (image_width, image_height) == WINDOW
    assert left + width <= image_width, (left, width)
    assert top + height <= image_height, (top, height)
    red, green, blue = _hex(COLORS["lag"])
    by_column: dict[int, list[int]] = {}
    for y in range(top, top + height + 1):
        row = rows[y]
        for x in range(left, left + width + 1):
            r, g, b = row[3 * x], row[3 * x + 1], row[3 * x + 2]
            if abs(r - red) <= 40 and abs(g - green) <= 40 and abs(b - blue) <= 40:
                by_column.setdefault(x, []).append(y)
    assert len(by_column) >= 0.8 * width, (
        f"the lag line covers {len(by_column)} of {width} columns of the plot area; see {shot}"
    )
    start = [x for x in sorted(by_column) if x < left + width * 0.2]
    end = [x for x in sorted(by_column) if x > left + width * 0.9]
    assert start, f"the lag line does not start at the left of the plot; see {shot}"
    assert end, f"the lag line does not reach the right of the plot; see {shot}"
    high_start = min(min(by_column[x]) for x in start)
    high_end = min(min(by_column[x]) for x in end)
    assert high_end < high_start - 10, (
        f"lag 360 is drawn above lag 240 ({high_end} vs {high_start}); see {shot}"
    )

"""The README's quick start, as written: `bus up`, its curl, `bus tail`, then Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from bus import localkafka
from tests.support import run_bus, wait_until

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_payload() -> dict[str, object]:
    match = re.search(r"-d '(\{.*?\})'", README.read_text())
    assert match, "README.md has no curl -d '...' example"
    payload = orjson.loads(match.group(1))
    assert isinstance(payload, dict)
    return payload


def test_bus_up_serves_the_readme_example_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """`bus up` starts its own Kafka; the README's event yields a result; SIGINT stops all of it."""
    http_port, ui_port = localkafka.free_port(), localkafka.free_port()
    env = {**os.environ, "BUS_HOME": str(tmp_path)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the quick start brings its own broker
    up = subprocess.Popen(
        [sys.executable, "-m", "bus", "up", "--http-port", str(http_port), "--ui-port", str(ui_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert up.stdout is not None
        banner = wait_until(lambda: _line_with(up, "Ctrl-C"), timeout=180, what="bus up's banner")
        assert "Ctrl-C" in banner
        payload = _readme_payload()
        response = httpx.post(
            f"http://127.0.0.1:{http_port}/events",
            content=orjson.dumps(payload),
            headers={"content-type": "application/cloudevents+json"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        tail = run_bus(
            *("tail", "bus.fn.hello.results", "--from-beginning", "--max", "1", "--timeout", "60", "--json"),
            env={"BUS_HOME": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": None},
        )
        assert tail.returncode == 0, tail.stderr
        result = orjson.loads(tail.stdout.splitlines()[0])
        assert result["causationid"] == payload["id"]
        assert result["data"] == {"greeting": "hello, Ada"}
        broker = localkafka.status(tmp_path / "kafka")
        assert broker is not None
        # The dashboard serves the page and the supervisor's metrics.
        ui = f"http://127.0.0.1:{ui_port}"
        assert httpx.get(f"{ui}/", timeout=10).status_code == 200
        wait_until(
            lambda: (
                'bus_function_replicas_actual{function="hello"}'
                in httpx.get(f"{ui}/metrics", timeout=10).text
            ),
            timeout=30,
            what="the supervisor's metrics on the dashboard",
        )
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=90)
    assert up.returncode == 0, output
    assert "bus is down" in output
    assert localkafka.status(tmp_path / "kafka") is None, "bus up stops the broker it started"
    assert (
        not Path(f"/proc/{broker.pid}").exists()
        or b"kafka.Kafka" not in Path(f"/proc/{broker.pid}/cmdline").read_bytes()
    )


def _line_with(process: subprocess.Popen[str], text: str) -> str | None:
    """Read the process's next output line (pytest-timeout bounds a silent hang); match `text`."""
    assert process.stdout is not None
    if process.poll() is not None:
        raise AssertionError(f"bus up exited early with {process.returncode}: {process.stdout.read()}")
    line = process.stdout.readline()
    return line if text in line else None

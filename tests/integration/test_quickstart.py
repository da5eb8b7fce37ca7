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


PROJECT = """
prefix: {prefix}
schemas:
  order.placed: schemas/order.avsc
functions:
  orders:
    handler: handlers:take
rules:
  - name: orders
    pattern: {{type: [order.placed]}}
    targets: [orders]
"""

ORDER_SCHEMA = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}

DECOY = 'raise SystemExit("a folder of the project was imported in place of bus\'s own package")\n'


def test_bus_up_runs_in_a_project_folder_whose_folders_share_bus_package_names(tmp_path: Path) -> None:
    """A project laid out as the README shows (`schemas/` beside `bus.yaml`), with its own `workers/`
    and `gateway/` packages too: `bus up` started in it still runs bus's own, and a typed event
    gets its result."""
    project = tmp_path / "project"
    (project / "schemas").mkdir(parents=True)
    (project / "schemas" / "order.avsc").write_bytes(orjson.dumps(ORDER_SCHEMA))
    for package in ("workers", "gateway"):
        (project / package).mkdir()
        (project / package / "__init__.py").write_text(DECOY)
    (project / "handlers.py").write_text("def take(event, ctx):\n    return {'took': event.data['id']}\n")
    prefix = "proj"
    (project / "bus.yaml").write_text(PROJECT.format(prefix=prefix))
    http_port, ui_port = localkafka.free_port(), localkafka.free_port()
    home = tmp_path / "home"
    env = {**os.environ, "BUS_HOME": str(home)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bus",
            "up",
            "-f",
            "bus.yaml",
            "--http-port",
            str(http_port),
            "--ui-port",
            str(ui_port),
        ],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: _line_with(up, "Ctrl-C"), timeout=180, what="bus up's banner")
        event = {
            "specversion": "1.0",
            "id": "o-1",
            "source": "shop",
            "type": "order.placed",
            "data": {"id": "o-1"},
        }
        response = httpx.post(
            f"http://127.0.0.1:{http_port}/events",
            content=orjson.dumps(event),
            headers={"content-type": "application/cloudevents+json"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        tail = run_bus(
            *(
                "tail",
                f"{prefix}.fn.orders.results",
                "--from-beginning",
                "--max",
                "1",
                "--timeout",
                "60",
                "--json",
            ),
            env={"BUS_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": None},
        )
        assert tail.returncode == 0, tail.stderr
        assert orjson.loads(tail.stdout.splitlines()[0])["data"] == {"took": "o-1"}
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=90)
    assert up.returncode == 0, output
    assert "imported in place" not in output

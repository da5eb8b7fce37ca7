"""Packaged functions (bus.packages): the cold start of a handler host in a function's own
environment, cached and not, against a host on the platform's interpreter. No Kafka.

- `packages.host.plain`: spawn of a handler host (workers.sandbox) to its handler imported, on the
  platform's interpreter: the limit.
- `packages.host.cached`: the same for a packaged function whose environment is cached: the
  cache lookup (hashing requirements.txt) plus the host's start on the environment's interpreter.
- `packages.host.uncached`: the same with no cached environment: the build (a venv, pip installing
  a local wheel, no network: a real index adds its downloads) plus the start.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.report import Measurement
from bench.samples import Latency
from bus.packages import ensure
from workers.sandbox import Sandbox

__all__ = ["WHEEL", "host_starts", "write_wheel"]

WHEEL = "tinydep-1.0-py3-none-any.whl"
_HANDLER = "import tinydep\n\n\ndef handle(event, ctx):\n    return tinydep.GREETING\n"


def write_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel of `tinydep` 1.0 (one module, a RECORD with hashes) in `folder`."""
    files = {
        "tinydep/__init__.py": b'GREETING = "hello from tinydep"\n',
        "tinydep-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        "tinydep-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: bus\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()]
    files["tinydep-1.0.dist-info/RECORD"] = (
        "\n".join([*record, "tinydep-1.0.dist-info/RECORD,,"]) + "\n"
    ).encode()
    path = folder / WHEEL
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _host_ms(folder: Path, python: str) -> float:
    """Spawn to ready of one handler host of `pkgmod:handle` in `folder`, in milliseconds."""
    sandbox = Sandbox(
        handler="pkgmod:handle",
        base_dir=str(folder),
        function="bench",
        prefix="bench",
        concurrency=1,
        memory_mb=512,
        on_outcomes=lambda outcomes: None,
        python=python,
    )
    sandbox.start()
    try:
        return sandbox.cold_start_seconds * 1000
    finally:
        sandbox.close()


def host_starts(samples: int) -> dict[str, Measurement]:
    """`samples` cold starts each: plain, cached environment, uncached environment (built anew)."""
    root = Path(tempfile.mkdtemp(prefix="bus-bench-packages-"))
    try:
        folder = root / "pkg"
        folder.mkdir()
        write_wheel(folder)
        (folder / "pkgmod.py").write_text(_HANDLER)
        (folder / "requirements.txt").write_text(f"--no-index\n./{WHEEL}\n")
        plain_folder = root / "plain"
        plain_folder.mkdir()
        (plain_folder / "pkgmod.py").write_text("def handle(event, ctx):\n    return None\n")
        plain, cached, uncached = [], [], []
        for n in range(samples):
            plain.append(_host_ms(plain_folder, sys.executable))
            began = time.monotonic()
            environment = ensure(folder, root / f"envs{n}", where="bench")
            built = (time.monotonic() - began) * 1000
            uncached.append(built + _host_ms(folder, str(environment.python)))
            began = time.monotonic()
            environment = ensure(folder, root / f"envs{n}", where="bench")
            looked_up = (time.monotonic() - began) * 1000
            cached.append(looked_up + _host_ms(folder, str(environment.python)))
        return {
            "packages.host.plain": Latency(tuple(plain), samples),
            "packages.host.cached": Latency(tuple(cached), samples),
            "packages.host.uncached": Latency(tuple(uncached), samples),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)

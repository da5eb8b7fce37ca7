"""Packaged functions on the real broker: a function folder with a requirements.txt gets an
environment of its own (bus.packages), built at apply time, cached by hash, and its handler imports
a dependency its neighbours do not have. A broken requirements file fails `bus apply` with pip's
reason and stores nothing.

The dependency is a wheel the test writes (pure Python, one module) and the requirements file says
`--no-index`: pip resolves it from the folder, with no network.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from bench.packages import WHEEL, write_wheel
from bus import naming
from bus.errors import ManifestError
from bus.kafka.control_store import apply_file, read_applied
from bus.kafka_binding import from_record
from bus.manifest import read
from bus.packages import prepare
from tests.support import KafkaEnv, unique
from tests.worker_harness import WorkerProcess, check, publish

HANDLER = """
def handle(event, ctx):
    try:
        import tinydep
    except ImportError as exc:
        return {"import": "failed", "error": str(exc)}
    return {"import": "ok", "greeting": tinydep.GREETING, "file": tinydep.__file__}
"""


def write_manifest(root: Path, prefix: str, requirements: str) -> Path:
    """`packaged` (folder pkg/ with requirements) and its neighbour `plain` (the manifest's folder)."""
    package = root / "pkg"
    package.mkdir()
    (package / "pkgmod.py").write_text(HANDLER)
    (package / "requirements.txt").write_text(requirements)
    write_wheel(package)
    (root / "plainmod.py").write_text(HANDLER)
    path = root / "bus.yaml"
    path.write_text(
        f"prefix: {prefix}\nfunctions:\n"
        "  packaged: {package: pkg, handler: 'pkgmod:handle', partitions: 1}\n"
        "  plain: {handler: 'plainmod:handle', partitions: 1}\n"
    )
    return path


def test_a_packaged_function_imports_a_dependency_its_neighbour_does_not_have(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    path = write_manifest(tmp_path, prefix, f"--no-index\n./{WHEEL}\n")
    envs = tmp_path / "envs"
    began = time.monotonic()
    print("\n" + apply_file(kafka.settings(prefix), path, prefix=None, environments=envs))
    first_apply = time.monotonic() - began
    cached = prepare(read(path), envs)["packaged"]
    assert not cached.built, cached
    assert sorted(p.name for p in envs.iterdir()) == [cached.path.name, f"{cached.path.name}.lock"]

    results = {}
    workers = [
        WorkerProcess(kafka, path, name, tmp_path, name=f"{name}-w", env={"BUS_HOME": str(tmp_path)})
        for name in ("packaged", "plain")
    ]
    try:
        for worker in workers:
            worker.start()
        for name in ("packaged", "plain"):
            topic = naming.function_topic(prefix, name)
            acked = publish(kafka, topic, [{"key": "a"}], run=unique(name), prefix=prefix)
            figures = check(kafka, prefix, name, acked, timeout=60)
            assert (figures.lost, figures.dup_results) == (0, 0), figures.line()
            (message,) = kafka.read_all(naming.result_topic(prefix, name))
            results[name] = from_record(message.key(), message.value(), message.headers()).data
    finally:
        for worker in workers:
            worker.stop()
    ready = {
        w.log.name: orjson.loads(line)["cold_start_ms"]
        for w in workers
        for line in w.log.read_text().splitlines()
        if '"worker_ready"' in line
    }
    print(f"apply with a build {first_apply:.2f} s; cached lookup {cached.seconds * 1000:.1f} ms")
    print(f"host cold starts (ms): {ready}")
    assert results["packaged"]["import"] == "ok", results
    assert results["packaged"]["greeting"] == "hello from tinydep"
    assert results["packaged"]["file"].startswith(str(cached.path)), results
    assert results["plain"] == {"import": "failed", "error": "No module named 'tinydep'"}, results


def test_a_broken_requirements_file_fails_apply_with_pips_reason_and_stores_nothing(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    prefix = kafka.prefix()
    path = write_manifest(tmp_path, prefix, "--no-index\nno-such-package-bus-test==1.0\n")
    with pytest.raises(ManifestError) as caught:
        apply_file(kafka.settings(prefix), path, prefix=None, environments=tmp_path / "envs")
    assert caught.value.path == "functions.packaged.package"
    assert "No matching distribution found for no-such-package-bus-test==1.0" in str(caught.value), (
        caught.value
    )
    assert read_applied(kafka.settings(prefix), prefix)[0] is None
    # The half-built environment is gone; only the builders' lock file stays.
    assert [p.suffix for p in (tmp_path / "envs").iterdir()] == [".lock"]
    # The CLI says the same and exits non-zero.
    done = subprocess.run(
        [sys.executable, "-m", "bus", "apply", "-f", str(path)],
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "BUS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "functions.packaged.package" in done.stderr, done.stderr
    assert "No matching distribution found" in done.stderr, done.stderr

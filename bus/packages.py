"""Packaged functions: a folder with the handler's code and a `requirements.txt`, run in a virtual
environment of its own, built once per distinct requirements file and cached.

```yaml
functions:
  parse:
    package: functions/parse      # a folder next to bus.yaml: parse.py, requirements.txt
    handler: parse:handle         # imported from the package folder
```

`bus apply` (and `bus up`, which applies) builds each packaged function's environment before
storing the manifest, so a broken requirements file fails there with pip's reason, not at the
first event. The environment lives in `$BUS_HOME/envs/<key>`, where the key hashes the
requirements file, the package folder's path, the platform's interpreter and this module's
layout version: a changed file gets a new environment. Only the handler host runs
in it (`workers.sandbox`, whose `python` is the environment's); the worker replica, which talks
to Kafka, stays on the platform's interpreter. The environment sees the platform's packages
after its own (a `.pth` file adds the platform's site-packages last), so the host's own code
imports, and the function's pinned versions win for the function.

One builder per key at a time (a lock file beside it); the others wait and use its work. A
build is complete only once its marker file is written last: a build that died half-way is
removed and redone by the next builder.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bus.errors import ManifestError
from bus.logs import log_event
from bus.manifest import Function, Manifest
from bus.settings import bus_home

__all__ = [
    "REQUIREMENTS",
    "Environment",
    "environment_key",
    "environments_home",
    "handler_dir",
    "host_python",
    "pip_reason",
    "prepare",
]

logger = logging.getLogger("bus.packages")

REQUIREMENTS = "requirements.txt"
LAYOUT = "bus-env-1"
"""Changes when the way environments are built changes: older ones are then rebuilt."""
PIP_TIMEOUT = 900.0
"""Seconds one environment's pip install may take."""
_COMPLETE = "bus-env.complete"
"""Written last into a finished environment."""


@dataclass(frozen=True, slots=True)
class Environment:
    """A function's built environment."""

    path: Path
    python: Path
    built: bool
    """True when this call built it; False when it was cached."""
    seconds: float
    """Time spent finding or building it."""


def environments_home(environ: Mapping[str, str]) -> Path:
    """Where environments are cached: `$BUS_HOME/envs`."""
    return bus_home(environ) / "envs"


def handler_dir(manifest: Manifest, function: Function) -> str:
    """The folder the function's handler module is imported from: its package, or the manifest's."""
    if function.package is None:
        return manifest.base_dir
    return str(Path(manifest.base_dir, function.package).resolve())


def environment_key(requirements: bytes, *, python: str = sys.executable) -> str:
    """The cache key of an environment for these requirements on this platform interpreter."""
    digest = hashlib.sha256()
    for part in (LAYOUT.encode(), os.path.realpath(python).encode(), sys.version.encode(), requirements):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:24]


def pip_reason(output: str, *, lines: int = 6) -> str:
    """pip's own explanation from its output: its `ERROR:` lines, else its last lines."""
    text = [line.rstrip() for line in output.splitlines() if line.strip()]
    errors = [line for line in text if line.lstrip().startswith("ERROR:")]
    chosen = errors or text[-lines:]
    return " | ".join(line.strip() for line in chosen[-lines:]) or "pip failed without output"


def prepare(manifest: Manifest, home: Path) -> dict[str, Environment]:
    """Build (or find cached) the environment of every packaged function with requirements.

    Raises ManifestError naming `functions.<name>.package` when a folder or handler module is
    missing or pip cannot install the requirements (with pip's reason).
    """
    built: dict[str, Environment] = {}
    for name, function in manifest.functions.items():
        if function.package is None:
            continue
        folder = Path(handler_dir(manifest, function))
        where = f"functions.{name}.package"
        if not folder.is_dir():
            raise ManifestError(
                where, f"{function.package!r} is not a folder (relative to {manifest.base_dir})"
            )
        module = function.handler.partition(":")[0].split(".")[0]
        if not (folder / f"{module}.py").is_file() and not (folder / module / "__init__.py").is_file():
            raise ManifestError(
                f"functions.{name}.handler",
                f"module {module!r} is not in the package folder {function.package!r}",
            )
        if (folder / REQUIREMENTS).is_file():
            built[name] = ensure(folder, home, where=where)
    return built


def host_python(manifest: Manifest, function: Function, home: Path) -> str:
    """The interpreter the function's handler host runs on: its environment's, or this one."""
    if function.package is None:
        return sys.executable
    folder = Path(handler_dir(manifest, function))
    if not (folder / REQUIREMENTS).is_file():
        return sys.executable
    return str(ensure(folder, home, where=f"functions.{function.name}.package").python)


def ensure(folder: Path, home: Path, *, where: str) -> Environment:
    """The environment for `folder`'s requirements.txt: cached, or built now."""
    began = time.monotonic()
    requirements = (folder / REQUIREMENTS).read_bytes()
    # The folder too: a requirements file may name local paths (`.`, `./wheels/x.whl`).
    key = environment_key(requirements + b"\0" + str(folder.resolve()).encode())
    path = home / key
    python = path / "bin" / "python"
    if (path / _COMPLETE).is_file():
        return Environment(path, python, built=False, seconds=time.monotonic() - began)
    home.mkdir(parents=True, exist_ok=True)
    with (home / f"{key}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per key; the others wait and use its work
        if (path / _COMPLETE).is_file():
            return Environment(path, python, built=False, seconds=time.monotonic() - began)
        log_event(logger, "environment_building", folder=str(folder), key=key)
        shutil.rmtree(path, ignore_errors=True)  # a build that died half-way
        try:
            _build(path, folder, where=where)  # in place: scripts' shebangs name where it stays
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
    seconds = time.monotonic() - began
    log_event(logger, "environment_built", folder=str(folder), key=key, seconds=round(seconds, 2))
    return Environment(path, python, built=True, seconds=seconds)


def _build(path: Path, folder: Path, *, where: str) -> None:
    """A venv at `path` with `folder`'s requirements installed and the platform's packages last."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], cwd=folder, where=where, what="venv")
    python = path / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "-r",
            REQUIREMENTS,
        ],
        cwd=folder,
        where=where,
        what=f"pip install -r {REQUIREMENTS}",
    )
    try:
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ManifestError(where, f"the new environment's interpreter does not run: {exc}") from exc
    platform = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(platform))
    Path(purelib, "zz-bus-platform.pth").write_text(lines)
    (path / _COMPLETE).write_text(f"{LAYOUT}\n{folder}\n")


def _run(command: list[str], *, cwd: Path, where: str, what: str) -> None:
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ManifestError(where, f"{what} took over {PIP_TIMEOUT:g}s") from exc
    if done.returncode != 0:
        reason = pip_reason(done.stderr + "\n" + done.stdout)
        raise ManifestError(where, f"{what} failed: {reason}")

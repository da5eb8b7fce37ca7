"""Packaged functions' pure parts (bus.packages): cache keys, pip's reason, the checks before a build."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.packages import WHEEL, write_wheel
from bus.errors import ManifestError
from bus.manifest import Manifest, parse
from bus.packages import ensure, environment_key, handler_dir, pip_reason, prepare


def test_the_key_follows_the_requirements_and_the_interpreter() -> None:
    assert environment_key(b"six==1.16.0\n") == environment_key(b"six==1.16.0\n")
    assert environment_key(b"six==1.16.0\n") != environment_key(b"six==1.17.0\n")
    assert environment_key(b"six\n", python="/usr/bin/python3") != environment_key(b"six\n", python="/opt/py")
    assert len(environment_key(b"")) == 24


def test_pips_reason_is_its_error_lines() -> None:
    output = (
        "Looking in links: .\n"
        "ERROR: Could not find a version that satisfies the requirement nope==1 (from versions: none)\n"
        "ERROR: No matching distribution found for nope==1\n"
    )
    assert pip_reason(output) == (
        "ERROR: Could not find a version that satisfies the requirement nope==1 (from versions: none)"
        " | ERROR: No matching distribution found for nope==1"
    )


def test_without_error_lines_pips_reason_is_its_last_lines() -> None:
    assert pip_reason("a\nb\n\nc\n", lines=2) == "b | c"
    assert pip_reason("") == "pip failed without output"


def manifest(tmp_path: Path, body: str) -> Manifest:
    return parse(yaml.safe_load(body), base_dir=str(tmp_path))


def test_a_package_is_a_folder_relative_to_the_manifest(tmp_path: Path) -> None:
    parsed = manifest(tmp_path, "functions: {f: {handler: 'mod:h', package: pkg}, g: {handler: 'mod:h'}}")
    assert handler_dir(parsed, parsed.functions["f"]) == str(tmp_path / "pkg")
    assert handler_dir(parsed, parsed.functions["g"]) == str(tmp_path)


@pytest.mark.parametrize("package", ["''", "3", "[a]"])
def test_a_package_must_be_a_path(tmp_path: Path, package: str) -> None:
    with pytest.raises(ManifestError) as caught:
        manifest(tmp_path, f"functions: {{f: {{handler: 'mod:h', package: {package}}}}}")
    assert caught.value.path == "functions.f.package"


def test_a_missing_folder_or_module_is_refused_before_any_build(tmp_path: Path) -> None:
    parsed = manifest(tmp_path, "functions: {f: {handler: 'mod:h', package: pkg}}")
    with pytest.raises(ManifestError, match="'pkg' is not a folder") as caught:
        prepare(parsed, tmp_path / "envs")
    assert caught.value.path == "functions.f.package"
    (tmp_path / "pkg").mkdir()
    with pytest.raises(ManifestError, match="module 'mod' is not in the package folder") as caught:
        prepare(parsed, tmp_path / "envs")
    assert caught.value.path == "functions.f.handler"


def test_a_package_without_requirements_needs_no_environment(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("def h(event, ctx):\n    return 1\n")
    parsed = manifest(tmp_path, "functions: {f: {handler: 'mod:h', package: pkg}}")
    assert prepare(parsed, tmp_path / "envs") == {}
    assert not (tmp_path / "envs").exists()


def test_a_build_that_died_half_way_is_redone_and_scripts_name_the_final_place(tmp_path: Path) -> None:
    """No marker: the folder is removed and built again; the interpreter runs the dependency."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    write_wheel(folder)
    (folder / "requirements.txt").write_text(f"--no-index\n./{WHEEL}\n")
    envs = tmp_path / "envs"
    first = ensure(folder, envs, where="functions.f.package")
    shutil.rmtree(first.path / "bin")  # as if the builder died: no marker, half a venv
    (first.path / "bus-env.complete").unlink()
    again = ensure(folder, envs, where="functions.f.package")
    assert (again.built, again.path) == (True, first.path)
    done = subprocess.run(
        [str(again.python), "-c", "import sys, tinydep; print(sys.prefix, tinydep.GREETING)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == [str(again.path), "hello", "from", "tinydep"]
    assert ensure(folder, envs, where="functions.f.package").built is False

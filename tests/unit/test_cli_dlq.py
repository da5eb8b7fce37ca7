"""`bus dlq`'s command line before any Kafka call: which DLQ (F or --router), filters, counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.cli import main


@pytest.fixture
def manifest_file(tmp_path: Path) -> Path:
    """A manifest with functions a and b (no broker is contacted by the tests using it)."""
    path = tmp_path / "bus.yaml"
    path.write_text("prefix: unit\nfunctions:\n  a: {handler: 'h:f'}\n  b: {handler: 'h:f'}\n")
    return path


def test_an_unknown_function_exits_2_naming_the_known_ones(
    manifest_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bus dlq list nope` names the functions of the manifest, in one line."""
    assert main(["dlq", "list", "nope", "-f", str(manifest_file)]) == 2
    err = capsys.readouterr().err
    assert err == "bus dlq: unknown function 'nope'; known functions: a, b\n"


@pytest.mark.parametrize(
    ("pattern", "says"),
    [('{"type": "x"}', "match values must be in an array"), ("{", "not valid JSON")],
)
def test_an_invalid_filter_exits_2_with_the_pattern_error(
    manifest_file: Path, capsys: pytest.CaptureFixture[str], pattern: str, says: str
) -> None:
    """A filter that is not a valid event pattern is refused before Kafka is asked anything."""
    assert main(["dlq", "redrive", "a", "-f", str(manifest_file), "--filter", pattern]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bus dlq: --filter: ")
    assert says in err
    assert err.count("\n") == 1


def test_max_must_be_positive(manifest_file: Path) -> None:
    """`--max 0` is a usage error (argparse exits 2)."""
    with pytest.raises(SystemExit) as exited:
        main(["dlq", "list", "a", "-f", str(manifest_file), "--max", "0"])
    assert exited.value.code == 2


@pytest.mark.parametrize("command", ["list", "redrive"])
def test_a_function_and_router_together_exit_2_naming_the_fix(
    manifest_file: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`bus dlq list a --router`: one of the two, said in one line."""
    assert main(["dlq", command, "a", "--router", "-f", str(manifest_file)]) == 2
    err = capsys.readouterr().err
    fix = f"`bus dlq {command} a` or `bus dlq {command} --router`"
    assert err == f"bus dlq: give a function F or --router, not both: {fix}\n"


@pytest.mark.parametrize("command", ["list", "redrive"])
def test_neither_a_function_nor_router_exits_2_naming_the_fix(
    manifest_file: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`bus dlq list` alone: name F, or pass --router, said in one line."""
    assert main(["dlq", command, "-f", str(manifest_file)]) == 2
    err = capsys.readouterr().err
    fix = f"name the function (`bus dlq {command} F`) or pass --router for the router's dead letters"
    assert err == f"bus dlq: {fix}\n"


def test_the_choice_is_checked_before_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing F is reported as such even when the manifest cannot be read."""
    assert main(["dlq", "list", "-f", str(tmp_path / "absent.yaml")]) == 2
    assert "--router" in capsys.readouterr().err


def test_router_with_an_invalid_filter_exits_2(
    manifest_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--router` takes the same filters as a function, refused the same way before Kafka is asked."""
    assert main(["dlq", "redrive", "--router", "-f", str(manifest_file), "--filter", '{"type": "x"}']) == 2
    err = capsys.readouterr().err
    assert err.startswith("bus dlq: --filter: ")
    assert err.count("\n") == 1


def test_router_max_must_be_positive(manifest_file: Path) -> None:
    """`--router --max 0` is a usage error (argparse exits 2)."""
    with pytest.raises(SystemExit) as exited:
        main(["dlq", "redrive", "--router", "-f", str(manifest_file), "--max", "0"])
    assert exited.value.code == 2

"""Argument types shared by the CLI (bus.cli_args), as `bus tail` and `bus dlq` use them."""

from __future__ import annotations

import argparse

import pytest

from bus.cli import main
from bus.cli_args import port, positive


@pytest.mark.parametrize("text", ["0", "-5", "2.5", "x", ""])
def test_a_count_is_a_whole_number_of_at_least_one(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"is not a positive number of replicas"):
        positive("replicas")(text)
    assert positive()("3") == 3


@pytest.mark.parametrize("argv", [["tail", "t", "--max", "0"], ["tail", "t", "--max", "-5"]])
def test_tail_refuses_a_max_below_one_before_reading_anything(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "is not a positive number" in capsys.readouterr().err


def test_ports_are_1_to_65535_and_0_where_any_free_one_will_do() -> None:
    """`--http-port 0` is refused; `--ui-port 0` and `bus ui --port 0` take any free port."""
    strict, loose = port(), port(any_free=True)
    assert (strict("8080"), loose("0"), loose("65535")) == (8080, 0, 65535)
    for parse, text in ((strict, "0"), (strict, "65536"), (loose, "-1"), (loose, "http")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)

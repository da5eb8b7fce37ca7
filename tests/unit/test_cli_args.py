"""Argument types shared by the CLI (bus.cli_args), as `bus tail` and `bus dlq` use them."""

from __future__ import annotations

import argparse

import pytest

from bus.cli import main
from bus.cli_args import positive


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

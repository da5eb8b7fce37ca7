"""Argument types shared by the CLI's commands (argparse `type=` callables)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["port", "positive"]


def positive(what: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number of at least 1 (`what` names its unit in the error)."""
    unit = f" of {what}" if what else ""

    def parse(text: str) -> int:
        if not text.isdecimal() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number{unit}")
        return int(text)

    return parse


def port(*, any_free: bool = False) -> Callable[[str], int]:
    """An argparse type: a TCP port number; with `any_free`, 0 too (the system picks a free one)."""
    low = 0 if any_free else 1

    def parse(text: str) -> int:
        if not text.isdecimal() or not low <= int(text) < 65536:
            raise argparse.ArgumentTypeError(f"{text!r} is not a port ({low}-65535)")
        return int(text)

    return parse

"""Argument types shared by the CLI's commands (argparse `type=` callables)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["positive"]


def positive(what: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number of at least 1 (`what` names its unit in the error)."""
    unit = f" of {what}" if what else ""

    def parse(text: str) -> int:
        if not text.isdecimal() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number{unit}")
        return int(text)

    return parse

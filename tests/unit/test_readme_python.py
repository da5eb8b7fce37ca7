"""The Python snippets in README.md run as written: a handler and its broker-free test."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def test_the_readme_handler_and_its_test_run_as_shown() -> None:
    """All Python blocks run in order in one namespace (the test block uses the handler block)."""
    blocks = _PYTHON_BLOCK.findall(README.read_text())
    assert len(blocks) >= 2
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["final"].outcome == "dead_letter"

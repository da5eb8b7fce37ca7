"""The manifest snippets in README.md are valid manifests: the docs cannot drift from the parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bus.manifest import parse

README = Path(__file__).resolve().parents[2] / "README.md"
_YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)
SNIPPETS = _YAML_BLOCK.findall(README.read_text())


def test_the_readme_shows_manifest_snippets() -> None:
    """README.md has the example manifest and the sources and schedules snippets."""
    joined = "".join(SNIPPETS)
    assert len(SNIPPETS) >= 4
    assert all(word in joined for word in ("functions:", "sources:", "schedules:"))


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"block{i}" for i in range(len(SNIPPETS))])
def test_each_readme_manifest_snippet_parses(snippet: str) -> None:
    """Every YAML block of the README parses into a manifest (handlers are not imported)."""
    manifest = parse(yaml.safe_load(snippet), base_dir=str(README.parent / "examples" / "hello"))
    assert manifest.prefix

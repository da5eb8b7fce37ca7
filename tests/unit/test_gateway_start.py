"""The manifest a gateway starts from: the applied one when there is one, so a restart never undoes
`bus apply`; the `-f` file only while nothing usable was applied."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from bus.control import Applied, Refused
from bus.errors import ConfigError
from bus.manifest import Manifest, parse
from gateway.__main__ import _starting_manifest

FILE = parse({"sources": {"http": {"auth": "api_keys", "keys": [{"id": "alice", "secret_env": "A"}]}}})
APPLIED_DOC = {"sources": {"http": {"auth": "api_keys", "keys": [{"id": "bob", "secret_env": "B"}]}}}


def _applied(document: Mapping[str, Any], version: int = 2) -> Applied:
    return Applied(version=version, applied_at="t", digest="d", document=document, base_dir=".", rules=())


def test_the_applied_manifest_wins_over_the_file() -> None:
    """A key the applied manifest removed is not taken back from the file the gateway was started with."""
    manifest = _starting_manifest(_applied(APPLIED_DOC), FILE, "p")
    assert manifest.http_auth is not None
    assert [key.id for key in manifest.http_auth.keys] == ["bob"]


def test_the_file_is_used_only_while_nothing_was_applied() -> None:
    """Nothing applied: the file's manifest; no file either: an empty one (as before)."""
    assert _starting_manifest(None, FILE, "p") is FILE
    assert _starting_manifest(None, None, "p") == Manifest()


def test_an_unreadable_latest_record_falls_back_to_the_file_else_stops_the_gateway() -> None:
    """A Refused record (or one that no longer validates) takes the file; without one, a ConfigError
    names the fix instead of serving with no credentials."""
    newer = Refused(offset=3, reason="format 2 is not 1; upgrade bus", version=2)
    assert _starting_manifest(newer, FILE, "p") is FILE
    with pytest.raises(ConfigError, match=r"\(version 2, offset 3\) cannot be read .* or pass -f"):
        _starting_manifest(newer, None, "p")
    broken = _applied({"rules": "not a list"}, version=4)
    assert _starting_manifest(broken, FILE, "p") is FILE
    with pytest.raises(ConfigError, match="applied manifest version 4 of prefix 'p' cannot be used"):
        _starting_manifest(broken, None, "p")

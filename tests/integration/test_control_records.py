"""The applied manifest on the control topic (docs/decisions/live-rules.md): `bus apply` validates
as the `-f` readers do."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ManifestError
from bus.kafka.control_store import apply_file, read_applied
from bus.manifest import read
from tests.support import KafkaEnv, write_manifest

V1 = """
functions:
  fa: {handler: "handlers:echo"}
rules:
  - {name: r1, pattern: {type: [a]}, targets: [fa]}
"""


def test_apply_refuses_an_unquoted_date_as_the_file_readers_do_and_stores_nothing(
    kafka: KafkaEnv, tmp_path: Path
) -> None:
    """`input: {day: 2026-01-31}` is refused by `bus apply` with the message `-f` readers give."""
    prefix = kafka.prefix()
    path = write_manifest(
        tmp_path,
        prefix,
        V1.replace("targets: [fa]", "targets: [{function: fa, input: {day: 2026-01-31}}]"),
    )
    with pytest.raises(ManifestError) as by_file:
        read(path)
    with pytest.raises(ManifestError) as by_apply:
        apply_file(kafka.settings(prefix), path, prefix=None)
    assert str(by_apply.value) == str(by_file.value)
    assert "rules.r1.targets[0].input.day: must be JSON" in str(by_apply.value)
    assert read_applied(kafka.settings(prefix), prefix)[0] is None

"""`bus`'s exit statuses for what the user can fix (2) and a reader that went away (no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bus import cli


def test_a_manifest_that_cannot_be_read_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invalid YAML and a missing file are the user's to fix: exit 2, as the README says."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached: the file is read first
    bad = tmp_path / "bus.yaml"
    bad.write_text("functions: [unclosed\n")
    assert cli.main(["apply", "-f", str(bad)]) == 2
    assert cli.main(["apply", "-f", str(tmp_path / "missing.yaml")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("bus apply: ") for line in lines)


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path: Path) -> None:
    """`bus rules test ... | head -c 1`: no BrokenPipeError traceback on stderr."""
    event = tmp_path / "event.json"
    event.write_text('{"specversion": "1.0", "id": "1", "source": "s", "type": "t"}')
    command = [sys.executable, "-c", "import sys; from bus.cli import main; sys.exit(main(sys.argv[1:]))"]
    args = ["rules", "explain", "--event", f"@{event}", "-f", str(_manifest(tmp_path))]
    with subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()  # the reader is gone before the first line
        err = process.stderr.read().decode()
        process.wait(timeout=60)
    assert "Traceback" not in err, err
    assert "BrokenPipeError" not in err, err


def _manifest(folder: Path) -> Path:
    rules = "".join(f"  - {{name: r{n}, pattern: {{type: [t]}}, targets: [f]}}\n" for n in range(200))
    path = folder / "bus.yaml"
    path.write_text(f"prefix: p\nfunctions:\n  f: {{handler: h:f}}\nrules:\n{rules}")
    return path

"""`bus rules test` and `bus rules explain -f` need no broker (SPEC §5, §9); nor does `bus rules
list`'s layout, given what it read from the control topic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bus import cli_rules
from bus.cli import main
from bus.control import Applied, Refused, next_applied
from bus.settings import KafkaSettings

MANIFEST = """
prefix: p
functions:
  thumbnail: {handler: "h:t"}
  audit: {handler: "h:a"}
rules:
  - name: jpeg-uploads
    pattern: {type: [bus.object.created], data: {key: [{suffix: .jpg}], size: [{numeric: [">", 0]}]}}
    tags: {all: [prod], any: [eu, us], none: [test]}
    targets: [thumbnail]
  - name: everything
    pattern: {}
    targets: [audit, thumbnail]
  - name: pngs
    pattern: {data: {key: [{suffix: .png}]}}
    targets: [thumbnail]
"""

EVENT = {
    "specversion": "1.0",
    "id": "1",
    "source": "s3://uploads",
    "type": "bus.object.created",
    "tags": "prod,eu",
    "data": {"key": "cat.jpg", "size": 10},
}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_rules_test_prints_match_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    pattern = '{"data": {"size": [{"numeric": [">=", 10]}]}}'
    assert run(capsys, "rules", "test", "--pattern", pattern, "--event", orjson.dumps(EVENT).decode()) == (
        0,
        "match\n",
        "",
    )


def test_rules_test_prints_no_match_and_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "event.json").write_bytes(orjson.dumps(EVENT))
    code, out, _ = run(
        capsys, "rules", "test", "--pattern", '{"type": ["other"]}', "--event", f"@{tmp_path}/event.json"
    )
    assert (code, out) == (1, "no match\n")


@pytest.mark.parametrize(
    ("pattern", "event", "problem"),
    [
        ('{"type": "x"}', "{}", "--pattern: type: "),
        ("{not json", "{}", "--pattern: not valid JSON"),
        ("{}", "@/nonexistent/event.json", "--event: cannot read '/nonexistent/event.json'"),
        ("{}", "[1]", "--event: must be a JSON object"),
    ],
)
def test_rules_test_names_the_bad_argument_and_exits_2(
    capsys: pytest.CaptureFixture[str], pattern: str, event: str, problem: str
) -> None:
    code, out, err = run(capsys, "rules", "test", "--pattern", pattern, "--event", event)
    assert code == 2, "1 means no match"
    assert out == ""
    assert err.startswith(f"bus rules: {problem}"), err
    assert err.count("\n") == 1


def test_rules_explain_gives_each_rule_its_verdict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "bus.yaml").write_text(MANIFEST)
    event = {**EVENT, "tags": "prod,eu,test", "data": {"key": "cat.png", "size": 0}}
    code, out, _ = run(
        capsys, "rules", "explain", "-f", str(tmp_path / "bus.yaml"), "--event", orjson.dumps(event).decode()
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("jpeg-uploads")
    assert "no match: tags: must carry none of ['test']" in lines[0]
    assert lines[1].split() == ["everything", "match", "->", "audit,", "thumbnail"]
    assert lines[2].startswith("pngs")
    assert lines[2].endswith("match -> thumbnail")


def test_rules_explain_names_the_first_field_that_failed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "bus.yaml").write_text(MANIFEST)
    event = {**EVENT, "data": {"key": "cat.jpg", "size": 0}}
    _, out, _ = run(
        capsys, "rules", "explain", "-f", str(tmp_path / "bus.yaml"), "--event", orjson.dumps(event).decode()
    )
    first = out.splitlines()[0]
    assert "no match: data.size:" in first
    assert "did not match 0" in first


def test_rules_explain_refuses_an_event_that_is_not_an_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "bus.yaml").write_text(MANIFEST)
    code, out, err = run(capsys, "rules", "explain", "-f", str(tmp_path / "bus.yaml"), "--event", '"s"')
    assert (code, out) == (2, ""), "an input to fix"
    assert err.startswith("bus rules: --event: must be a JSON object")
    assert err.endswith("""got '"s"'\n""")


def read_as(monkeypatch: pytest.MonkeyPatch, latest: Applied | Refused | None) -> None:
    """`bus rules` reads `latest` from the control topic, whatever the prefix."""

    def read_applied(
        _settings: KafkaSettings, _prefix: str, **_: Any
    ) -> tuple[Applied | Refused | None, int]:
        return latest, 0

    monkeypatch.setattr(cli_rules, "read_applied", read_applied)


def applied_manifest_with_tags() -> Applied:
    step = next_applied(None, yaml.safe_load(MANIFEST), base_dir="/srv", now="2026-11-23T10:00:00.123456Z")
    assert step is not None
    return step[0]


def test_rules_list_keeps_every_column_under_its_header_and_shows_tag_selectors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Columns are as wide as their widest cell; TAGS shows the selector, `-` for a rule without one."""
    read_as(monkeypatch, applied_manifest_with_tags())
    code, out, _ = run(capsys, "rules", "list", "--prefix", "p")
    assert code == 0
    header, *rows = out.splitlines()[1:]
    assert header.split() == ["RULE", "VERSION", "CHANGED", "TARGETS", "TAGS", "PATTERN"]
    starts = {name: header.index(name) for name in ("CHANGED", "TARGETS", "TAGS", "PATTERN")}
    for row in rows:
        assert row[starts["CHANGED"] :].startswith("2026-11-23T10:00:00.123456Z  "), row
        assert row[starts["TARGETS"] - 2 : starts["TARGETS"]] == "  ", row
        assert row[starts["TARGETS"]] != " ", row
        assert row[starts["TAGS"] - 2 : starts["TAGS"]] == "  ", row
        assert row[starts["PATTERN"] :].startswith("{"), row
    cells = {row.split()[0]: row[starts["TAGS"] : starts["PATTERN"]].strip() for row in rows}
    assert cells == {"jpeg-uploads": "all:prod any:eu,us none:test", "everything": "-", "pngs": "-"}


def test_rules_list_shows_the_rules_of_flow_steps_with_their_targets_and_patterns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow's steps are listed as the rules they compile to, after the manifest's rules."""
    doc = yaml.safe_load(MANIFEST)
    doc["flows"] = {
        "etl": {
            "start": {"type": ["page"]},
            "steps": {
                "parse": {"function": "audit"},
                "store": {"function": "thumbnail", "after": "parse"},
                "both": {"function": "audit", "after": ["parse", "store"]},
            },
        }
    }
    step = next_applied(None, doc, base_dir="/srv", now="2026-11-23T10:00:00Z")
    assert step is not None
    read_as(monkeypatch, step[0])
    code, out, _ = run(capsys, "rules", "list", "--json", "--prefix", "p")
    assert code == 0
    rows = {row["name"]: row for row in orjson.loads(out)["rules"]}
    assert list(rows)[3:] == ["flow.etl.parse", "flow.etl.store", "flow.etl.both"]
    assert rows["flow.etl.parse"]["targets"] == ["audit"]
    assert rows["flow.etl.parse"]["pattern"] == {"type": ["page"]}
    assert rows["flow.etl.store"]["targets"] == ["thumbnail"]
    assert rows["flow.etl.store"]["pattern"] == {
        "type": ["bus.function.result"],
        "busflow": ["etl"],
        "busflowstep": ["parse"],
    }
    assert rows["flow.etl.both"]["targets"] == ["join:etl.both"]
    code, out, _ = run(capsys, "rules", "list", "--prefix", "p")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[2:]][3:] == list(rows)[3:]


def test_rules_list_says_the_latest_record_cannot_be_read_rather_than_show_an_older_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable latest record is an error in one line, in text and in JSON alike."""
    read_as(monkeypatch, Refused(offset=5, reason="format 2 is not 1; upgrade bus", version=3))
    for extra in ([], ["--json"]):
        code, out, err = run(capsys, "rules", "list", "--prefix", "p", *extra)
        assert (code, out) == (2, "")
        assert err == (
            "bus rules: the latest manifest applied for prefix 'p' (version 3, offset 5) cannot be read "
            "(format 2 is not 1; upgrade bus); apply a valid one with `bus apply -f bus.yaml`\n"
        )


def test_rules_explain_without_a_file_says_the_latest_record_cannot_be_read(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_as(monkeypatch, Refused(offset=5, reason="is not an applied manifest", version=None))
    code, out, err = run(capsys, "rules", "explain", "--prefix", "p", "--event", orjson.dumps(EVENT).decode())
    assert (code, out) == (2, "")
    assert "the latest manifest applied for prefix 'p' (offset 5) cannot be read" in err
    assert err.count("\n") == 1

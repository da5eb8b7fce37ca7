"""Applied manifests: versions, per-rule versions, self-contained documents, the record format."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from bus.control import (
    Applied,
    Refused,
    checked_document,
    decode,
    encode,
    newly_followed,
    next_applied,
    next_starts,
    read_record,
    self_contained,
)
from bus.errors import ManifestError
from bus.manifest import parse, read, read_document

ORDER = {"type": "record", "name": "Order", "fields": [{"name": "order", "type": "string"}]}


def document(**rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "prefix": "p",
        "functions": {"a": {"handler": "h:a"}, "b": {"handler": "h:b"}},
        "rules": [{"name": name, **spec} for name, spec in rules.items()],
    }


def apply(previous: Applied | None, doc: dict[str, Any], now: str = "2026-11-23T10:00:00Z") -> Applied:
    step = next_applied(previous, doc, base_dir="/srv", now=now)
    assert step is not None
    return step[0]


def test_the_first_apply_is_version_1_and_every_rule_starts_there() -> None:
    applied = apply(None, document(r1={"pattern": {"type": ["x"]}, "targets": ["a"]}))
    assert applied.version == 1
    assert [(r.name, r.version, r.changed_at) for r in applied.rules] == [("r1", 1, "2026-11-23T10:00:00Z")]


def test_an_unchanged_manifest_stores_nothing() -> None:
    doc = document(r1={"pattern": {"type": ["x"]}, "targets": ["a"]})
    assert next_applied(apply(None, doc), dict(doc), base_dir="/srv", now="later") is None


def test_each_rule_keeps_the_version_of_its_last_change() -> None:
    v1 = apply(
        None,
        document(
            keep={"pattern": {"type": ["x"]}, "targets": ["a"]},
            edit={"pattern": {"type": ["y"]}, "targets": ["a"]},
            drop={"pattern": {"type": ["z"]}, "targets": ["b"]},
        ),
    )
    step = next_applied(
        v1,
        document(
            keep={"pattern": {"type": ["x"]}, "targets": ["a"]},
            edit={"pattern": {"type": ["y", "w"]}, "targets": ["a"]},
            new={"pattern": {"source": ["s"]}, "targets": ["b"]},
        ),
        base_dir="/srv",
        now="2026-11-24T00:00:00Z",
    )
    assert step is not None
    v2, change = step
    assert v2.version == 2
    assert {r.name: r.version for r in v2.rules} == {"keep": 1, "edit": 2, "new": 2}
    assert (change.added, change.changed, change.removed) == (("new",), ("edit",), ("drop",))
    assert change.describe() == "+new ~edit -drop"


def test_flow_steps_are_versioned_as_rules_by_what_they_compile_to() -> None:
    """Each step is the rule `flow.<flow>.<step>`: added, changed (its condition, or the start
    pattern of a start step) and removed like any rule, the others keeping their version."""
    etl = {"start": {"type": ["page"]}, "steps": {"p": {"function": "a"}}}
    v1 = apply(None, {**document(r1={"pattern": {"type": ["x"]}, "targets": ["a"]}), "flows": {"etl": etl}})
    assert [(r.name, r.version) for r in v1.rules] == [("r1", 1), ("flow.etl.p", 1)]
    steps: dict[str, dict[str, Any]] = {
        "p": {"function": "a"},
        "s": {"function": "b", "after": "p", "when": {"data": {"ok": [True]}}},
    }
    doc = {
        **document(r1={"pattern": {"type": ["x"]}, "targets": ["a"]}),
        "flows": {"etl": {**etl, "steps": steps}},
    }
    step = next_applied(v1, doc, base_dir="/srv", now="2026-11-24T00:00:00Z")
    assert step is not None
    v2, change = step
    assert {r.name: r.version for r in v2.rules} == {"r1": 1, "flow.etl.p": 1, "flow.etl.s": 2}
    assert change.describe() == "+flow.etl.s"
    steps["s"]["when"] = {"data": {"ok": [False]}}
    moved = {**doc, "flows": {"etl": {"start": {"type": ["page", "site"]}, "steps": steps}}}
    step = next_applied(v2, moved, base_dir="/srv", now="2026-11-25T00:00:00Z")
    assert step is not None
    assert step[1].describe() == "~flow.etl.p ~flow.etl.s"
    step = next_applied(
        step[0], document(r1={"pattern": {"type": ["x"]}, "targets": ["a"]}), base_dir="/srv", now="z"
    )
    assert step is not None
    assert step[1].describe() == "-flow.etl.p -flow.etl.s"


def test_the_record_reads_back_as_written() -> None:
    applied = apply(
        None, document(r1={"pattern": {"data": {"n": [{"numeric": [">", 1]}]}}, "targets": ["a"]})
    )
    again = decode(encode(applied))
    assert again == applied
    assert again.manifest().rules[0].targets == ("a",)
    assert again.manifest(prefix="other").prefix == "other"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"not json", "is not an applied manifest"),
        (b"[]", "is not an applied manifest"),
        (orjson.dumps({"format": 99}), "upgrade bus"),
        (orjson.dumps({"format": 1, "version": 1}), "is not an applied manifest"),
    ],
)
def test_a_record_it_cannot_read_is_refused_with_the_reason(value: bytes, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        decode(value)


def test_a_self_contained_document_inlines_schemas_and_reads_the_same_anywhere(tmp_path: Path) -> None:
    (tmp_path / "order.avsc").write_bytes(orjson.dumps(ORDER))
    doc = {
        "prefix": "p",
        "schemas": {"order.placed": "order.avsc"},
        "schedules": [{"name": "once", "at": dt.datetime(2026, 12, 1, 9, 0), "event": {"type": "t"}}],
    }
    stored = self_contained(doc, tmp_path)
    assert stored["schemas"]["order.placed"] == ORDER
    assert stored["schedules"][0]["at"] == "2026-12-01T09:00:00"
    applied = apply(None, stored)
    manifest = decode(encode(applied)).manifest()
    assert manifest.schemas["order.placed"] == ORDER
    assert manifest.schedules[0].name == "once"


def test_a_missing_schema_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"schemas\.order\.placed.*does not exist"):
        self_contained({"schemas": {"order.placed": "missing.avsc"}}, tmp_path)


@pytest.mark.parametrize("name", ["a,b", "has space", "x" * 65, "ümlaut"])
def test_rule_names_can_be_listed_in_the_matchedrules_extension(name: str) -> None:
    with pytest.raises(ManifestError, match=r"rules\[0\]\.name.*1-64 characters"):
        decode(encode(apply(None, document(**{name: {"pattern": {}, "targets": ["a"]}})))).manifest()


def test_a_yaml_value_json_cannot_carry_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="holds a value JSON cannot carry"):
        self_contained({"prefix": "p", "sources": {"x": 10**30}}, tmp_path)


@pytest.mark.parametrize(
    ("value", "version"),
    [
        (orjson.dumps({"format": 2, "version": 7, "document": {}}), 7),
        (orjson.dumps({"format": 2, "version": "7"}), None),
        (orjson.dumps({"format": 2, "version": True}), None),
        (orjson.dumps([1]), None),
        (b"not json", None),
    ],
)
def test_a_record_it_cannot_read_is_refused_with_the_version_it_states(
    value: bytes, version: int | None
) -> None:
    """read_record never raises: an unreadable record is Refused, with its version when it is a number."""
    refused = read_record(value, offset=12)
    assert isinstance(refused, Refused)
    assert (refused.offset, refused.version) == (12, version)
    assert refused.reason


def test_a_readable_record_reads_as_the_applied_manifest() -> None:
    applied = apply(None, document(r1={"pattern": {"type": ["x"]}, "targets": ["a"]}))
    assert read_record(encode(applied), offset=0) == applied


def test_the_version_after_a_refused_record_is_above_its_own_and_every_rule_is_new() -> None:
    """After an unreadable record stating version 7, the next is 8: no version number is used twice."""
    doc = document(r1={"pattern": {"type": ["x"]}, "targets": ["a"]})
    step = next_applied(Refused(offset=3, reason="r", version=7), doc, base_dir="/srv", now="n")
    assert step is not None
    applied, change = step
    assert applied.version == 8
    assert [(r.name, r.version) for r in applied.rules] == [("r1", 8)]
    assert change.describe() == "+r1"


def test_a_refused_record_stating_no_version_refuses_the_next_version() -> None:
    doc = document(r1={"pattern": {"type": ["x"]}, "targets": ["a"]})
    with pytest.raises(ManifestError, match=r"offset 3, .*states no version"):
        next_applied(Refused(offset=3, reason="r", version=None), doc, base_dir="/srv", now="n")


def test_apply_refuses_an_unquoted_date_in_a_constant_input_as_the_file_readers_do(tmp_path: Path) -> None:
    """`bus apply` validates the YAML as written, so it refuses what `-f` readers refuse."""
    path = tmp_path / "bus.yaml"
    path.write_text(
        "functions:\n  a: {handler: 'handlers:h'}\n"
        "rules:\n  - {name: r, pattern: {type: [x]}, targets: [{function: a, input: {day: 2026-01-31}}]}\n"
    )
    with pytest.raises(ManifestError) as by_file:
        read(path)
    with pytest.raises(ManifestError) as by_apply:
        checked_document(read_document(path), tmp_path, prefix=None)
    assert str(by_apply.value) == str(by_file.value)
    assert by_apply.value.path == "rules.r.targets[0].input.day"
    assert "got date; quote it" in by_apply.value.reason


def test_apply_turns_a_timestamp_the_file_readers_take_into_its_json_text(tmp_path: Path) -> None:
    """Values JSON lacks that validation allows (an unquoted `at:`) are stored as their text."""
    path = tmp_path / "bus.yaml"
    path.write_text("schedules:\n  - {name: once, at: 2026-12-01T09:00:00, event: {type: t}}\n")
    stored, checked = checked_document(read_document(path), tmp_path, prefix="p")
    assert stored["schedules"][0]["at"] == "2026-12-01T09:00:00"
    assert checked.prefix == "p"
    assert checked.schedules == read(path, prefix="p").schedules


def etl(*steps: str, **destinations: str) -> dict[str, Any]:
    """A flow etl: parse on `page.fetched`, then each of `steps` (`name:after`)."""
    functions: dict[str, Any] = {name: {"handler": f"h:{name}"} for name in ("parse", "stats", "store")}
    for name, topic in destinations.items():
        functions[name]["destinations"] = {"on_success": topic}
    flow: dict[str, Any] = {"parse": {"function": "parse"}}
    for step in steps:
        name, after = step.split(":")
        flow[name] = {"function": name, "after": after}
    return {
        "prefix": "p",
        "functions": functions,
        "flows": {"etl": {"start": {"type": ["page.fetched"]}, "steps": flow}},
    }


def applied_with(previous: Applied | None, doc: dict[str, Any], ends: dict[tuple[str, int], int]) -> Applied:
    """`doc` applied after `previous` as `bus apply` does, the topics it newly follows ending at `ends`."""
    manifest = parse(doc, base_dir="/srv")
    new = newly_followed(previous, manifest)
    step = next_applied(
        previous,
        doc,
        base_dir="/srv",
        now="n",
        starts=next_starts(previous, manifest, {tp: o for tp, o in ends.items() if tp[0] in new}),
    )
    assert step is not None
    return step[0]


def test_a_results_topic_is_newly_followed_when_no_step_followed_its_function_before() -> None:
    v1 = applied_with(None, etl(), {})
    v2 = etl("store:parse")
    assert newly_followed(v1, parse(v2, base_dir="/srv")) == {"p.fn.parse.results"}
    assert newly_followed(applied_with(v1, v2, {}), parse(etl("store:parse", "stats:parse"))) == set()
    assert newly_followed(None, parse(v2)) == {"p.fn.parse.results"}
    refused = Refused(offset=1, reason="r", version=3)
    assert newly_followed(refused, parse(v2)) == set(), "unknown history: no start recorded anew"


def test_a_step_after_a_function_with_its_own_destination_follows_that_topic() -> None:
    v1 = applied_with(None, etl("store:parse", parse="custom.results"), {})
    assert v1.starts == {}  # nothing ended anywhere: read from the start
    moved = parse(etl("store:parse", parse="other.results"))
    assert newly_followed(v1, moved) == {"other.results"}


def test_the_ends_of_a_newly_followed_topic_are_recorded_and_carried_while_it_is_followed() -> None:
    ends = {("p.fn.parse.results", 0): 5, ("p.fn.parse.results", 1): 9, ("p.fn.store.results", 0): 2}
    v1 = applied_with(None, etl(), ends)
    assert v1.starts == {}
    v2 = applied_with(v1, etl("store:parse"), ends)
    assert v2.starts == {"p.fn.parse.results": {0: 5, 1: 9}}
    later = {("p.fn.parse.results", 0): 50, ("p.fn.parse.results", 1): 90, ("p.fn.store.results", 0): 7}
    v3 = applied_with(v2, etl("store:parse", "stats:store"), later)
    assert v3.starts == {"p.fn.parse.results": {0: 5, 1: 9}, "p.fn.store.results": {0: 7}}
    assert v3.start_offsets() == {
        ("p.fn.parse.results", 0): 5,
        ("p.fn.parse.results", 1): 9,
        ("p.fn.store.results", 0): 7,
    }


def test_a_follow_removed_and_added_again_gets_the_ends_of_the_later_apply() -> None:
    first = {("p.fn.parse.results", 0): 5}
    v2 = applied_with(applied_with(None, etl(), first), etl("store:parse"), first)
    v3 = applied_with(v2, etl(), {("p.fn.parse.results", 0): 20})
    assert v3.starts == {}
    v4 = applied_with(v3, etl("store:parse"), {("p.fn.parse.results", 0): 30})
    assert v4.starts == {"p.fn.parse.results": {0: 30}}


def test_the_start_offsets_read_back_as_written() -> None:
    v1 = applied_with(None, etl("store:parse"), {("p.fn.parse.results", 0): 5, ("p.fn.parse.results", 2): 1})
    again = decode(encode(v1))
    assert again == v1
    assert again.starts == {"p.fn.parse.results": {0: 5, 2: 1}}
    assert orjson.loads(encode(v1))["starts"] == {"p.fn.parse.results": {"0": 5, "2": 1}}


def test_a_record_from_before_start_offsets_reads_and_the_next_apply_records_only_new_ones() -> None:
    """A record without `starts` (an older bus) is read; topics it followed keep today's start."""
    old = orjson.loads(encode(applied_with(None, etl("store:parse"), {})))
    del old["starts"]
    before = decode(orjson.dumps(old))
    assert before.starts == {}
    assert before.start_offsets() == {}
    ends = {("p.fn.parse.results", 0): 8, ("p.fn.store.results", 0): 3}
    after = applied_with(before, etl("store:parse", "stats:store"), ends)
    assert after.starts == {"p.fn.store.results": {0: 3}}

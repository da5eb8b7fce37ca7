"""The bus.yaml manifest: parsing, defaults and errors that name the path (bus.manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bus.errors import ManifestError
from bus.manifest import Destinations, Manifest, RetryPolicy, Scaling, parse, parse_duration, read

SPEC_EXAMPLE = Path(__file__).parent.parent / "fixtures" / "manifests" / "spec_example.yaml"


def with_function(**fields: Any) -> dict[str, Any]:
    """A manifest with one function `f` (handler `handlers:greet`) and `fields` merged into it."""
    return {"functions": {"f": {"handler": "handlers:greet", **fields}}}


def error_of(document: Any) -> ManifestError:
    """The ManifestError that parsing `document` raises."""
    with pytest.raises(ManifestError) as caught:
        parse(document)
    return caught.value


# --- the SPEC §3 example ---------------------------------------------------------------------


def test_spec_example_reads_with_every_section() -> None:
    """The SPEC §3 example manifest reads into the values it spells out."""
    manifest = read(SPEC_EXAMPLE)
    assert manifest.prefix == "bus"
    assert manifest.schemas == {"order.placed": "schemas/order_placed.avsc"}
    assert manifest.base_dir == str(SPEC_EXAMPLE.parent.resolve())
    thumbnail = manifest.functions["thumbnail"]
    assert thumbnail.name == "thumbnail"
    assert thumbnail.handler == "examples.images:make_thumbnail"
    assert (thumbnail.partitions, thumbnail.ordering, thumbnail.concurrency) == (8, "key", 16)
    assert thumbnail.timeout == 30.0
    assert thumbnail.retry == RetryPolicy(attempts=3, backoff=(1.0, 10.0, 60.0))
    assert thumbnail.destinations == Destinations(
        on_success="bus.fn.thumbnail.results", on_failure="bus.fn.thumbnail.errors"
    )
    assert thumbnail.scaling == Scaling(
        min=0, max=8, lag_threshold=100, activation_lag_threshold=0, cooldown=60.0
    )


def test_spec_example_rule_has_its_pattern_tags_and_targets() -> None:
    """The example rule routes to thumbnail with its tag selector, and its pattern matches."""
    [rule] = read(SPEC_EXAMPLE).rules
    assert rule.name == "jpeg-uploads"
    assert rule.targets == ("thumbnail",)
    assert rule.tags.all == {"prod"}
    assert rule.tags.any == {"eu", "us"}
    assert rule.tags.none == {"test"}
    assert rule.pattern.matches({"type": "bus.object.created", "data": {"key": "photos/cat.jpg"}})
    assert not rule.pattern.matches({"type": "bus.object.created", "data": {"key": "notes.txt"}})


def test_spec_example_schedule_reads_into_a_schedule() -> None:
    """The SPEC §3 schedule is a Berlin cron timer publishing report.requested with its payload."""
    [schedule] = read(SPEC_EXAMPLE).schedules
    assert (schedule.name, schedule.kind, schedule.expression) == ("nightly-report", "cron", "0 2 * * *")
    assert schedule.timezone == "Europe/Berlin"
    assert schedule.event.type == "report.requested"
    assert schedule.event.data == {"kind": "daily"}
    assert schedule.catch_up == "latest"


def test_spec_example_keeps_sources_as_written() -> None:
    """Sources are kept as written until they get a model of their own."""
    manifest = read(SPEC_EXAMPLE)
    assert manifest.sources == {
        "http": {"auth": "api_keys"},
        "object_stores": [{"name": "uploads", "provider": "s3", "secret_env": "UPLOADS_WEBHOOK_SECRET"}],
    }


# --- defaults --------------------------------------------------------------------------------


def test_empty_manifest_is_the_default_manifest() -> None:
    """An empty document is a manifest with prefix `bus` and nothing declared."""
    assert parse({}) == Manifest()
    assert parse({}).prefix == "bus"


def test_empty_file_reads_as_the_default_manifest(tmp_path: Path) -> None:
    """An empty bus.yaml is valid and declares nothing."""
    (tmp_path / "bus.yaml").write_text("", encoding="utf-8")
    manifest = read(tmp_path / "bus.yaml")
    assert (manifest.functions, manifest.rules) == ({}, ())
    assert manifest.base_dir == str(tmp_path.resolve())


def test_function_defaults() -> None:
    """A function with only a handler gets the documented defaults."""
    function = parse(with_function()).functions["f"]
    assert (function.partitions, function.ordering, function.concurrency) == (3, "partition", 1)
    assert function.timeout == 30.0
    assert function.retry == RetryPolicy()
    assert function.scaling == Scaling()
    assert function.destinations == Destinations(on_success="bus.fn.f.results", on_failure="bus.fn.f.errors")


def test_default_destinations_follow_the_prefix() -> None:
    """Default destination topics use the manifest's prefix."""
    manifest = parse({"prefix": "acme", **with_function()})
    assert manifest.functions["f"].destinations == Destinations(
        on_success="acme.fn.f.results", on_failure="acme.fn.f.errors"
    )


def test_rule_without_pattern_or_tags_matches_everything() -> None:
    """A rule that names only targets matches every event."""
    [rule] = parse({**with_function(), "rules": [{"name": "all", "targets": ["f"]}]}).rules
    assert rule.pattern.matches({"type": "anything"})
    assert rule.tags.accepts(frozenset())


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("1m", 60.0),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (" 30s ", 30.0),
        (45, 45.0),
        (0, 0.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_reads_units_and_plain_seconds(value: object, seconds: float) -> None:
    """Durations are a number with ms, s, m or h, or a plain number of seconds."""
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize("value", ["30", "-1s", -1, "1d", "s", "", "1 s", "30S", "1h30m", True, None, [1]])
def test_parse_duration_refuses_anything_else_naming_the_path(value: object) -> None:
    """Unitless strings, negative values, unknown units and non-numbers are refused naming the path."""
    with pytest.raises(ManifestError) as caught:
        parse_duration(value, "functions.f.timeout")
    assert caught.value.path == "functions.f.timeout"
    assert "500ms, 30s, 1m or 2h" in caught.value.reason


def test_duration_errors_in_a_manifest_name_their_place() -> None:
    """A bad duration inside a list names its index."""
    error = error_of(with_function(retry={"backoff": ["1s", "soon"]}))
    assert error.path == "functions.f.retry.backoff[1]"


# --- destinations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "topic"),
    [
        ("default", "bus.fn.f.results"),
        ("none", None),
        (None, None),
        ("audit.results", "audit.results"),
        ("Team_A-results.v2", "Team_A-results.v2"),
    ],
)
def test_destination_is_default_none_or_a_topic(value: str | None, topic: str | None) -> None:
    """A destination is `default` (the function's own topic), `none`/null (nowhere) or a topic."""
    function = parse(with_function(destinations={"on_success": value})).functions["f"]
    assert function.destinations.on_success == topic
    assert function.destinations.on_failure == "bus.fn.f.errors"


@pytest.mark.parametrize("value", ["has space", "", ".", "..", "x" * 250, "topic\n", 5, ["a"]])
def test_destination_refuses_what_cannot_be_a_topic(value: object) -> None:
    """A destination that is not a valid Kafka topic name is refused naming the path."""
    error = error_of(with_function(destinations={"on_failure": value}))
    assert error.path == "functions.f.destinations.on_failure"


@pytest.mark.parametrize(("value", "mib"), [("512Mi", 512), ("1Gi", 1024), ("1.5Gi", 1536), (256, 256)])
def test_memory_takes_kubernetes_units(value: object, mib: int) -> None:
    assert parse(with_function(memory=value)).functions["f"].memory == mib


@pytest.mark.parametrize("value", ["512MB", "32Mi", 10, True, "lots"])
def test_memory_refuses_other_units_and_tiny_limits(value: object) -> None:
    error = error_of(with_function(memory=value))
    assert error.path == "functions.f.memory"
    assert "512Mi" in str(error)


def test_retry_policy_needs_one_topic_per_backoff_step_it_uses() -> None:
    policy = parse(with_function(retry={"attempts": 5, "backoff": ["1s", "10s"]})).functions["f"].retry
    assert policy.levels == 2
    assert [policy.step(n) for n in (1, 2, 3, 4)] == [(1, 1.0), (2, 10.0), (2, 10.0), (2, 10.0)]
    assert parse(with_function(retry={"attempts": 1})).functions["f"].retry.levels == 0


# --- unknown keys and structure --------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"functons": {}}, "manifest.functons"),
        (with_function(mem="1Gi"), "functions.f.mem"),
        (with_function(retry={"jitter": True}), "functions.f.retry.jitter"),
        (with_function(scaling={"maximum": 3}), "functions.f.scaling.maximum"),
        (with_function(destinations={"on_error": "none"}), "functions.f.destinations.on_error"),
        ({**with_function(), "rules": [{"name": "r", "targets": ["f"], "target": "f"}]}, "rules.r.target"),
        (
            {**with_function(), "rules": [{"name": "r", "targets": ["f"], "tags": {"some": []}}]},
            "rules.r.tags.some",
        ),
    ],
)
def test_unknown_keys_are_refused_naming_the_path(document: dict[str, Any], path: str) -> None:
    """A misspelt or unknown key is an error at its path, listing the known keys."""
    error = error_of(document)
    assert error.path == path
    assert "unknown key (known: " in error.reason


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ([], "manifest"),
        ("prefix: bus", "manifest"),
        ({"functions": []}, "functions"),
        ({"functions": {"f": "handlers:greet"}}, "functions.f"),
        ({"rules": {}}, "rules"),
        ({"rules": ["r"]}, "rules[0]"),
        ({"schedules": ["nightly"]}, "schedules[0]"),
        ({"sources": []}, "sources"),
        (with_function(retry=[3]), "functions.f.retry"),
    ],
)
def test_wrong_shapes_are_refused_naming_the_path(document: Any, path: str) -> None:
    """A list where a mapping belongs (or the reverse) is an error at its path."""
    assert error_of(document).path == path


# --- functions -------------------------------------------------------------------------------


@pytest.mark.parametrize("handler", [None, 5, "", "nocolon", "module:", ":callable", ":"])
def test_handler_must_be_module_colon_callable(handler: object) -> None:
    """A handler that is not `module:callable` is refused with an example of the right form."""
    document = {"functions": {"f": {} if handler is None else {"handler": handler}}}
    error = error_of(document)
    assert error.path == "functions.f.handler"
    assert "module:callable" in error.reason


@pytest.mark.parametrize("ordering", ["none", "partition", "key"])
def test_ordering_accepts_its_three_modes(ordering: str) -> None:
    """Ordering is none, partition or key."""
    assert parse(with_function(ordering=ordering)).functions["f"].ordering == ordering


def test_ordering_refuses_other_values() -> None:
    """Any other ordering is refused naming the path and the choices."""
    error = error_of(with_function(ordering="global"))
    assert error.path == "functions.f.ordering"
    assert "none, partition or key" in error.reason


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"partitions": 0}, "functions.f.partitions"),
        ({"partitions": "3"}, "functions.f.partitions"),
        ({"partitions": True}, "functions.f.partitions"),
        ({"partitions": 2.0}, "functions.f.partitions"),
        ({"concurrency": 0}, "functions.f.concurrency"),
        ({"retry": {"attempts": 0}}, "functions.f.retry.attempts"),
        ({"retry": {"backoff": []}}, "functions.f.retry.backoff"),
        ({"retry": {"backoff": "1s"}}, "functions.f.retry.backoff"),
        ({"scaling": {"min": -1}}, "functions.f.scaling.min"),
        ({"scaling": {"max": 0}}, "functions.f.scaling.max"),
        ({"scaling": {"lag_threshold": 0}}, "functions.f.scaling.lag_threshold"),
        ({"scaling": {"activation_lag_threshold": -1}}, "functions.f.scaling.activation_lag_threshold"),
        ({"scaling": {"cooldown": "forever"}}, "functions.f.scaling.cooldown"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_path(fields: dict[str, Any], path: str) -> None:
    """Counts must be integers at or above their minimum; the error names the field."""
    assert error_of(with_function(**fields)).path == path


def test_scaling_min_above_max_is_refused() -> None:
    """min > max is refused at scaling.min, quoting both values."""
    error = error_of(with_function(scaling={"min": 5, "max": 2}))
    assert error.path == "functions.f.scaling.min"
    assert "min (5) must not exceed max (2)" in error.reason


def test_scaling_min_equal_to_max_is_fixed_size() -> None:
    """min == max is a fixed-size worker group."""
    assert parse(with_function(scaling={"min": 3, "max": 3})).functions["f"].scaling.min == 3


def test_retry_backoff_reads_durations() -> None:
    """retry.backoff is a list of durations in seconds."""
    retry = parse(with_function(retry={"attempts": 5, "backoff": ["500ms", 2, "1m"]})).functions["f"].retry
    assert retry == RetryPolicy(attempts=5, backoff=(0.5, 2.0, 60.0))


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["a.b", "", "x" * 101, "with space", "bus\n", None, 5])
def test_prefix_must_be_one_topic_segment(prefix: object) -> None:
    """The prefix must be a string of letters, digits, '_' or '-' (no dots), 1-100 long."""
    assert error_of({"prefix": prefix}).path == "prefix"


@pytest.mark.parametrize("name", ["my.fn", "with space", "", "x" * 101])
def test_function_name_must_be_one_topic_segment(name: str) -> None:
    """A function name becomes part of topic names, so the same rule applies; the path names it."""
    error = error_of({"functions": {name: {"handler": "handlers:greet"}}})
    assert error.path == f"functions.{name}"


def test_function_name_must_be_a_string() -> None:
    """A YAML key like `123:` is an int, which is refused rather than silently converted."""
    assert error_of({"functions": {123: {"handler": "handlers:greet"}}}).path == "functions.123"


# --- rules -----------------------------------------------------------------------------------


def test_rule_targets_must_be_declared_functions() -> None:
    """A target that is not a declared function is refused, listing the functions there are."""
    error = error_of({**with_function(), "rules": [{"name": "r", "targets": ["f", "thumbnial"]}]})
    assert error.path == "rules.r.targets[1]"
    assert "unknown function 'thumbnial'" in error.reason
    assert "(functions: f)" in error.reason


def test_rule_targets_with_no_functions_say_none_are_declared() -> None:
    """With no functions at all, the message says so."""
    error = error_of({"rules": [{"name": "r", "targets": ["f"]}]})
    assert "none declared" in error.reason


@pytest.mark.parametrize(
    ("targets", "path"),
    [
        ([], "rules.r.targets"),
        (None, "rules.r.targets"),
        ("f", "rules.r.targets"),
        ([{"name": "f"}], "rules.r.targets[0].name"),
        ([["f"]], "rules.r.targets[0]"),
        ([5], "rules.r.targets[0]"),
    ],
)
def test_rule_targets_must_be_a_non_empty_list_of_names(targets: object, path: str) -> None:
    """targets must list at least one function name; a bad entry is named by its index."""
    rule: dict[str, Any] = {"name": "r"} if targets is None else {"name": "r", "targets": targets}
    assert error_of({**with_function(), "rules": [rule]}).path == path


def test_duplicate_rule_names_are_refused() -> None:
    """Rule names are unique, so `bus rules explain` can name each one."""
    rules = [{"name": "r", "targets": ["f"]}, {"name": "r", "targets": ["f"]}]
    error = error_of({**with_function(), "rules": rules})
    assert error.path == "rules.r"
    assert "unique" in error.reason


@pytest.mark.parametrize(
    "rule", [{"targets": ["f"]}, {"name": "", "targets": ["f"]}, {"name": 5, "targets": ["f"]}]
)
def test_every_rule_needs_a_name(rule: dict[str, Any]) -> None:
    """A rule without a string name is refused by its index."""
    assert error_of({**with_function(), "rules": [rule]}).path == "rules[0].name"


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        ({"data": {"key": [{"suffix": 5}]}}, "data.key: suffix takes a string, got 5"),
        ({"type": "order.placed"}, "type: match values must be in an array"),
        ("type", "must be a JSON object"),
    ],
)
def test_invalid_rule_pattern_names_the_rule_and_the_pattern_path(pattern: object, detail: str) -> None:
    """A pattern error is reported at rules.<name>.pattern with the pattern's own path inside."""
    error = error_of({**with_function(), "rules": [{"name": "r", "pattern": pattern, "targets": ["f"]}]})
    assert error.path == "rules.r.pattern"
    assert detail in error.reason


def test_rule_tags_must_be_lists() -> None:
    """Each tag selector is a list of tags."""
    rule = {"name": "r", "targets": ["f"], "tags": {"all": "prod"}}
    assert error_of({**with_function(), "rules": [rule]}).path == "rules.r.tags.all"


@pytest.mark.parametrize(
    ("tag", "detail"),
    [
        (True, "must be a string, got True; quote it"),  # YAML's `on`
        (2024, "must be a string, got 2024; quote it"),
        ("", "can never equal a tag"),
        ("prod, eu", "can never equal a tag"),
        (" prod", "can never equal a tag"),
    ],
)
def test_a_tag_no_event_could_carry_is_refused_naming_its_entry(tag: object, detail: str) -> None:
    """Event tags are split on commas and trimmed: a selector entry that no tag can equal is a mistake."""
    rule = {"name": "r", "targets": ["f"], "tags": {"none": ["test", tag]}}
    error = error_of({**with_function(), "rules": [rule]})
    assert error.path == "rules.r.tags.none[1]"
    assert detail in error.reason


# --- reading files ---------------------------------------------------------------------------


def test_read_names_a_missing_file(tmp_path: Path) -> None:
    """Reading a file that does not exist names the file and says it cannot be read."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ManifestError) as caught:
        read(missing)
    assert caught.value.path == str(missing)
    assert "cannot be read" in caught.value.reason


def test_read_refuses_invalid_yaml(tmp_path: Path) -> None:
    """A file that is not YAML is refused naming the file."""
    file = tmp_path / "bus.yaml"
    file.write_text("functions: {hello: [unclosed\n", encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        read(file)
    assert caught.value.path == str(file)
    assert "not valid YAML" in caught.value.reason


def test_read_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    """A binary or non-UTF-8 file is a ManifestError, not a crash."""
    file = tmp_path / "bus.yaml"
    file.write_bytes(b"prefix: \xff\xfe\n")
    with pytest.raises(ManifestError) as caught:
        read(file)
    assert caught.value.path == str(file)
    assert "UTF-8" in caught.value.reason


def test_read_validates_what_it_reads(tmp_path: Path) -> None:
    """read() applies the same validation as parse()."""
    file = tmp_path / "bus.yaml"
    file.write_text("functions:\n  hello: {handler: nocolon}\n", encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        read(file)
    assert caught.value.path == "functions.hello.handler"


# --- scaling: stabilization and persistent lag (bus.scaling) -------------------------------------


def test_scaling_stabilization_and_persistent_lag_have_defaults() -> None:
    """stabilization defaults to 30 s and exclude_persistent_lag to false."""
    scaling = parse(with_function()).functions["f"].scaling
    assert (scaling.stabilization, scaling.exclude_persistent_lag) == (30.0, False)


def test_scaling_reads_stabilization_and_persistent_lag() -> None:
    """stabilization is a duration; exclude_persistent_lag a boolean."""
    spec = {"stabilization": "10s", "exclude_persistent_lag": True}
    scaling = parse(with_function(scaling=spec)).functions["f"].scaling
    assert (scaling.stabilization, scaling.exclude_persistent_lag) == (10.0, True)


@pytest.mark.parametrize(
    ("spec", "path", "reason"),
    [
        ({"stabilization": "soon"}, "functions.f.scaling.stabilization", "is not a duration"),
        ({"stabilization": -1}, "functions.f.scaling.stabilization", "is not a duration"),
        ({"exclude_persistent_lag": "yes"}, "functions.f.scaling.exclude_persistent_lag", "true or false"),
        ({"exclude_persistent_lag": 1}, "functions.f.scaling.exclude_persistent_lag", "true or false"),
    ],
)
def test_scaling_refuses_bad_stabilization_or_persistent_lag(
    spec: dict[str, Any], path: str, reason: str
) -> None:
    """A bad stabilization or exclude_persistent_lag is refused naming its path."""
    error = error_of(with_function(scaling=spec))
    assert error.path == path
    assert reason in error.reason


def test_scaling_unknown_key_lists_the_new_keys() -> None:
    """The unknown-key error lists stabilization and exclude_persistent_lag among the known keys."""
    error = error_of(with_function(scaling={"stabilisation": "10s"}))
    assert error.path == "functions.f.scaling.stabilisation"
    assert "exclude_persistent_lag" in error.reason
    assert "stabilization" in error.reason

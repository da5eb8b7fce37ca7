"""Per-target input: EventBridge's input transformer and constant input (bus.input_transform).

The examples are those of AWS's "Amazon EventBridge input transformation" page and the
InputTransformer API reference, with the EC2 event turned into a CloudEvent (`detail` -> `data`).
"""

from __future__ import annotations

import datetime
import json
from types import MappingProxyType
from typing import Any

import orjson
import pytest
import yaml

from bus.errors import ManifestError
from bus.input_transform import (
    MAX_INPUT_BYTES,
    MAX_PATHS,
    MAX_TEMPLATE_BYTES,
    InputTransform,
    compile_constant,
    compile_transformer,
)
from bus.manifest import parse
from bus.routing import Rule

AT = "rules.r1.targets[1].input_transformer"

EC2_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "source": "aws.ec2",
    "type": "EC2 Instance State-change Notification",
    "time": "2015-11-11T21:29:54Z",
    "datacontenttype": "application/json",
    "data": {
        "instance-id": "i-0123456789",
        "state": "RUNNING",
        "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
    },
}
EC2_PATHS = {
    "timestamp": "$.time",
    "instance": "$.data.instance-id",
    "state": "$.data.state",
    "resource": "$.data.resources[0]",
}


def transform(template: str, paths: dict[str, Any] | None = None) -> InputTransform:
    """The transformer for `template` with `paths` (default: the EC2 example's input paths)."""
    return compile_transformer(
        {"input_paths": EC2_PATHS if paths is None else paths, "input_template": template}, AT
    )


def render(template: str, event: dict[str, Any], paths: dict[str, Any]) -> Any:
    """The data `template` builds from `event`, for rule `example`."""
    return transform(template, paths).apply(event, "example")


def error_of(spec: Any) -> ManifestError:
    """The ManifestError that compiling the input transformer `spec` raises."""
    with pytest.raises(ManifestError) as caught:
        compile_transformer(spec, AT)
    return caught.value


def manifest(*targets: Any) -> dict[str, Any]:
    """A manifest with functions `a` and `b` and one rule `r1` with these targets."""
    return {
        "functions": {"a": {"handler": "handlers:a"}, "b": {"handler": "handlers:b"}},
        "rules": [{"name": "r1", "targets": list(targets)}],
    }


def manifest_error(*targets: Any) -> ManifestError:
    """The ManifestError that parsing a manifest with these targets raises."""
    with pytest.raises(ManifestError) as caught:
        parse(manifest(*targets))
    return caught.value


# --- EventBridge's documented examples -------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(
            '"instance <instance> is in <state>"', "instance i-0123456789 is in RUNNING", id="simple string"
        ),
        pytest.param(
            r'"instance \"<instance>\" is in <state>"',
            'instance "i-0123456789" is in RUNNING',
            id="string with escaped quotes",
        ),
        pytest.param(
            '{\n  "instance" : <instance>,\n  "state": <state>\n}',
            {"instance": "i-0123456789", "state": "RUNNING"},
            id="simple JSON",
        ),
        pytest.param(
            '{"instance" : <instance>, "state": "<state>",'
            ' "instanceStatus": "instance \\"<instance>\\" is in <state>"}',
            {
                "instance": "i-0123456789",
                "state": "RUNNING",
                "instanceStatus": 'instance "i-0123456789" is in RUNNING',
            },
            id="JSON with strings and variables",
        ),
        pytest.param(
            '{"instance" : <instance>, "state": [ 9, <state>, true ], "Transformed" : "Yes"}',
            {"instance": "i-0123456789", "state": [9, "RUNNING", True], "Transformed": "Yes"},
            id="JSON with a mix of variables and static information",
        ),
        pytest.param('"<bus.rule.name> triggered"', "example triggered", id="reserved variable in a string"),
        pytest.param(
            '{"timestamp" : <timestamp>, "message": "instance \\"<instance>\\" is in <state>"}',
            {"timestamp": "2015-11-11T21:29:54Z", "message": 'instance "i-0123456789" is in RUNNING'},
            id="CloudWatch log group (bus quotes the timestamp: the output stays JSON)",
        ),
        pytest.param("<instance> is in state <state>", "i-0123456789 is in state RUNNING", id="API: text"),
        pytest.param(
            '{"myInstance": <instance>,"myStatus": "<instance> is in state \\"<state>\\""}',
            {"myInstance": "i-0123456789", "myStatus": 'i-0123456789 is in state "RUNNING"'},
            id="API: JSON with variables in quotes or out",
        ),
        pytest.param("<resource>", EC2_EVENT["data"]["resources"][0], id="array index"),
    ],
)
def test_eventbridge_examples(template: str, expected: Any) -> None:
    """Each documented template gives the documented output, as data for the function."""
    assert render(template, EC2_EVENT, EC2_PATHS) == expected


def test_reserved_variables_in_json() -> None:
    """<bus.rule.name> is the rule, <bus.event> the whole event, <bus.event.attributes> it without data."""
    data = render(
        '{"instance": <instance>, "ruleName": <bus.rule.name>, "originalEvent": <bus.event>,'
        ' "attributes": <bus.event.attributes>}',
        {**EC2_EVENT, "data_base64": "AA=="},
        EC2_PATHS,
    )
    assert data["instance"] == "i-0123456789"
    assert data["ruleName"] == "example"
    assert data["originalEvent"] == {**EC2_EVENT, "data_base64": "AA=="}
    assert data["attributes"] == {k: v for k, v in EC2_EVENT.items() if k != "data"}


def test_reserved_variables_need_no_input_paths() -> None:
    """A template of reserved variables alone needs no input_paths."""
    reshaped = compile_transformer({"input_template": "<bus.event>"}, AT)
    assert reshaped.apply(EC2_EVENT, "r") == EC2_EVENT


def test_json_templates_give_json_and_other_templates_give_text() -> None:
    """Whether a template is JSON is decided when it is compiled, not per event."""
    assert transform('{"a": <state>}').kind == "json"
    assert transform('"<state>"').kind == "json"
    assert transform("<state>").kind == "json"
    assert transform("42").apply(EC2_EVENT, "r") == 42
    assert transform("<state> now").kind == "text"
    assert transform("plain words").apply(EC2_EVENT, "r") == "plain words"


# --- value types, quoted and unquoted --------------------------------------------------------------

TYPED_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "1",
    "source": "test",
    "type": "t",
    "data": {
        "s": "text",
        "n": 42,
        "f": 2.5,
        "t": True,
        "z": None,
        "o": {"k": "v", "n": [1, 2]},
        "a": ["x", 1, None],
        "e": "",
        "odd key.with dots": "odd",
        'q"uote': "quoted",
    },
}
TYPED_PATHS = {name: f"$.data.{name}" for name in ("s", "n", "f", "t", "z", "o", "a", "e")}


@pytest.mark.parametrize(
    ("name", "unquoted", "quoted"),
    [
        ("s", "text", "text"),
        ("n", 42, "42"),
        ("f", 2.5, "2.5"),
        ("t", True, "true"),
        ("z", None, "null"),
        ("o", {"k": "v", "n": [1, 2]}, '{"k":"v","n":[1,2]}'),
        ("a", ["x", 1, None], '["x",1,null]'),
        ("e", "", ""),
    ],
)
def test_values_keep_their_type_unquoted_and_become_text_in_quotes(
    name: str, unquoted: Any, quoted: str
) -> None:
    """Unquoted, a value is inserted as itself; inside a string, as text (objects and arrays as JSON)."""
    data = render(f'{{"v": <{name}>, "in": "<{name}>", "mid": "[<{name}>]"}}', TYPED_EVENT, TYPED_PATHS)
    assert data == {"v": unquoted, "in": quoted, "mid": f"[{quoted}]"}


def test_text_templates_insert_values_as_text() -> None:
    """In a text template every value is text: strings as they are, others as compact JSON."""
    template = "<s>|<n>|<t>|<z>|<o>|<a>|<e>|"
    assert (
        render(template, TYPED_EVENT, TYPED_PATHS) == 'text|42|true|null|{"k":"v","n":[1,2]}|["x",1,null]||'
    )


@pytest.mark.parametrize(
    "path",
    ["$.data.nope", "$.data.s.deeper", "$.data.a[3]", "$.data.o[0]", "$.data.a.k", "$.nothing[0].x"],
)
def test_missing_paths_are_null_as_values_and_empty_in_text(path: str) -> None:
    """A path that leads nowhere gives null as a value, and nothing inside a string or text template."""
    paths = {"m": path}
    assert render('{"v": <m>, "s": "[<m>]"}', TYPED_EVENT, paths) == {"v": None, "s": "[]"}
    assert render("[<m>]", TYPED_EVENT, paths) == [None]
    assert render("value: <m>.", TYPED_EVENT, paths) == "value: ."


def test_a_present_null_is_null_and_reads_null_in_text() -> None:
    """A field that holds null is null as a value and `null` as text, unlike a missing one."""
    assert render('{"v": <z>, "s": "<z>"}', TYPED_EVENT, TYPED_PATHS) == {"v": None, "s": "null"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.data['odd key.with dots']", "odd"),
        ('$.data["odd key.with dots"]', "odd"),
        ("$['data']['s']", "text"),
        ('$.data["q\\"uote"]', "quoted"),
        ("$.data.o.n[1]", 2),
        ("$.data.a[0]", "x"),
        ("$.type", "t"),
    ],
)
def test_json_paths_of_the_safe_subset(path: str, expected: Any) -> None:
    """Dotted names, bracketed quoted names and array indexes reach into the event."""
    assert render("<v>", TYPED_EVENT, {"v": path}) == expected


def test_root_path_is_the_whole_event() -> None:
    """`$` names the event itself."""
    assert render('{"e": <v>}', TYPED_EVENT, {"v": "$"}) == {"e": TYPED_EVENT}


# --- escaping --------------------------------------------------------------------------------------

AWKWARD = [
    'say "hi"',
    "back\\slash \\n \\u0041 \\",
    "line\nbreak\ttab\r\x00\x1f",
    "üñíçødé ✓ 😀 \u2028",
    "<s> and </s> and <bus.rule.name>",
    '", "injected": "yes',
    "\ue000 private use",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_awkward_strings_yield_valid_json_with_the_exact_value(value: str) -> None:
    """Quotes, backslashes, control characters, unicode and placeholder-like text come through intact."""
    event = {**TYPED_EVENT, "data": {"s": value, "o": {value: [value]}}}
    template = '{"v": <s>, "in": "<<s>>", "o": <o>, "os": "<o>", "list": [<s>, "x<s>"]}'
    data = render(template, event, {"s": "$.data.s", "o": "$.data.o"})
    assert data == {
        "v": value,
        "in": f"<{value}>",
        "o": {value: [value]},
        "os": json.dumps({value: [value]}, ensure_ascii=False, separators=(",", ":")),
        "list": [value, f"x{value}"],
    }
    assert orjson.loads(orjson.dumps(data)) == data
    assert render("<s>!", event, {"s": "$.data.s"}) == f"{value}!"


def test_template_escapes_and_unicode_are_kept() -> None:
    """JSON escapes and non-ASCII text of the template itself are decoded as JSON decodes them."""
    data = render('{"ü\\n": "caf\\u00e9 <s> \\"q\\" \\\\ ✓"}', TYPED_EVENT, TYPED_PATHS)
    assert data == {"ü\n": 'café text "q" \\ ✓'}


def test_angle_brackets_that_are_not_placeholders_stay_text() -> None:
    """`<` and `>` around anything but a variable name are literal text."""
    assert render('"a < b > c, x <= 5, <not a name>"', TYPED_EVENT, TYPED_PATHS) == (
        "a < b > c, x <= 5, <not a name>"
    )


# --- results -------------------------------------------------------------------------------------


def test_each_apply_builds_fresh_containers() -> None:
    """Changing one result does not change the next: templates and constants build new objects."""
    reshaped = transform('{"list": [1, <state>], "obj": {"k": "v"}}')
    first = reshaped.apply(EC2_EVENT, "r")
    first["list"].append(3)
    first["obj"]["k"] = "changed"
    assert reshaped.apply(EC2_EVENT, "r") == {"list": [1, "RUNNING"], "obj": {"k": "v"}}
    constant = compile_constant({"a": [1]}, "input")
    constant.apply(EC2_EVENT, "r")["a"].append(2)
    assert constant.apply(EC2_EVENT, "r") == {"a": [1]}


def test_each_variable_is_resolved_once_however_often_it_is_used() -> None:
    """A placeholder used several times is one variable; unused input_paths cost nothing."""
    reshaped = transform('{"a": <state>, "b": "<state><state>"}')
    assert [variable.name for variable in reshaped.variables] == ["state"]
    assert reshaped.apply(EC2_EVENT, "r") == {"a": "RUNNING", "b": "RUNNINGRUNNING"}


def test_compiled_transforms_are_values() -> None:
    """Compiling the same spec twice gives equal, hashable transforms."""
    assert transform('{"a": <state>}') == transform('{"a": <state>}')
    assert hash(transform('{"a": <state>}')) == hash(transform('{"a": <state>}'))
    assert transform('{"a": <state>}') != transform('{"a": "<state>"}')


# --- constant input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{"kind": "daily", "n": [1, 2.5, True, None]}, ["a", {"b": {}}], "text", 7, -1.5, False, None, {}, []],
)
def test_constant_input_is_the_data_whatever_the_event(value: Any) -> None:
    """`input` is EventBridge's constant JSON: the target gets exactly that value."""
    constant = compile_constant(value, "rules.r1.targets[0].input")
    assert constant.kind == "constant"
    assert constant.apply(EC2_EVENT, "r") == value
    assert constant.apply({}, "other") == value


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"when": datetime.date(2026, 1, 1)}, "rules.r1.targets[0].input.when"),
        ({"a": [1, {"at": datetime.datetime(2026, 1, 1)}]}, "rules.r1.targets[0].input.a[1].at"),
        ({1: "x"}, "rules.r1.targets[0].input.1"),
        ({True: "x"}, "rules.r1.targets[0].input.True"),
        ({"x": float("nan")}, "rules.r1.targets[0].input.x"),
        ([float("inf")], "rules.r1.targets[0].input[0]"),
        ({"n": 2**70}, "rules.r1.targets[0].input.n"),
        ({"s": {1, 2}}, "rules.r1.targets[0].input.s"),
        (b"bytes", "rules.r1.targets[0].input"),
        ({"x": "y" * MAX_INPUT_BYTES}, "rules.r1.targets[0].input"),
    ],
)
def test_constant_input_must_be_json(value: Any, path: str) -> None:
    """Values YAML can write but JSON cannot (dates, non-string keys, NaN, sets) are refused by path."""
    with pytest.raises(ManifestError) as caught:
        compile_constant(value, "rules.r1.targets[0].input")
    assert caught.value.path == path


def test_constant_input_nesting_is_bounded() -> None:
    """A constant nested deeper than 64 levels is refused."""
    deep: Any = "x"
    for _ in range(80):
        deep = [deep]
    with pytest.raises(ManifestError, match="nests deeper than 64"):
        compile_constant(deep, "input")


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ("<a>", AT, "must be a mapping"),
        ({"input_template": "x", "template": "y"}, f"{AT}.template", "unknown key"),
        ({"input_paths": {}}, f"{AT}.input_template", "is required"),
        ({"input_template": 5}, f"{AT}.input_template", "must be a string"),
        ({"input_template": "  "}, f"{AT}.input_template", "must not be empty"),
        ({"input_template": "x" * (MAX_TEMPLATE_BYTES + 1)}, f"{AT}.input_template", "8192"),
        ({"input_template": "ü" * (MAX_TEMPLATE_BYTES // 2 + 1)}, f"{AT}.input_template", "bytes"),
        ({"input_template": "x", "input_paths": ["$.a"]}, f"{AT}.input_paths", "mapping of names"),
        (
            {"input_template": "x", "input_paths": {f"k{i}": "$.a" for i in range(MAX_PATHS + 1)}},
            f"{AT}.input_paths",
            "limit is 100",
        ),
        ({"input_template": "x", "input_paths": {"a.b": "$.a"}}, f"{AT}.input_paths.a.b", "variable names"),
        ({"input_template": "x", "input_paths": {"a b": "$.a"}}, f"{AT}.input_paths.a b", "variable names"),
        ({"input_template": "x", "input_paths": {5: "$.a"}}, f"{AT}.input_paths.5", "variable names"),
        ({"input_template": "x", "input_paths": {"": "$.a"}}, f"{AT}.input_paths.", "variable names"),
    ],
)
def test_transformer_spec_errors_name_the_field(spec: Any, path: str, fragment: str) -> None:
    """Every malformed part of an input transformer is refused with its manifest path."""
    error = error_of(spec)
    assert error.path == path
    assert fragment in error.reason


@pytest.mark.parametrize(
    ("json_path", "fragment"),
    [
        ("data.key", "must start at the event root $"),
        ("$.data.*", "wildcards are not supported"),
        ("$.data[*]", "wildcards are not supported"),
        ("$..key", "recursive descent"),
        ("$.data[-1]", "brackets hold an array index"),
        ("$.data[0:2]", "brackets hold an array index"),
        ("$.data[?(@.a)]", "brackets hold an array index"),
        ("$.data.", "unexpected '.'"),
        ("$.data key", "unexpected ' '"),
        ("$.data[x]", "brackets hold an array index"),
        ("$['unterminated", "unterminated"),
        ("$['a']x", "unexpected 'x'"),
        ("$['']", "empty key"),
        (5, "must be a JSONPath string"),
        (None, "must be a JSONPath string"),
        ("$." + "a" * 300, "limit is 256"),
    ],
)
def test_bad_json_paths_are_refused_naming_the_variable_and_the_path(json_path: Any, fragment: str) -> None:
    """Anything outside the safe JSONPath subset is refused, naming the variable and the path."""
    error = error_of({"input_paths": {"key": json_path}, "input_template": "<key>"})
    assert error.path == f"{AT}.input_paths.key"
    assert fragment in error.reason
    if isinstance(json_path, str) and len(json_path) < 100:
        assert repr(json_path) in error.reason


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ('{"a": <nope>}', "placeholder <nope> is not defined in input_paths"),
        ('"<key> <nope>"', "placeholder <nope> is not defined in input_paths"),
        ("text <nope>", "placeholder <nope> is not defined in input_paths"),
        ('"<bus.rule-name>"', "placeholder <bus.rule-name> is not defined"),
        ('{"a": <key>1}', "Expecting ',' delimiter at character 12"),
        ('{"a": }', "Expecting value at character 7"),
        ("[1, <key>", "at character 10"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": <key> <key>}', "looks like JSON but is not"),
        ('"<key>" and "<key>"', "looks like JSON but is not"),
        ('"unterminated <key>', "looks like JSON but is not"),
        ("  [<key>] and more", "looks like JSON but is not"),
        ("{<key>: 1}", "a placeholder cannot be an object key"),
        ('{"<key>": 1}', "a placeholder cannot be an object key"),
        ('{"x<key>": 1}', "a placeholder cannot be an object key"),
        ('{"a": 1, "a": 2}', "key 'a' appears twice"),
        ("[" * 70 + "]" * 70, "nests deeper than 64 levels"),
        ("[" * 4000 + "]" * 4000, "nests deeper than 64 levels"),
        ('{"a": "\\q"}', "Invalid \\escape"),
    ],
)
def test_template_errors_name_the_template(template: str, fragment: str) -> None:
    """Undefined placeholders, JSON that stays invalid once filled, and placeholders as keys are refused."""
    error = error_of({"input_paths": {"key": "$.data.key"}, "input_template": template})
    assert error.path == f"{AT}.input_template"
    assert fragment in error.reason


def test_undefined_placeholder_error_lists_what_is_defined() -> None:
    """The message suggests the input_paths entry to add and lists the variables there are."""
    error = error_of({"input_paths": {"key": "$.data.key"}, "input_template": "<nope>"})
    assert "nope: $.data.nope" in error.reason
    assert "<key>, <bus.event>, <bus.event.attributes>, <bus.rule.name>" in error.reason


# --- the manifest ----------------------------------------------------------------------------------

MANIFEST_YAML = """
functions:
  thumbnail: {handler: "images:thumbnail"}
  audit: {handler: "audit:record"}
  report: {handler: "reports:make"}
rules:
  - name: jpeg-uploads
    pattern: {type: [bus.object.created]}
    targets:
      - audit
      - function: thumbnail
        input_transformer:
          input_paths:
            bucket: $.data.bucket
            key: $.data.key
          input_template: |
            {"image": "s3://<bucket>/<key>", "bucket": <bucket>, "rule": <bus.rule.name>}
      - function: report
        input: {kind: daily, sizes: [64, 256]}
"""


def test_manifest_targets_take_an_input_transformer_or_a_constant_input() -> None:
    """Targets may be names or mappings; Rule.targets stays the names, Rule.transforms the inputs."""
    [rule] = parse(yaml.safe_load(MANIFEST_YAML)).rules
    assert rule.targets == ("audit", "thumbnail", "report")
    assert set(rule.transforms) == {"thumbnail", "report"}
    assert rule.transforms.get("audit") is None
    event = {**EC2_EVENT, "data": {"bucket": "photos", "key": "cat.jpg"}}
    assert rule.transforms["thumbnail"].apply(event, rule.name) == {
        "image": "s3://photos/cat.jpg",
        "bucket": "photos",
        "rule": "jpeg-uploads",
    }
    assert rule.transforms["report"].apply(event, rule.name) == {"kind": "daily", "sizes": [64, 256]}


def test_rules_with_transforms_stay_hashable_values() -> None:
    """Parsing twice gives equal, hashable rules; their transforms cannot be changed."""
    first = parse(yaml.safe_load(MANIFEST_YAML)).rules[0]
    second = parse(yaml.safe_load(MANIFEST_YAML)).rules[0]
    assert first == second
    assert hash(first) == hash(second)
    with pytest.raises(TypeError):
        first.transforms["audit"] = first.transforms["report"]  # type: ignore[index]


def test_rules_without_transforms_have_an_empty_read_only_mapping() -> None:
    """A rule built without transforms has an empty, read-only mapping."""
    [rule] = parse(manifest("a", "b")).rules
    assert rule.targets == ("a", "b")
    assert rule.transforms == {}
    assert isinstance(rule.transforms, MappingProxyType)
    assert Rule(name="r", pattern=rule.pattern, targets=("a",)).transforms == {}


@pytest.mark.parametrize(
    ("targets", "path", "fragment"),
    [
        (
            [
                "a",
                {
                    "function": "b",
                    "input_transformer": {"input_paths": {"key": "$.data.*"}, "input_template": "<key>"},
                },
            ],
            "rules.r1.targets[1].input_transformer.input_paths.key",
            "wildcards are not supported",
        ),
        (
            ["a", {"function": "b", "input_transformer": {"input_template": '{"a": <key>}'}}],
            "rules.r1.targets[1].input_transformer.input_template",
            "placeholder <key> is not defined",
        ),
        (
            ["a", {"function": "b", "input_transformer": {"input_template": "x", "paths": {}}}],
            "rules.r1.targets[1].input_transformer.paths",
            "unknown key",
        ),
        (
            [{"function": "a", "input": {"when": datetime.date(2026, 1, 1)}}],
            "rules.r1.targets[0].input.when",
            "must be JSON",
        ),
        (
            [{"function": "a", "input": 1, "input_transformer": {"input_template": "x"}}],
            "rules.r1.targets[0]",
            "not both",
        ),
        ([{"function": "a", "inputs": 1}], "rules.r1.targets[0].inputs", "unknown key"),
        ([{"input": 1}], "rules.r1.targets[0].function", "function: NAME"),
        ([{"function": 5}], "rules.r1.targets[0].function", "function: NAME"),
        ([{"function": "nope"}], "rules.r1.targets[0].function", "unknown function 'nope'"),
        (["a", "nope"], "rules.r1.targets[1]", "unknown function 'nope'"),
        (["a", "a"], "rules.r1.targets[1]", "already a target at rules.r1.targets[0]"),
        (["a", {"function": "a", "input": 1}], "rules.r1.targets[1]", "list each target once"),
    ],
)
def test_manifest_target_errors_name_the_path(targets: list[Any], path: str, fragment: str) -> None:
    """Every target error names its manifest path, down to the input_paths entry."""
    error = manifest_error(*targets)
    assert error.path == path
    assert fragment in error.reason

"""`bus apply` and `bus rules list|test|explain` (SPEC §3, §5, §9)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson

from bus import manifest
from bus.control import Applied, Refused
from bus.errors import BusError, ConfigError, ManifestError
from bus.flows import rule_documents
from bus.kafka.control_store import applied_manifest, apply_file, read_applied
from bus.patterns import PatternError
from bus.patterns import compile as compile_pattern
from bus.routing import explain
from bus.settings import KafkaSettings

__all__ = ["add_commands", "run_apply", "run_rules", "unset_secrets"]


def add_commands(sub: Any) -> None:
    """Register `apply` and `rules` on the top-level subparsers."""
    apply = sub.add_parser("apply", help="validate the manifest and store it; running components pick it up")
    apply.add_argument("-f", "--file", type=Path, required=True, help="the manifest (bus.yaml)")

    rules = sub.add_parser("rules", help="list, test and explain routing rules").add_subparsers(
        dest="rules_command", required=True
    )
    listing = rules.add_parser("list", help="the applied rules with their versions")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    test = rules.add_parser("test", help="does an event match a pattern? prints match or no match (exit 0/1)")
    test.add_argument("--pattern", required=True, help="pattern JSON, or @file")
    test.add_argument("--event", required=True, help="event JSON (CloudEvents JSON format), or @file")
    why = rules.add_parser("explain", help="for every rule: matched, or the first field that failed")
    why.add_argument("--event", required=True, help="event JSON (CloudEvents JSON format), or @file")
    why.add_argument("-f", "--file", type=Path, help="explain this manifest's rules, not the applied ones")


def run_apply(
    args: argparse.Namespace,
    settings: KafkaSettings,
    *,
    prefix: str | None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """`bus apply -f bus.yaml`; `prefix` (from --prefix or BUS_PREFIX) overrides the manifest's.

    Warns about each secret variable the manifest names that is unset in `environ` (default: this
    process's): the gateway may run elsewhere, but where it lacks one, that item fails closed."""
    try:
        print(apply_file(settings, args.file, prefix=prefix))
    except ManifestError as exc:  # bad input, as the README's exit statuses say: 2, not 1
        print(f"bus apply: {exc}", file=sys.stderr)
        return 2
    environ = os.environ if environ is None else environ
    for name in unset_secrets(manifest.read(args.file, prefix=prefix), environ):
        print(
            f"bus apply: warning: {name} is not set here; it must be set in the gateway's environment, "
            "where the items naming it otherwise fail closed (refused)",
            file=sys.stderr,
        )
    return 0


def unset_secrets(checked: manifest.Manifest, environ: Mapping[str, str]) -> list[str]:
    """The secret variables `checked` names that are unset (or empty) in `environ`."""
    return [name for name in checked.secret_variables() if not environ.get(name)]


def run_rules(args: argparse.Namespace, settings: KafkaSettings, out: TextIO | None = None) -> int:
    """`bus rules list|test|explain` (printing to `out`, default stdout)."""
    out = out or sys.stdout
    if args.rules_command == "test":
        try:
            return _test(args, out)
        except BusError as exc:  # 1 means "no match": a bad argument exits 2, as grep does
            print(f"bus rules: {exc}", file=sys.stderr)
            return 2
    if args.rules_command == "list":
        applied, _ = read_applied(settings, settings.prefix)
        return _list(applied, settings.prefix, as_json=args.json, out=out)
    event = _event_arg(args.event)
    if args.file is not None:
        rules = manifest.read(args.file, prefix=settings.prefix).rules
    else:
        applied, _ = read_applied(settings, settings.prefix)
        rules = applied_manifest(applied, settings.prefix, prefix=settings.prefix).rules
    width = max((len(rule.name) for rule in rules), default=4)
    for rule in rules:
        why = explain(event, rule)
        verdict = f"match -> {', '.join(rule.targets)}" if why is None else f"no match: {why}"
        print(f"{rule.name:<{width}}  {verdict}", file=out)
    return 0


def _test(args: argparse.Namespace, out: TextIO) -> int:
    try:
        pattern = compile_pattern(_json_arg(args.pattern, "--pattern"))
    except PatternError as exc:
        raise ConfigError(f"--pattern: {exc}") from None
    event = _event_arg(args.event)
    matched = pattern.matches(event)
    print("match" if matched else "no match", file=out)
    return 0 if matched else 1


def _list(applied: Applied | Refused | None, prefix: str, *, as_json: bool, out: TextIO) -> int:
    if applied is None:
        raise ConfigError(f"no manifest was applied for prefix {prefix!r}: run `bus apply -f bus.yaml`")
    if isinstance(applied, Refused):  # an older version is not the one a router starting now uses
        raise ConfigError(f"{applied.describe(prefix)}; apply a valid one with `bus apply -f bus.yaml`")
    documents = [*(applied.document.get("rules") or []), *rule_documents(applied.document.get("flows"))]
    specs = {str(spec["name"]): spec for spec in documents}
    rows = [
        {
            "name": rule.name,
            "version": rule.version,
            "changed_at": rule.changed_at,
            "targets": [t if isinstance(t, str) else t.get("function") for t in specs[rule.name]["targets"]],
            "pattern": specs[rule.name].get("pattern", {}),
            "tags": specs[rule.name].get("tags", {}),
        }
        for rule in applied.rules
    ]
    if as_json:
        doc = {"prefix": prefix, "version": applied.version, "applied_at": applied.applied_at, "rules": rows}
        print(orjson.dumps(doc).decode(), file=out)
        return 0
    print(f"prefix {prefix!r}: version {applied.version}, applied {applied.applied_at}", file=out)
    cells = [
        (
            str(row["name"]),
            str(row["version"]),
            str(row["changed_at"]),
            ",".join(map(str, row["targets"])),
            _tags(row["tags"]),
            orjson.dumps(row["pattern"]).decode(),
        )
        for row in rows
    ]
    header = ("RULE", "VERSION", "CHANGED", "TARGETS", "TAGS", "PATTERN")
    widths = [max(len(cell) for cell in column) for column in zip(header, *cells, strict=True)]
    for line in (header, *cells):
        name, version, changed, targets, tags, pattern = line
        print(
            f"{name:<{widths[0]}}  {version:>{widths[1]}}  {changed:<{widths[2]}}  "
            f"{targets:<{widths[3]}}  {tags:<{widths[4]}}  {pattern}",
            file=out,
        )
    return 0


def _tags(selector: Any) -> str:
    """A rule's tag selector in one cell: `all:prod any:eu,us none:test`, `-` when it has none."""
    if not isinstance(selector, dict):
        return orjson.dumps(selector).decode() if selector else "-"
    parts = [
        f"{key}:{','.join(map(str, values if isinstance(values, list) else [values]))}"
        for key, values in selector.items()
        if values
    ]
    return " ".join(parts) or "-"


def _event_arg(text: str) -> dict[str, Any]:
    """`--event`: a JSON object (the CloudEvents JSON format)."""
    event = _json_arg(text, "--event")
    if not isinstance(event, dict):
        raise ConfigError(
            f"--event: must be a JSON object (an event in the CloudEvents JSON format), got {text!r}"
        )
    return event


def _json_arg(text: str, option: str) -> Any:
    """JSON given inline or as `@file`; ConfigError naming the option when it is not JSON."""
    raw: str | bytes = text
    if text.startswith("@"):
        try:
            raw = Path(text[1:]).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{option}: cannot read {text[1:]!r} ({exc.strerror})") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{option}: not valid JSON ({exc})") from None

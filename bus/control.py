"""Applied manifests: the versioned state `bus apply` stores on `<prefix>.control` (pure).

`bus apply` validates a manifest, makes it self-contained (schema files inlined) and stores it as
one record under the key `manifest` of the compacted control topic. Every router reads the latest
record at start and follows the topic, so a change takes effect without a restart.

Versions: the manifest's version goes up by one whenever its content changes (an unchanged apply
stores nothing). Each rule carries the version at which it last changed, so `bus rules list`
shows which rules an apply touched. A latest record this bus cannot read (a newer format, say) is
`Refused`: nothing is in force from it, and the next version is numbered above it.

Start offsets: a results topic the router starts following for a flow step is read from where it
ended at the apply that first followed it (`starts`, carried by later versions while followed),
so every router, running or started later, runs the new step only on results that come after it.

Format: `format` 1 grows by optional members only. A reader ignores members it does not know, and
a record without one reads as before the member existed (`starts`, added later: none recorded).
The format goes up only for a change an older reader would misread, since it refuses the record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bus.avro_schema import load_schema
from bus.errors import BusError, ManifestError
from bus.flows import rule_documents
from bus.manifest import Manifest, parse
from bus.topology import results_followed

__all__ = [
    "CONTROL_KEY",
    "Applied",
    "Change",
    "Refused",
    "RuleVersion",
    "checked_document",
    "decode",
    "encode",
    "newly_followed",
    "next_applied",
    "next_starts",
    "read_record",
    "self_contained",
]

CONTROL_KEY = b"manifest"
"""Key of the applied manifest's record on the control topic."""

_FORMAT = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleVersion:
    """A rule as applied: the version at which its definition last changed."""

    name: str
    version: int
    changed_at: str
    digest: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """One applied version of the manifest."""

    version: int
    applied_at: str
    digest: str
    document: Mapping[str, Any]
    """The manifest as written, with `schemas` inlined (it reads the same on any machine)."""
    base_dir: str
    """Folder of the manifest file where it was applied (handlers import relative to it)."""
    rules: tuple[RuleVersion, ...]
    starts: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    """Results topic followed for a flow step -> partition -> offset where a router group with no
    committed offset there (or an older one) starts reading it: the topic's end at the apply that
    first followed it. A followed topic not in it (a record from before this member): none."""

    def manifest(self, *, prefix: str | None = None) -> Manifest:
        """The validated manifest (it was valid when applied; parsing checks it again)."""
        return parse(self.document, base_dir=self.base_dir, prefix=prefix)

    def start_offsets(self) -> dict[tuple[str, int], int]:
        """`starts` as (topic, partition) -> offset."""
        return {(topic, p): offset for topic, parts in self.starts.items() for p, offset in parts.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """A control record this bus cannot read (a newer format, or not an applied manifest)."""

    offset: int
    reason: str
    version: int | None
    """The version the record states, when it states one as a whole number; else None."""

    def describe(self, prefix: str) -> str:
        """`the latest manifest applied for prefix 'p' (version 7, offset 12) cannot be read (why)`."""
        numbered = f"version {self.version}, " if self.version is not None else ""
        return (
            f"the latest manifest applied for prefix {prefix!r} ({numbered}offset {self.offset}) "
            f"cannot be read ({self.reason})"
        )


@dataclass(frozen=True, slots=True)
class Change:
    """What an apply changed, by rule name."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    def describe(self) -> str:
        """`+a ~b -c` (or `no rule changed`)."""
        parts = (
            [f"+{n}" for n in self.added] + [f"~{n}" for n in self.changed] + [f"-{n}" for n in self.removed]
        )
        return " ".join(parts) or "no rule changed"


def checked_document(document: Any, base_dir: Path, *, prefix: str | None) -> tuple[dict[str, Any], Manifest]:
    """The document to store for a manifest file's YAML values, and the manifest it validates as.

    The values are validated as written first, as `manifest.read` does for the `-f` readers, so
    `bus apply` refuses what they refuse (an unquoted date in a constant `input`, say) instead of
    storing its text; the self-contained copy is then validated again, as it will read back.
    """
    parse(document, base_dir=str(base_dir), prefix=prefix)
    stored = self_contained(document, base_dir)
    return stored, parse(stored, base_dir=str(base_dir), prefix=prefix)


def self_contained(document: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """A JSON copy of the document with each `schemas` path replaced by the schema it names.

    YAML values JSON lacks become what JSON makes of them (a date becomes its ISO text), so the
    result validates exactly as the stored record will read back.
    """
    result = dict(document)
    schemas = document.get("schemas")
    if isinstance(schemas, Mapping):
        inlined: dict[str, Any] = {}
        for event_type, value in schemas.items():
            if isinstance(value, str):
                schema = load_schema(base_dir / value, where=f"schemas.{event_type}")
                inlined[event_type] = orjson.loads(schema.text)
            else:
                inlined[event_type] = value
        result["schemas"] = inlined
    try:
        text = orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        raise ManifestError(
            "manifest", f"holds a value JSON cannot carry ({exc}); quote it, or write it as a plain string"
        ) from None
    loaded: dict[str, Any] = orjson.loads(text)
    return loaded


def newly_followed(previous: Applied | Refused | None, manifest: Manifest) -> frozenset[str]:
    """The results topics `manifest` makes the router follow that the previous applied one did not.

    After nothing (the first apply), every one is new. After a `Refused` record, or one that no
    longer validates, none is: what the routers followed is not known, and a start recorded anew
    would move a router group that follows the topic, behind its end, past results it has not
    read yet (a recorded start moves a group's older offset forward, for a step added again).
    """
    if previous is None:
        return results_followed(manifest)
    if isinstance(previous, Refused):
        return frozenset()
    try:
        before = results_followed(previous.manifest(prefix=manifest.prefix))
    except BusError:
        return frozenset()
    return results_followed(manifest) - before


def next_starts(
    previous: Applied | Refused | None, manifest: Manifest, ends: Mapping[tuple[str, int], int]
) -> dict[str, dict[int, int]]:
    """The `starts` to store with `manifest`: for a topic newly followed, its `ends` (read at this
    apply); for one followed before too, what the previous record holds for it, if anything."""
    new = newly_followed(previous, manifest)
    kept = previous.starts if isinstance(previous, Applied) else {}
    starts: dict[str, dict[int, int]] = {}
    for topic in sorted(results_followed(manifest)):
        if topic in new:
            parts = {p: offset for (t, p), offset in ends.items() if t == topic}
        else:
            parts = dict(kept.get(topic, {}))
        if parts:
            starts[topic] = dict(sorted(parts.items()))
    return starts


def next_applied(
    previous: Applied | Refused | None,
    document: Mapping[str, Any],
    *,
    base_dir: str,
    now: str,
    starts: Mapping[str, Mapping[int, int]] | None = None,
) -> tuple[Applied, Change] | None:
    """The version to store for `document`, with what changed; None when nothing did.

    The document must already be self-contained and valid (`parse` it first); `starts` are
    `next_starts`'s for it. After a `Refused`
    record every rule is new and the version follows the record's; a record without a readable
    version leaves nothing safe to number from, so that is a ManifestError.
    """
    digest = _digest(document)
    if isinstance(previous, Refused):
        if previous.version is None:
            raise ManifestError(
                "control record",
                f"the latest, at offset {previous.offset}, cannot be read ({previous.reason}) and states "
                "no version to number the next one from, so nothing was stored; apply with a bus "
                "that reads it",
            )
        version = previous.version + 1
        before: dict[str, RuleVersion] = {}
    elif previous is not None:
        if previous.digest == digest and previous.base_dir == base_dir:
            return None
        version = previous.version + 1
        before = {rule.name: rule for rule in previous.rules}
    else:
        version = 1
        before = {}
    rules: list[RuleVersion] = []
    added: list[str] = []
    changed: list[str] = []
    # A flow's steps are rules too (`flow.<flow>.<step>`), versioned by what they compile to.
    for spec in [*(document.get("rules") or []), *rule_documents(document.get("flows"))]:
        name = str(spec["name"])
        rule_digest = _digest(spec)
        old = before.get(name)
        if old is not None and old.digest == rule_digest:
            rules.append(old)
            continue
        (added if old is None else changed).append(name)
        rules.append(RuleVersion(name=name, version=version, changed_at=now, digest=rule_digest))
    names = {rule.name for rule in rules}
    removed = tuple(name for name in before if name not in names)
    applied = Applied(
        version=version,
        applied_at=now,
        digest=digest,
        document=document,
        base_dir=base_dir,
        rules=tuple(rules),
        starts={topic: dict(parts) for topic, parts in (starts or {}).items()},
    )
    return applied, Change(tuple(added), tuple(changed), removed)


def encode(applied: Applied) -> bytes:
    """The control record's value."""
    return orjson.dumps(
        {
            "format": _FORMAT,
            "version": applied.version,
            "applied_at": applied.applied_at,
            "digest": applied.digest,
            "base_dir": applied.base_dir,
            "rules": [
                {"name": r.name, "version": r.version, "changed_at": r.changed_at, "digest": r.digest}
                for r in applied.rules
            ],
            "document": applied.document,
            "starts": {
                topic: {str(p): offset for p, offset in parts.items()}
                for topic, parts in applied.starts.items()
            },
        }
    )


def decode(value: bytes) -> Applied:
    """Read a control record's value; ManifestError when it is not one this version understands."""
    try:
        raw = orjson.loads(value)
        if raw.get("format") != _FORMAT:
            raise ManifestError(
                "control record", f"format {raw.get('format')!r} is not {_FORMAT}; upgrade bus"
            )
        return Applied(
            version=int(raw["version"]),
            applied_at=str(raw["applied_at"]),
            digest=str(raw["digest"]),
            document=raw["document"],
            base_dir=str(raw["base_dir"]),
            rules=tuple(
                RuleVersion(
                    name=str(r["name"]),
                    version=int(r["version"]),
                    changed_at=str(r["changed_at"]),
                    digest=str(r["digest"]),
                )
                for r in raw["rules"]
            ),
            starts={
                str(topic): {int(p): int(offset) for p, offset in parts.items()}
                for topic, parts in (raw.get("starts") or {}).items()
            },
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError("control record", f"is not an applied manifest ({exc!r})") from None


def read_record(value: bytes, *, offset: int) -> Applied | Refused:
    """A control record's value as the applied manifest, or `Refused` with the reason."""
    try:
        return decode(value)
    except ManifestError as exc:
        return Refused(offset=offset, reason=exc.reason, version=_stated_version(value))


def _stated_version(value: bytes) -> int | None:
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    version = raw.get("version") if isinstance(raw, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) and version >= 0 else None


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

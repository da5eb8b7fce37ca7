"""Object-store notifications become bus.object.* events (tests/fixtures/notifications, SPEC §2)."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.errors import InvalidEvent
from bus.events import CloudEvent
from bus.kafka_binding import from_record, to_record
from bus.notifications import PROVIDERS, normalise

FIXTURES = Path(__file__).parent.parent / "fixtures" / "notifications"
DELETE = object()
"""Stands for "remove this member" in a mutation."""

Where = tuple[str | int, ...]


def load(name: str) -> Any:
    """A fixture file parsed with the standard library, independent of the code under test."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def changed(name: str, *changes: tuple[Where, Any]) -> Any:
    """A fixture with the member at each path set to a value (or removed, for DELETE)."""
    body = load(name)
    for path, value in changes:
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        if value is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return body


def s3(*changes: tuple[Where, Any]) -> Any:
    """The AWS documentation's PUT example, changed."""
    return changed("s3_put.json", *changes)


def oss(*changes: tuple[Where, Any]) -> Any:
    """The Alibaba Cloud documentation's PutObject example, changed."""
    return changed("oss_put.json", *changes)


S3_OBJECT: Where = ("Records", 0, "s3", "object")
OSS_OBJECT: Where = ("events", 0, "oss", "object")

GOLDEN: list[tuple[str, str, dict[str, Any]]] = [
    (
        "s3_put.json",
        "s3",
        {
            "source": "s3://mybucket",
            "type": "bus.object.created",
            "subject": "HappyFace.jpg",
            "time": "1970-01-01T00:00:00Z",
            "data": {
                "provider": "s3",
                "bucket": "mybucket",
                "key": "HappyFace.jpg",
                "size": 1024,
                "etag": "d41d8cd98f00b204e9800998ecf8427e",
                "version_id": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                "sequencer": "0055AED6DCD90281E5",
                "event_name": "ObjectCreated:Put",
                "region": "us-west-2",
                "event_time": "1970-01-01T00:00:00Z",
            },
        },
    ),
    (
        "minio_kafka_put.json",
        "minio",
        {
            "source": "minio://images",
            "type": "bus.object.created",
            "subject": "myphoto.jpg",
            "time": "2019-09-10T17:41:54Z",
            "data": {
                "provider": "minio",
                "bucket": "images",
                "key": "myphoto.jpg",
                "size": 6474,
                "etag": "430f89010c77aa34fc8760696da62d08-1",
                "version_id": "1",
                "sequencer": "15C32494527B46C5",
                "event_name": "s3:ObjectCreated:Put",
                "region": None,
                "event_time": "2019-09-10T17:41:54Z",
            },
        },
    ),
    (
        "minio_webhook_put.json",
        "minio",
        {
            "source": "minio://images",
            "type": "bus.object.created",
            "subject": "gopher.jpg",
            "time": "2018-10-31T09:31:11Z",
            "data": {
                "provider": "minio",
                "bucket": "images",
                "key": "gopher.jpg",
                "size": 162023,
                "etag": "5337769ffa594e742408ad3f30713cd7",
                "version_id": "1",
                "sequencer": "1562A792DAA53426",
                "event_name": "s3:ObjectCreated:Put",
                "region": None,
                "event_time": "2018-10-31T09:31:11Z",
            },
        },
    ),
    (
        "oss_put.json",
        "oss",
        {
            "source": "oss://testbucket",
            "type": "bus.object.created",
            "subject": "source/a.png",
            "time": "2022-08-13T06:45:43Z",
            "data": {
                "provider": "oss",
                "bucket": "testbucket",
                "key": "source/a.png",
                "size": 122539,
                "etag": "688A7BF4F233DC9C88A80BF985AB****",
                "version_id": None,
                "sequencer": None,
                "event_name": "ObjectCreated:PutObject",
                "region": "cn-hangzhou",
                "event_time": "2022-08-13T06:45:43Z",
            },
        },
    ),
]
FIXTURE_PROVIDERS = [(name, provider) for name, provider, _ in GOLDEN] + [("s3_test_event.json", "s3")]


def test_fixture_folder_holds_the_provider_examples() -> None:
    """Every golden file is used below, so none is silently skipped."""
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(name for name, _ in FIXTURE_PROVIDERS)


def test_providers_are_the_three_the_gateway_serves() -> None:
    """PROVIDERS lists the `{provider}` values of POST /notifications/{provider}."""
    assert PROVIDERS == ("s3", "minio", "oss")


@pytest.mark.parametrize(("fixture", "provider", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_documented_example_decodes(fixture: str, provider: str, expected: dict[str, Any]) -> None:
    """Each provider's documented example becomes one event with every attribute and data field."""
    [event] = normalise(provider, load(fixture))
    assert event.source == expected["source"]
    assert event.type == expected["type"]
    assert event.subject == expected["subject"]
    assert event.time == expected["time"]
    assert event.datacontenttype == "application/json"
    assert event.data == expected["data"]
    assert uuid.UUID(event.id).version == 5
    assert event.extensions == {}


@pytest.mark.parametrize(("fixture", "provider", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_object_event_survives_the_kafka_binding(
    fixture: str, provider: str, expected: dict[str, Any]
) -> None:
    """An object event goes onto Kafka and back unchanged, keyed by its object key."""
    [event] = normalise(provider, load(fixture))
    record = to_record(event)
    assert record.key == expected["subject"].encode()
    assert from_record(record.key, record.value, record.headers) == event


def test_s3_test_event_is_accepted_and_yields_nothing() -> None:
    """S3's s3:TestEvent, sent when notifications are configured, is valid and carries no event."""
    assert normalise("s3", load("s3_test_event.json")) == []


@pytest.mark.parametrize(
    ("provider", "body", "sent", "key"),
    [
        ("s3", s3, "my+photo%281%29.jpg", "my photo(1).jpg"),
        ("s3", s3, "red+flower.jpg", "red flower.jpg"),
        ("s3", s3, "photos/2024/a.jpg", "photos/2024/a.jpg"),
        ("s3", s3, "photos%2F2024%2Fa.jpg", "photos/2024/a.jpg"),
        ("s3", s3, "c%2B%2B.tar.gz", "c++.tar.gz"),
        ("s3", s3, "%E4%B8%AD%E6%96%87.png", "中文.png"),
        ("s3", s3, "100%25+done", "100% done"),
        ("minio", s3, "photos%2Fmy+summer%282024%29.jpg", "photos/my summer(2024).jpg"),
        ("oss", oss, "my+photo%281%29.jpg", "my+photo%281%29.jpg"),
        ("oss", oss, "中文/a b.png", "中文/a b.png"),
    ],
)
def test_keys_are_decoded_where_the_provider_encodes_them(
    provider: str, body: Any, sent: str, key: str
) -> None:
    """S3 and MinIO keys are form-URL-decoded; OSS keys arrive as stored and are kept verbatim."""
    path = S3_OBJECT if body is s3 else OSS_OBJECT
    [event] = normalise(provider, body(((*path, "key"), sent)))
    assert event.data["key"] == key
    assert event.subject == key


@pytest.mark.parametrize(
    ("provider", "body"),
    [("s3", s3()), ("minio", load("minio_webhook_put.json")), ("oss", oss())],
    ids=["s3", "minio", "oss"],
)
def test_same_notification_twice_gets_the_same_ids(provider: str, body: Any) -> None:
    """A redelivered notification produces the same event ids, so consumers can deduplicate."""
    first = normalise(provider, body)
    again = normalise(provider, copy.deepcopy(body))
    assert [e.id for e in first] == [e.id for e in again]
    assert first == again


@pytest.mark.parametrize(
    "change",
    [
        ((*S3_OBJECT, "sequencer"), "0055AED6DCD90281E6"),
        ((*S3_OBJECT, "versionId"), "another-version"),
        ((*S3_OBJECT, "key"), "SadFace.jpg"),
        (("Records", 0, "s3", "bucket", "name"), "otherbucket"),
        (("Records", 0, "eventName"), "ObjectCreated:Copy"),
    ],
    ids=["sequencer", "version", "key", "bucket", "event-name"],
)
def test_identity_fields_change_the_id(change: tuple[Where, Any]) -> None:
    """A different sequencer, version, key, bucket or event name is a different event."""
    [original] = normalise("s3", s3())
    [other] = normalise("s3", s3(change))
    assert other.id != original.id


@pytest.mark.parametrize(
    "change",
    [
        ((*S3_OBJECT, "size"), 2048),
        (("Records", 0, "eventTime"), "1970-01-01T00:00:01.000Z"),
        (("Records", 0, "responseElements", "x-amz-request-id"), "0000000000000000"),
    ],
    ids=["size", "time-with-sequencer", "request-id"],
)
def test_other_fields_leave_the_id_alone(change: tuple[Where, Any]) -> None:
    """Fields outside (provider, bucket, key, version or etag, sequencer, event name) do not change the id."""
    [original] = normalise("s3", s3())
    [other] = normalise("s3", s3(change))
    assert other.id == original.id


def test_etag_identifies_when_there_is_no_version() -> None:
    """Without a version id the etag takes its place in the id."""
    [first] = normalise("s3", s3(((*S3_OBJECT, "versionId"), DELETE)))
    [second] = normalise("s3", s3(((*S3_OBJECT, "versionId"), DELETE), ((*S3_OBJECT, "eTag"), "0" * 32)))
    assert first.id != second.id


def test_event_time_stands_in_for_a_missing_sequencer() -> None:
    """OSS sends no sequencer, so two uploads of the same content at different times are two events."""
    [first] = normalise("oss", oss())
    [second] = normalise("oss", oss((("events", 0, "eventTime"), "2022-08-13T06:45:44.000Z")))
    assert first.id != second.id


@pytest.mark.parametrize(
    ("provider", "body", "name"),
    [
        ("s3", s3, "ObjectRemoved:Delete"),
        ("s3", s3, "ObjectRemoved:DeleteMarkerCreated"),
        ("minio", s3, "s3:ObjectRemoved:Delete"),
        ("oss", oss, "ObjectRemoved:DeleteObject"),
        ("oss", oss, "ObjectRemoved:DeleteObjects"),
    ],
)
def test_removals_become_object_removed(provider: str, body: Any, name: str) -> None:
    """A removal without size or etag is a bus.object.removed event with null size and etag."""
    path, record = (S3_OBJECT, "Records") if body is s3 else (OSS_OBJECT, "events")
    [event] = normalise(
        provider,
        body(
            ((record, 0, "eventName"), name),
            ((*path, "size"), DELETE),
            ((*path, "eTag"), DELETE),
        ),
    )
    assert event.type == "bus.object.removed"
    assert event.data["event_name"] == name
    assert event.data["size"] is None
    assert event.data["etag"] is None


@pytest.mark.parametrize(
    ("provider", "name", "type_"),
    [
        ("s3", "ObjectCreated:CompleteMultipartUpload", "bus.object.created"),
        ("s3", "ObjectRestore:Post", "bus.object.restored"),
        ("s3", "ObjectRestore:Completed", "bus.object.restored"),
        ("s3", "ObjectTagging:Put", "bus.object.tagging"),
        ("s3", "ObjectAcl:Put", "bus.object.acl"),
        ("s3", "LifecycleExpiration:Delete", "bus.object.lifecycleexpiration"),
        ("s3", "Replication:OperationFailedReplication", "bus.object.replication"),
        ("minio", "s3:ObjectAccessed:Get", "bus.object.accessed"),
        ("minio", "s3:ObjectRestore:Completed", "bus.object.restored"),
        ("oss", "ObjectDownloaded:GetObject", "bus.object.downloaded"),
        ("oss", "ObjectReplication:ObjectCreated", "bus.object.replication"),
        ("oss", "oss:ObjectCreated:PutObject", "bus.object.created"),
    ],
)
def test_event_category_names_the_type(provider: str, name: str, type_: str) -> None:
    """The category before the first ':' names the type, without 'Object'; the name is kept verbatim."""
    body = (
        oss((("events", 0, "eventName"), name))
        if provider == "oss"
        else s3((("Records", 0, "eventName"), name))
    )
    [event] = normalise(provider, body)
    assert event.type == type_
    assert event.data["event_name"] == name


def test_records_become_events_in_order() -> None:
    """A body with several records yields one event per record, in the records' order."""
    body = s3()
    template = body["Records"][0]
    body["Records"] = []
    for i, key in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        record = copy.deepcopy(template)
        record["s3"]["object"]["key"] = key
        record["s3"]["object"]["sequencer"] = f"0055AED6DCD90281E{i}"
        body["Records"].append(record)
    events = normalise("s3", body)
    assert [e.subject for e in events] == ["a.jpg", "b.jpg", "c.jpg"]
    assert len({e.id for e in events}) == 3


@pytest.mark.parametrize(
    ("sent", "time"),
    [
        ("2023-06-05T11:04:06.851Z", "2023-06-05T11:04:06.851Z"),
        ("2018-10-31T09:31:11Z", "2018-10-31T09:31:11Z"),
        ("2022-08-13T14:45:43.000+08:00", "2022-08-13T06:45:43Z"),
        ("2023-06-13 02:20:19.032936Z", "2023-06-13T02:20:19.032936Z"),
        ("2019-09-10T17:41:54", "2019-09-10T17:41:54Z"),
    ],
)
def test_event_time_is_normalised_to_rfc3339_utc(sent: str, time: str) -> None:
    """The provider's ISO 8601 time becomes RFC 3339 in UTC, in `time` and in `event_time`."""
    [event] = normalise("s3", s3((("Records", 0, "eventTime"), sent)))
    assert event.time == time
    assert event.data["event_time"] == time


INVALID: list[tuple[str, Any, str]] = [
    ("gcs", s3(), "provider"),
    ("S3", s3(), "provider"),
    ("s3", [s3()], "body"),
    ("s3", "Records", "body"),
    ("s3", None, "body"),
    ("s3", {}, "Records"),
    ("s3", {"Records": "HappyFace.jpg"}, "Records"),
    ("s3", {"Records": []}, "Records"),
    ("s3", {"Records": [None]}, "Records[0]"),
    ("s3", {"Records": [s3()["Records"][0], 42]}, "Records[1]"),
    ("s3", s3((("Records", 0, "eventName"), DELETE)), "Records[0].eventName"),
    ("s3", s3((("Records", 0, "eventName"), 7)), "Records[0].eventName"),
    ("s3", s3((("Records", 0, "eventName"), "Object:Put")), "Records[0].eventName"),
    ("s3", s3((("Records", 0, "eventName"), "ObjectCreated Put")), "Records[0].eventName"),
    ("s3", s3((("Records", 0, "s3"), DELETE)), "Records[0].s3"),
    ("s3", s3((("Records", 0, "s3"), [])), "Records[0].s3"),
    ("s3", s3((("Records", 0, "s3", "bucket"), DELETE)), "Records[0].s3.bucket"),
    ("s3", s3((("Records", 0, "s3", "bucket", "name"), DELETE)), "Records[0].s3.bucket.name"),
    ("s3", s3((("Records", 0, "s3", "bucket", "name"), "")), "Records[0].s3.bucket.name"),
    ("s3", s3((("Records", 0, "s3", "bucket", "name"), "a/b")), "Records[0].s3.bucket.name"),
    ("s3", s3((("Records", 0, "s3", "object"), "HappyFace.jpg")), "Records[0].s3.object"),
    ("s3", s3(((*S3_OBJECT, "key"), DELETE)), "Records[0].s3.object.key"),
    ("s3", s3(((*S3_OBJECT, "key"), 7)), "Records[0].s3.object.key"),
    ("s3", s3(((*S3_OBJECT, "key"), "%FF.jpg")), "Records[0].s3.object.key"),
    ("s3", s3(((*S3_OBJECT, "size"), "1024")), "Records[0].s3.object.size"),
    ("s3", s3(((*S3_OBJECT, "size"), -1)), "Records[0].s3.object.size"),
    ("s3", s3(((*S3_OBJECT, "size"), True)), "Records[0].s3.object.size"),
    ("s3", s3(((*S3_OBJECT, "size"), 1.5)), "Records[0].s3.object.size"),
    ("s3", s3(((*S3_OBJECT, "size"), 2**63)), "Records[0].s3.object.size"),
    ("s3", s3(((*S3_OBJECT, "eTag"), 5)), "Records[0].s3.object.eTag"),
    ("s3", s3(((*S3_OBJECT, "eTag"), "\ud800")), "Records[0].s3.object.eTag"),
    ("s3", s3(((*S3_OBJECT, "versionId"), [])), "Records[0].s3.object.versionId"),
    ("s3", s3(((*S3_OBJECT, "sequencer"), {})), "Records[0].s3.object.sequencer"),
    ("s3", s3((("Records", 0, "awsRegion"), 1)), "Records[0].awsRegion"),
    ("s3", s3((("Records", 0, "eventTime"), DELETE)), "Records[0].eventTime"),
    ("s3", s3((("Records", 0, "eventTime"), 86400)), "Records[0].eventTime"),
    ("s3", s3((("Records", 0, "eventTime"), "yesterday")), "Records[0].eventTime"),
    ("s3", s3((("Records", 0, "eventTime"), "2024-13-01T00:00:00Z")), "Records[0].eventTime"),
    ("s3", s3((("Records", 0, "eventTime"), "2024-01-01")), "Records[0].eventTime"),
    ("s3", s3((("Records", 0, "eventTime"), "0001-01-01T00:00:00+01:00")), "Records[0].eventTime"),
    ("minio", load("s3_test_event.json"), "Records"),
    ("minio", changed("minio_webhook_put.json", (("Records",), DELETE)), "Records"),
    ("oss", s3(), "events"),
    ("oss", oss((("events", 0, "oss"), DELETE)), "events[0].oss"),
    ("oss", oss(((*OSS_OBJECT, "key"), None)), "events[0].oss.object.key"),
    ("oss", oss((("events", 0, "region"), 5)), "events[0].region"),
]


@pytest.mark.parametrize(
    ("provider", "body", "field"), INVALID, ids=[f"{i}-{case[2]}" for i, case in enumerate(INVALID)]
)
def test_invalid_body_names_the_field(provider: str, body: Any, field: str) -> None:
    """An invalid body raises InvalidEvent naming the field path and what was expected there."""
    with pytest.raises(InvalidEvent) as caught:
        normalise(provider, body)
    assert caught.value.field == field
    assert "expected" in caught.value.reason
    assert str(caught.value).startswith(f"{field}: ")


def _paths(value: Any, path: Where = ()) -> Iterator[Where]:
    """Every member path inside a JSON document, outermost first."""
    if isinstance(value, dict):
        children: Any = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        return
    for name, child in children:
        yield (*path, name)
        yield from _paths(child, (*path, name))


JUNK = [DELETE, None, 0, -1, True, "", "%", "x", [], [1], {}, {"a": 1}]


@pytest.mark.parametrize(("fixture", "provider"), FIXTURE_PROVIDERS, ids=[f for f, _ in FIXTURE_PROVIDERS])
def test_junk_anywhere_is_valid_or_invalid_event(fixture: str, provider: str) -> None:
    """Replacing any member with junk either still decodes or raises InvalidEvent, never another error."""
    for path in _paths(load(fixture)):
        for junk in JUNK:
            try:
                events = normalise(provider, changed(fixture, (path, junk)))
            except InvalidEvent:
                continue
            assert all(isinstance(event, CloudEvent) for event in events)

"""The schema registry client against a small in-test server speaking Confluent's REST API.

No Confluent-compatible registry can be run on the development machine (docs/decisions/avro.md),
so the server here implements the calls bus makes, as Confluent documents them.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import pytest

from bus.avro_codec import RegistryRef, decode, encode, from_avro_event, parse_dataschema, to_avro_event
from bus.avro_compat import Compatibility, check_compatible
from bus.avro_schema import parse
from bus.errors import BusError, ConfigError, InvalidEvent, ManifestError
from bus.events import CloudEvent
from bus.localkafka import free_port
from bus.registry import CONTENT_TYPE, SchemaRegistry, subject_name

V1 = parse(
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [{"name": "id", "type": "string"}, {"name": "quantity", "type": "int"}],
    }
)
V2 = parse(
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "quantity", "type": "int"},
            {"name": "note", "type": "string", "default": ""},
        ],
    }
)
V3_BREAKING = parse(
    {"type": "record", "name": "Order", "namespace": "shop", "fields": [{"name": "id", "type": "string"}]}
)


@dataclass
class FakeRegistry:
    """The registry's state and what the client asked it."""

    ids: dict[str, int] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    fail_with: int | None = None
    denied: dict[str, str] = field(default_factory=dict)
    """Method -> the message of a 403 for `/config` calls made with it (an ACL without that permission)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:  # noqa: PLR0911 - per endpoint
        parts = [unquote(p) for p in urlsplit(path).path.strip("/").split("/")]
        if self.fail_with is not None:
            return self.fail_with, {"error_code": self.fail_with, "message": "broken"}
        if parts[0] == "config" and method in self.denied:
            return 403, {"error_code": 40301, "message": self.denied[method]}
        if method == "GET" and parts[0] == "config":
            if parts[1] not in self.config:
                message = f"Subject '{parts[1]}' does not have subject-level compatibility configured"
                return 404, {"error_code": 40408, "message": message}
            return 200, {"compatibilityLevel": self.config[parts[1]]}
        if method == "PUT" and parts[0] == "config":
            self.config[parts[1]] = body["compatibility"]
            return 200, {"compatibility": body["compatibility"]}
        if method == "GET" and parts[:2] == ["schemas", "ids"]:
            schema_id = int(parts[2])
            if schema_id not in self.texts:
                return 404, {"error_code": 40403, "message": f"Schema {schema_id} not found"}
            return 200, {"schema": self.texts[schema_id]}
        if method == "POST" and parts[0] == "subjects":
            return self.register(parts[1], body)
        if method == "POST" and parts[0] == "compatibility":
            subject = parts[2]
            if subject not in self.subjects:
                return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
            messages = self.problems(subject, body["schema"])
            return 200, {"is_compatible": not messages, "messages": messages}
        return 404, {"error_code": 404, "message": "no such endpoint"}

    def problems(self, subject: str, text: str) -> list[str]:
        mode = Compatibility(self.config.get(subject, "BACKWARD"))  # Confluent's default
        latest = self.texts[self.subjects[subject][-1]]
        return check_compatible(parse(text), parse(latest), mode)

    def register(self, subject: str, body: Any) -> tuple[int, Any]:
        if body.get("schemaType", "AVRO") != "AVRO":
            return 422, {"error_code": 42201, "message": "unsupported schema type"}
        text = body["schema"]
        if subject in self.subjects and (messages := self.problems(subject, text)):
            return 409, {
                "error_code": 409,
                "message": "Schema being registered is incompatible: " + "; ".join(messages),
            }
        schema_id = self.ids.setdefault(text, len(self.ids) + 1)
        self.texts[schema_id] = text
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return 200, {"id": schema_id}


@pytest.fixture
def registry() -> Iterator[tuple[FakeRegistry, str]]:
    """A fake registry on a free port, and its URL."""
    state = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def do(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            with state.lock:
                state.requests.append(
                    (
                        self.command,
                        self.path,
                        self.headers.get("Content-Type"),
                        self.headers.get("Authorization"),
                    )
                )
                status, answer = state.handle(self.command, self.path, orjson.loads(raw) if raw else None)
            payload = orjson.dumps(answer)
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do  # noqa: N815 - BaseHTTPRequestHandler's method names

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval: shutdown() waits for the serving loop to notice, up to one interval.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_subjects_are_per_tenant_and_event_type() -> None:
    """`<prefix>.<event type>`: each type keeps its own version history."""
    assert subject_name("bus", "order.placed") == "bus.order.placed"
    assert (
        SchemaRegistry("http://registry:8081", prefix="acme").subject("order.placed") == "acme.order.placed"
    )


def test_register_sets_full_compatibility_and_caches_the_id(registry: tuple[FakeRegistry, str]) -> None:
    """The subject is set to FULL, the schema registered once, its id cached for later calls."""
    state, url = registry
    client = SchemaRegistry(url)
    first = client.register("order.placed", V1)
    assert client.register("order.placed", V1) == first
    assert state.config == {"bus.order.placed": "FULL"}
    posts = [r for r in state.requests if r[0] == "POST"]
    assert posts == [("POST", "/subjects/bus.order.placed/versions", CONTENT_TYPE, None)]
    assert state.texts[first] == V1.text


@pytest.mark.parametrize(
    ("operator", "kept"),
    [
        ("FULL_TRANSITIVE", "FULL_TRANSITIVE"),
        ("FULL", "FULL"),
        ("BACKWARD", "FULL"),
        ("FORWARD_TRANSITIVE", "FULL_TRANSITIVE"),
        ("NONE", "FULL"),
    ],
)
def test_register_keeps_a_compatibility_at_least_as_strict_as_full(
    registry: tuple[FakeRegistry, str], operator: str, kept: str
) -> None:
    """A subject's own setting is read first; bus only ever makes it stricter, never weaker."""
    state, url = registry
    state.config["bus.order.placed"] = operator
    SchemaRegistry(url).register("order.placed", V1)
    assert state.config == {"bus.order.placed": kept}
    puts = [r for r in state.requests if r[0] == "PUT"]
    assert len(puts) == (0 if kept == operator else 1)


def test_a_stricter_setting_spares_a_user_without_config_permission(
    registry: tuple[FakeRegistry, str],
) -> None:
    """With FULL_TRANSITIVE set by the operator, bus needs no permission to alter the config."""
    state, url = registry
    state.config["bus.order.placed"] = "FULL_TRANSITIVE"
    state.denied["PUT"] = "User is denied operation AlterConfigs on Subject: bus.order.placed"
    assert SchemaRegistry(url).register("order.placed", V1) == 1


def test_a_denied_config_call_says_which_call_and_the_fix(registry: tuple[FakeRegistry, str]) -> None:
    """403 on PUT /config keeps the registry's message and offers both ways out."""
    state, url = registry
    state.denied["PUT"] = "User is denied operation AlterConfigs on Subject: bus.order.placed"
    with pytest.raises(ConfigError) as caught:
        SchemaRegistry(url).register("order.placed", V1)
    message = str(caught.value)
    assert "PUT /config/bus.order.placed" in message
    assert "denied operation AlterConfigs" in message
    assert "grant" in message
    assert "set its compatibility to FULL (or stricter) yourself" in message
    assert "credentials" not in message


def test_a_compatible_version_gets_a_new_id_and_both_decode(registry: tuple[FakeRegistry, str]) -> None:
    """v2 (an added defaulted field) registers; events written with either decode via the registry."""
    _, url = registry
    client = SchemaRegistry(url)
    v1_id = client.register("order.placed", V1)
    v2_id = client.register("order.placed", V2)
    assert v2_id != v1_id
    reader = SchemaRegistry(url)  # a consumer with an empty cache
    event = CloudEvent.create(
        id="1", source="/shop", type="order.placed", data={"id": "o-1", "quantity": 2, "note": "x"}
    )
    typed = to_avro_event(event, V2, registry_url=url, schema_id=v2_id)
    ref = parse_dataschema(typed.dataschema or "")
    assert isinstance(ref, RegistryRef)
    writer = reader.writer_schema(ref)
    assert writer.fingerprint == V2.fingerprint
    assert from_avro_event(typed, writer, reader_schema=V1).data == {"id": "o-1", "quantity": 2}


def test_an_incompatible_version_is_refused_when_registered(registry: tuple[FakeRegistry, str]) -> None:
    """Removing a field without default breaks v1 readers: the registry's 409 is a ManifestError."""
    _, url = registry
    client = SchemaRegistry(url)
    client.register("order.placed", V1)
    assert client.check("order.placed", V2) == []
    assert client.check("order.placed", V3_BREAKING) != []
    with pytest.raises(ManifestError) as caught:
        client.register("order.placed", V3_BREAKING)
    assert caught.value.path == "schemas.order.placed"
    assert "incompatible" in caught.value.reason
    assert "data.quantity" in caught.value.reason


def test_ensure_compatible_refuses_what_register_would_and_registers_nothing(
    registry: tuple[FakeRegistry, str],
) -> None:
    """`bus apply`'s check: under FULL (set first, as register does) removing a field without a default
    is a ManifestError naming the field; a compatible version passes; neither is registered."""
    state, url = registry
    SchemaRegistry(url).register("order.placed", V1, compatibility=None)  # the subject stays BACKWARD
    client = SchemaRegistry(url)
    with pytest.raises(ManifestError) as caught:
        client.ensure_compatible("order.placed", V3_BREAKING)
    assert caught.value.path == "schemas.order.placed"
    assert "incompatible" in caught.value.reason
    assert "data.quantity" in caught.value.reason
    client.ensure_compatible("order.placed", V2)
    client.ensure_compatible("order.new", V3_BREAKING)  # no version yet: anything goes
    assert state.config["bus.order.placed"] == "FULL"
    assert state.subjects == {"bus.order.placed": [1]}


def test_check_before_the_first_version_is_compatible(registry: tuple[FakeRegistry, str]) -> None:
    """A subject with no versions yet accepts anything."""
    _, url = registry
    assert SchemaRegistry(url).check("order.new", V1) == []


def test_schemas_by_id_are_fetched_once_across_threads(registry: tuple[FakeRegistry, str]) -> None:
    """Gateway threads share one client; after the first fetch an id is served from the cache."""
    state, url = registry
    schema_id = SchemaRegistry(url).register("order.placed", V1)
    client = SchemaRegistry(url)
    assert client.schema(schema_id).fingerprint == V1.fingerprint
    with ThreadPoolExecutor(max_workers=8) as pool:
        fingerprints = set(pool.map(lambda _: client.schema(schema_id).fingerprint, range(64)))
    assert fingerprints == {V1.fingerprint}
    gets = [r for r in state.requests if r[0] == "GET" and r[1].startswith("/schemas/ids/")]
    assert len(gets) == 1
    body = encode(V1, {"id": "o-1", "quantity": 1})
    assert decode(client.schema(schema_id), body, max_bytes=100, max_items=10) == {"id": "o-1", "quantity": 1}


def test_an_unknown_id_is_an_invalid_event(registry: tuple[FakeRegistry, str]) -> None:
    """An event naming an id the registry does not have is refused on its dataschema."""
    _, url = registry
    with pytest.raises(InvalidEvent) as caught:
        SchemaRegistry(url).schema(999)
    assert caught.value.field == "dataschema"
    assert "999" in caught.value.reason


def test_another_registry_named_in_an_event_is_never_fetched(registry: tuple[FakeRegistry, str]) -> None:
    """bus looks ids up in its own registry only: a dataschema naming another host is refused."""
    state, url = registry
    with pytest.raises(InvalidEvent, match="names the schema registry"):
        SchemaRegistry(url).writer_schema(RegistryRef(registry_url="http://169.254.169.254", schema_id=1))
    assert state.requests == []


def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_uris(
    registry: tuple[FakeRegistry, str],
) -> None:
    """user:password@ in the URL is sent as basic auth and never appears in dataschema or messages."""
    state, url = registry
    client = SchemaRegistry(url.replace("http://", "http://key:s%40cret@"))
    client.register("order.placed", V1)
    assert client.url == url
    expected = "Basic " + base64.b64encode(b"key:s@cret").decode()
    assert {r[3] for r in state.requests} == {expected}


def test_server_errors_are_retriable_bus_errors(registry: tuple[FakeRegistry, str]) -> None:
    """5xx answers and unreachable registries raise a retriable BusError naming the registry."""
    state, url = registry
    state.fail_with = 503
    with pytest.raises(BusError) as caught:
        SchemaRegistry(url).schema(1)
    assert caught.value.retriable
    assert url in str(caught.value)
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BusError) as unreachable:
        SchemaRegistry(closed, timeout=2).schema(1)
    assert unreachable.value.retriable


def test_refused_credentials_are_a_config_error(registry: tuple[FakeRegistry, str]) -> None:
    """401 means the configured credentials are wrong: a ConfigError saying so."""
    state, url = registry
    state.fail_with = 401
    with pytest.raises(ConfigError, match="refused the credentials"):
        SchemaRegistry(url).schema(1)


@pytest.mark.parametrize("url", ["ftp://registry", "registry:8081", "http://", "http://host:port"])
def test_bad_urls_are_config_errors(url: str) -> None:
    """Only http(s) URLs with a host are accepted."""
    with pytest.raises(ConfigError):
        SchemaRegistry(url)

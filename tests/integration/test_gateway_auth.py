"""RELIABILITY S6-S8 on the real broker: credentials (401), scopes and tenants (403), rates (429)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from bus import naming
from bus.kafka.admin import ensure_topics
from bus.manifest import parse
from bus.topology import ingress_topics
from gateway.app import create_app
from gateway.settings import GatewaySettings, authenticator
from tests.support import KafkaEnv, unique

SHOP_KEY, OTHER_KEY, FAST_KEY, OPEN_KEY, RELAY_KEY = (
    "shop-key-0123456789abcdef",
    "other-key-0123456789abcdef",
    "fast-key-0123456789abcdef",
    "open-key-0123456789abcdef",
    "relay-key-0123456789abcdef",
)
JWT_SECRET = b"j" * 32


def _client(kafka: KafkaEnv, http: dict[str, Any], environ: dict[str, str]) -> tuple[TestClient, str]:
    settings = kafka.settings(kafka.prefix())
    ensure_topics(settings, ingress_topics(settings.prefix))
    manifest = parse({"prefix": settings.prefix, "sources": {"http": http}})
    auth, _ = authenticator(environ, manifest.http_auth, default_tenant=settings.prefix)
    return TestClient(create_app(GatewaySettings(kafka=settings, auth=auth))), naming.ingress_topic(
        settings.prefix
    )


@pytest.fixture
def keyed(kafka: KafkaEnv) -> Iterator[tuple[TestClient, str]]:
    """A gateway that takes scoped API keys: shop (app://shop/*, order.*), other (another tenant),
    fast (rate-limited), open (no scopes) and relay (granted the platform's timer type)."""
    http = {
        "auth": "api_keys",
        "keys": [
            {"id": "shop", "secret_env": "SHOP_KEY", "sources": ["app://shop/*"], "types": ["order.*"]},
            {"id": "other", "secret_env": "OTHER_KEY", "tenant": "someone_else"},
            {"id": "fast", "secret_env": "FAST_KEY", "rate": 5, "burst": 5},
            {"id": "open", "secret_env": "OPEN_KEY"},
            {"id": "relay", "secret_env": "RELAY_KEY", "types": ["bus.timer.*", "order.*"]},
        ],
    }
    keys = {"SHOP_KEY": SHOP_KEY, "OTHER_KEY": OTHER_KEY, "FAST_KEY": FAST_KEY}
    client, ingress = _client(kafka, http, {**keys, "OPEN_KEY": OPEN_KEY, "RELAY_KEY": RELAY_KEY})
    with client:
        yield client, ingress


def _post(client: TestClient, key: str | None, *events: dict[str, Any], bearer: bool = True) -> Any:
    headers = {"content-type": "application/cloudevents-batch+json"}
    if key is not None:
        headers.update({"authorization": f"Bearer {key}"} if bearer else {"x-api-key": key})
    return client.post("/events", content=orjson.dumps(list(events)), headers=headers)


def _event(source: str = "app://shop/web", type_: str = "order.placed") -> dict[str, Any]:
    return {"specversion": "1.0", "id": unique("ev"), "source": source, "type": type_}


def test_s6_missing_invalid_and_revoked_keys_get_401(kafka: KafkaEnv, keyed: tuple[TestClient, str]) -> None:
    """Without a key, with a wrong one or a revoked one, the answer is 401; nothing is published."""
    client, ingress = keyed
    for key in (None, "not-a-key-0123456789", "revoked-key-0123456789abcdef"):
        response = _post(client, key, _event())
        assert response.status_code == 401, key
        assert response.headers["www-authenticate"] == "Bearer"
    assert _post(client, SHOP_KEY, _event(), bearer=False).status_code == 202, "x-api-key works too"
    assert len(kafka.read_exactly(ingress, 1)) == 1


def test_s7_scopes_and_tenants_are_enforced(kafka: KafkaEnv, keyed: tuple[TestClient, str]) -> None:
    """A key outside its sources, types or tenant gets 403 naming the field; nothing of it is published."""
    client, ingress = keyed
    cases = [
        (SHOP_KEY, [_event(source="app://billing/x")], "source"),
        (SHOP_KEY, [_event(type_="user.deleted")], "type"),
        (SHOP_KEY, [_event(), _event(type_="user.deleted")], "[1].type"),
        (OTHER_KEY, [_event()], "tenant"),
    ]
    for key, events, field in cases:
        response = _post(client, key, *events)
        assert response.status_code == 403, field
        assert response.json()["field"] == field
    assert kafka.read_all(ingress) == []


def test_platform_events_are_refused_unless_a_key_is_granted_them(
    kafka: KafkaEnv, keyed: tuple[TestClient, str]
) -> None:
    """Types `bus.*` and sources `bus://*` are the platform's own: even a key without scopes gets
    403 naming the field, and only a key whose globs name the namespace may relay them."""
    client, ingress = keyed
    namespace, outside = "in the platform's namespace", "is not allowed for key 'relay'"
    cases = [
        (OPEN_KEY, [_event(type_="bus.function.result")], "type", namespace),
        (OPEN_KEY, [_event(source="bus://bus/functions/pay")], "source", namespace),
        (OPEN_KEY, [_event(), _event(type_="bus.timer.fired")], "[1].type", namespace),
        (RELAY_KEY, [_event(type_="bus.function.result")], "type", outside),  # beyond its grant
    ]
    for key, events, field, reason in cases:
        response = _post(client, key, *events)
        assert response.status_code == 403, (field, response.json())
        assert response.json()["field"] == field
        assert reason in response.json()["reason"], response.json()
    assert kafka.read_all(ingress) == []
    relayed = _event(source="app://scheduler", type_="bus.timer.fired")
    assert _post(client, RELAY_KEY, relayed).status_code == 202
    (record,) = kafka.read_exactly(ingress, 1)
    assert dict(record.headers())["ce_type"] == b"bus.timer.fired"


def test_without_authentication_platform_events_are_refused(kafka: KafkaEnv) -> None:
    """With authentication off, an event in the platform's namespace gets 403 and the fix; the
    invoke endpoint still makes its own `bus.function.invoked` event of a plain body."""
    client, ingress = _client(kafka, {}, {})
    with client:
        response = _post(client, None, _event(type_="bus.object.created"))
        assert response.status_code == 403
        assert response.json()["field"] == "type"
        assert "turn on authentication" in response.json()["reason"]
        assert _post(client, None, _event()).status_code == 202
    assert len(kafka.read_exactly(ingress, 1)) == 1


def test_s8_a_bursting_key_gets_429_and_others_are_unaffected(
    kafka: KafkaEnv, keyed: tuple[TestClient, str]
) -> None:
    """Ten times its burst at once: the fast key gets 429 + Retry-After; the shop key is not limited."""
    client, ingress = keyed
    statuses = [_post(client, FAST_KEY, _event()) for _ in range(50)]
    refused = [r for r in statuses if r.status_code == 429]
    assert 0 < len(refused) < 50
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(_post(client, SHOP_KEY, _event()).status_code == 202 for _ in range(10))
    assert _post(client, FAST_KEY, *[_event() for _ in range(6)]).status_code == 413, "a batch over the burst"
    accepted = sum(r.status_code == 202 for r in statuses) + 10
    assert len(kafka.read_exactly(ingress, accepted)) == accepted


def _jwt(claims: dict[str, Any], *, alg: str = "HS256", secret: bytes = JWT_SECRET) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    head = b64(orjson.dumps({"alg": alg, "typ": "JWT"}))
    body = b64(orjson.dumps(claims))
    signature = (
        b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()) if alg != "none" else ""
    )
    return f"{head}.{body}.{signature}"


def test_s6_jwts_are_checked(kafka: KafkaEnv) -> None:
    """A valid HS256 token publishes; alg none, expired, wrong audience or wrong secret get 401."""
    http = {"auth": "jwt", "jwt": {"secret_env": "JWT_SECRET", "audience": "bus"}}
    client, ingress = _client(kafka, http, {"JWT_SECRET": JWT_SECRET.decode()})
    now = int(time.time())
    settings_prefix = ingress.split(".")[0]
    good = {
        "sub": "svc",
        "aud": "bus",
        "exp": now + 60,
        "tenant": settings_prefix,
        "sources": [],
        "types": [],
    }
    with client:
        assert _post(client, _jwt(good), _event()).status_code == 202
        for token in (
            _jwt(good, alg="none"),
            _jwt({**good, "exp": now - 120}),
            _jwt({**good, "aud": "someone-else"}),
            _jwt(good, secret=b"x" * 32),
        ):
            assert _post(client, token, _event()).status_code == 401
    assert len(kafka.read_exactly(ingress, 1)) == 1

"""Secret variables the gateway's environment lacks: each item fails closed, never the whole manifest
(which would keep an older, more open configuration), and never open."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from bus.auth import ApiKeys, FailClosed, JwtVerifier
from bus.cli_rules import unset_secrets
from bus.control import Applied, encode
from bus.errors import ConfigError
from bus.kafka.control_store import ControlWatcher
from bus.kafka_binding import Record
from bus.manifest import parse
from bus.settings import KafkaSettings
from bus.signatures import sign
from gateway.settings import GatewaySettings, load
from tests.support import serving_gateway

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notifications"
MINIO_BODY = (FIXTURES / "minio_webhook_put.json").read_bytes()
SHOP_KEY, OTHER_KEY = "shop-key-0123456789abcdef", "other-key-0123456789abcdef"
EVENT = {"specversion": "1.0", "id": "e-1", "source": "app://shop/web", "type": "order.placed"}


def _manifest(**http: Any) -> dict[str, Any]:
    return {
        "sources": {
            "http": http or {"auth": "none"},
            "object_stores": [
                {"name": "uploads", "provider": "minio", "secret_env": "UPLOADS_WEBHOOK_SECRET"}
            ],
        }
    }


def _settings(environ: dict[str, str], doc: dict[str, Any]) -> GatewaySettings:
    manifest = parse(doc)
    return load(environ, object_stores=manifest.object_stores, http_auth=manifest.http_auth)


KEYS = {
    "auth": "api_keys",
    "keys": [{"id": "shop", "secret_env": "SHOP_KEY"}, {"id": "other", "secret_env": "OTHER_KEY"}],
}


def test_a_missing_key_variable_leaves_that_key_out_and_keeps_the_others() -> None:
    """Of two keys, the one whose variable is unset is left out; the other authenticates; both the
    missing key and the missing webhook secret are reported, by variable name only."""
    settings = _settings({"SHOP_KEY": SHOP_KEY}, _manifest(**KEYS))
    assert isinstance(settings.auth, ApiKeys)
    assert len(settings.auth) == 1
    assert settings.auth.authenticate({"x-api-key": SHOP_KEY}).key_id == "shop"
    assert {item.variable for item in settings.unusable} == {"OTHER_KEY", "UPLOADS_WEBHOOK_SECRET"}
    assert all(item.missing and "gateway's environment" in item.reason for item in settings.unusable)
    assert settings.webhook_secrets == {}
    assert [item.variable for item in settings.webhook_missing["minio"]] == ["UPLOADS_WEBHOOK_SECRET"]


def test_with_no_usable_key_every_request_is_refused_naming_the_variables() -> None:
    """auth: api_keys whose keys are all missing (or too short) refuses everything, never auth off."""
    settings = _settings({"OTHER_KEY": "short"}, _manifest(**KEYS))
    assert isinstance(settings.auth, FailClosed)
    assert "SHOP_KEY" in settings.auth.reason
    assert "shorter than 16" in settings.auth.reason
    assert [item.missing for item in settings.unusable if item.variable != "UPLOADS_WEBHOOK_SECRET"] == [
        True,
        False,
    ]
    environment_keys = _settings({}, _manifest(auth="api_keys"))
    assert isinstance(environment_keys.auth, FailClosed)
    assert "BUS_API_KEYS" in environment_keys.auth.reason


def test_a_missing_or_short_jwt_secret_refuses_every_token() -> None:
    """auth: jwt without its secret variable (or with a short one) fails closed, naming it."""
    jwt = {"auth": "jwt", "jwt": {"secret_env": "JWT_SECRET", "audience": "bus"}}
    for environ in ({}, {"JWT_SECRET": "too-short"}):
        settings = _settings(environ, _manifest(**jwt))
        assert isinstance(settings.auth, FailClosed), environ
        assert "JWT_SECRET" in settings.auth.reason
    assert isinstance(_settings({"JWT_SECRET": "j" * 32}, _manifest(**jwt)).auth, JwtVerifier)


class _Keeping:
    """A publisher that keeps what it is given."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Record]] = []

    async def publish(self, records: Sequence[tuple[str, Record]]) -> None:
        self.published.extend(records)

    async def connected(self, *, wait: float) -> bool:
        return True


def test_the_gateway_refuses_what_fails_closed_and_logs_each_variable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Events without a key and notifications of the provider lacking its secret get 401 naming the
    variable; the usable key publishes; each missing variable is one error line."""
    publisher = _Keeping()
    settings = _settings({"SHOP_KEY": SHOP_KEY}, _manifest(**KEYS))
    headers = sign(b"any-secret-0123456789", MINIO_BODY, timestamp=int(time.time()), delivery="d-1")

    async def scenario() -> None:
        async with serving_gateway(publisher, settings) as client:
            events = {"content-type": "application/cloudevents+json"}
            body = orjson.dumps(EVENT)
            assert (await client.post("/events", content=body, headers=events)).status_code == 401
            other = {**events, "x-api-key": OTHER_KEY}
            assert (await client.post("/events", content=body, headers=other)).status_code == 401
            shop = {**events, "x-api-key": SHOP_KEY}
            assert (await client.post("/events", content=body, headers=shop)).status_code == 202
            for sent in ({}, headers):
                refused = await client.post("/notifications/minio", content=MINIO_BODY, headers=sent)
                assert refused.status_code == 401
                assert "set UPLOADS_WEBHOOK_SECRET" in refused.json()["reason"]
                assert "gateway's environment" in refused.json()["reason"]

    with caplog.at_level(logging.INFO, logger="bus.gateway"):
        asyncio.run(scenario())
    assert len(publisher.published) == 1
    lines = [r for r in caplog.records if r.getMessage() == "secret_missing"]
    assert sorted(r.fields["variable"] for r in lines) == ["OTHER_KEY", "UPLOADS_WEBHOOK_SECRET"]  # type: ignore[attr-defined]
    assert all(r.levelno == logging.ERROR for r in lines)
    assert SHOP_KEY not in caplog.text


def test_a_refused_control_record_is_an_error_naming_its_version(caplog: pytest.LogCaptureFixture) -> None:
    """A record the gateway cannot take is logged at error level with its version and the reason."""

    def refuse(applied: Applied) -> None:
        raise ConfigError("schema order.placed is incompatible")

    watcher = ControlWatcher(KafkaSettings(), "shop", start=0, on_change=refuse)
    applied = Applied(
        version=4, applied_at="2026-12-04T00:00:00Z", digest="d", document={}, base_dir=".", rules=()
    )

    class Message:
        def value(self) -> bytes:
            return encode(applied)

        def offset(self) -> int:
            return 7

    with caplog.at_level(logging.INFO, logger="bus.control"):
        watcher._apply(Message())
    (record,) = [r for r in caplog.records if r.getMessage() == "control_record_refused"]
    assert record.levelno == logging.ERROR
    assert record.fields["version"] == 4  # type: ignore[attr-defined]
    assert "incompatible" in record.fields["reason"]  # type: ignore[attr-defined]


def test_bus_apply_names_each_secret_variable_unset_where_it_runs() -> None:
    """The variables a manifest names are listed once each, in order; those unset or empty here are
    the ones `bus apply` warns about."""
    manifest = parse(_manifest(**KEYS))
    assert manifest.secret_variables() == ("UPLOADS_WEBHOOK_SECRET", "SHOP_KEY", "OTHER_KEY")
    assert unset_secrets(manifest, {"SHOP_KEY": SHOP_KEY, "OTHER_KEY": ""}) == [
        "UPLOADS_WEBHOOK_SECRET",
        "OTHER_KEY",
    ]
    assert parse(_manifest(auth="api_keys")).secret_variables() == ("UPLOADS_WEBHOOK_SECRET", "BUS_API_KEYS")
    jwt = _manifest(auth="jwt", jwt={"secret_env": "JWT_SECRET", "audience": "bus"})
    assert parse(jwt).secret_variables() == ("UPLOADS_WEBHOOK_SECRET", "JWT_SECRET")


def test_a_provider_with_one_store_lacking_its_secret_still_takes_the_other_stores_signed() -> None:
    """Two minio stores, one secret unset: deliveries signed with the set secret are published; the
    others get 401 naming the unset variable too."""
    doc = _manifest()
    doc["sources"]["object_stores"].append({"name": "media", "provider": "minio", "secret_env": "MEDIA"})
    settings = _settings({"MEDIA": "media-secret-0123456789"}, doc)
    good = sign(b"media-secret-0123456789", MINIO_BODY, timestamp=int(time.time()), delivery="d-1")
    bad = sign(b"another-secret-0123456789", MINIO_BODY, timestamp=int(time.time()), delivery="d-2")
    publisher = _Keeping()

    async def scenario() -> None:
        async with serving_gateway(publisher, settings) as client:
            ok = await client.post("/notifications/minio", content=MINIO_BODY, headers=good)
            assert ok.status_code == 202
            refused = await client.post("/notifications/minio", content=MINIO_BODY, headers=bad)
            assert refused.status_code == 401
            assert "does not match" in refused.json()["reason"]
            assert "set UPLOADS_WEBHOOK_SECRET" in refused.json()["reason"]

    asyncio.run(scenario())
    assert len(publisher.published) == 1

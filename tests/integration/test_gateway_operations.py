"""Gateway operations on the real broker: `/metrics` counts what happened, `/openapi.json` matches it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from httpx import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from bus import naming
from bus.kafka.admin import ensure_topics
from bus.topology import ingress_topics
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support import KafkaEnv

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notifications"
STRUCTURED = {"content-type": "application/cloudevents+json"}
GOOD = {"specversion": "1.0", "id": "ops-1", "source": "/tests/ops", "type": "test.ops"}
BAD = {"specversion": "1.0", "id": "ops-2", "source": "/tests/ops"}  # no type


@dataclass
class Gateway:
    """A test client that remembers the status of every answer, by route template and method."""

    client: TestClient
    ingress: str
    seen: set[tuple[str, str, int]] = field(default_factory=set)
    answers: list[tuple[str, str, Response]] = field(default_factory=list)

    def call(self, method: str, template: str, path: str | None = None, **kwargs: Any) -> Response:
        """Send a request for `template` (to `path` when the template has parameters); record it."""
        response: Response = self.client.request(method, path or template, **kwargs)
        self.seen.add((template, method.lower(), response.status_code))
        self.answers.append((template, method.lower(), response))
        return response


@pytest.fixture
def gateway(kafka: KafkaEnv) -> Iterator[Gateway]:
    """The gateway app on the real broker, with an ingress topic of this test's own."""
    settings = kafka.settings(kafka.prefix())
    ensure_topics(settings, ingress_topics(settings.prefix))
    with TestClient(create_app(GatewaySettings(kafka=settings))) as client:
        yield Gateway(client, naming.ingress_topic(settings.prefix))


def _samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line of a text exposition."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def _post_good_and_bad(gateway: Gateway) -> None:
    good = gateway.call("POST", "/events", content=orjson.dumps(GOOD), headers=STRUCTURED)
    assert good.status_code == 202, good.text
    bad = gateway.call("POST", "/events", content=orjson.dumps(BAD), headers=STRUCTURED)
    assert bad.status_code == 400, bad.text


def test_metrics_count_requests_published_events_rejects_and_latency(
    kafka: KafkaEnv, gateway: Gateway
) -> None:
    """One good and one bad event show up by status, as one published event, one reject and two timings."""
    _post_good_and_bad(gateway)
    assert len(kafka.read_exactly(gateway.ingress, 1)) == 1  # the rejected event published nothing
    response = gateway.call("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = _samples(response.text)
    assert samples['bus_gateway_requests_total{route="/events",status="202"}'] == 1
    assert samples['bus_gateway_requests_total{route="/events",status="400"}'] == 1
    assert samples['bus_gateway_events_published_total{source_kind="http"}'] == 1
    assert samples['bus_gateway_rejects_total{reason="invalid_event"}'] == 1
    assert samples['bus_gateway_request_seconds_count{route="/events"}'] >= 2
    assert samples['bus_gateway_request_seconds_bucket{route="/events",le="+Inf"}'] >= 2
    for line in ("# TYPE bus_gateway_requests_total counter", "# TYPE bus_gateway_request_seconds histogram"):
        assert line in response.text.splitlines()


def test_metrics_label_routes_by_template_and_count_notification_events(gateway: Gateway) -> None:
    """A notification is counted under /notifications/{provider}, not its path; its events as notification."""
    body = (FIXTURES / "s3_put.json").read_bytes()
    accepted = gateway.call("POST", "/notifications/{provider}", "/notifications/s3", content=body)
    assert accepted.status_code == 202, accepted.text
    published = len(accepted.json()["ids"])
    unknown = gateway.call("POST", "/notifications/{provider}", "/notifications/gcs", content=body)
    assert unknown.status_code == 404
    samples = _samples(gateway.call("GET", "/metrics").text)
    route = 'route="/notifications/{provider}"'
    assert samples[f'bus_gateway_requests_total{{{route},status="202"}}'] == 1
    assert samples[f'bus_gateway_requests_total{{{route},status="404"}}'] == 1
    assert samples['bus_gateway_events_published_total{source_kind="notification"}'] == published
    assert samples['bus_gateway_rejects_total{reason="unknown_provider"}'] == 1
    assert not any("/notifications/s3" in series or "/notifications/gcs" in series for series in samples)


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    target: Any = doc
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    assert isinstance(target, dict)
    return target


def _check_body(doc: dict[str, Any], documented: dict[str, Any], response: Response) -> None:
    """A JSON answer carries the documented schema's required members, and only its properties."""
    media = response.headers["content-type"].split(";", 1)[0]
    content = documented.get("content", {})
    assert any(key.split(";", 1)[0] == media for key in content), (media, list(content))
    if media != "application/json":
        return
    schema = _resolve(doc, content["application/json"]["schema"])
    answer = response.json()
    assert set(schema.get("required", ())) <= set(answer), (answer, schema)
    if "properties" in schema and schema.get("additionalProperties") is not True:
        assert set(answer) <= set(schema["properties"]), (answer, schema)
    if "error" in answer:
        assert answer["error"] in schema["properties"]["error"]["enum"]


def test_openapi_documents_every_route_and_every_status_observed(gateway: Gateway) -> None:
    """/openapi.json is OpenAPI 3.1, lists exactly the served routes, and every status they answered."""
    body = (FIXTURES / "s3_put.json").read_bytes()
    _post_good_and_bad(gateway)
    binary = gateway.call("POST", "/events", content=b"{}", headers={"content-type": "application/json"})
    assert binary.status_code == 400  # binary mode without ce-* headers
    too_large = gateway.call("POST", "/events", content=b"x" * (1_048_576 + 1), headers=STRUCTURED)
    assert too_large.status_code == 413
    for provider, content, status in [("s3", body, 202), ("s3", b"[]", 400), ("gcs", body, 404)]:
        response = gateway.call(
            "POST", "/notifications/{provider}", f"/notifications/{provider}", content=content
        )
        assert response.status_code == status, response.text
    for path in ("/healthz", "/readyz", "/metrics"):
        assert gateway.call("GET", path).status_code == 200
    response = gateway.call("GET", "/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = orjson.loads(response.content)
    assert doc["openapi"] == "3.1.0"

    app = gateway.client.app
    assert hasattr(app, "routes")
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette answers HEAD wherever it answers GET
    }
    documented = {(path, method) for path, operations in doc["paths"].items() for method in operations}
    assert served == documented
    assert len(served) == len(app.routes)

    for template, method, status in sorted(gateway.seen):
        assert str(status) in doc["paths"][template][method]["responses"], (template, method, status)
    assert {(t, m, s) for t, m, s in gateway.seen if s in (202, 400, 404)} >= {
        ("/events", "post", 202),
        ("/events", "post", 400),
        ("/notifications/{provider}", "post", 404),
    }
    for template, method, answer in gateway.answers:
        responses = doc["paths"][template][method]["responses"]
        _check_body(doc, responses[str(answer.status_code)], answer)

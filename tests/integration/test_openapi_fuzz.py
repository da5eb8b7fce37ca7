"""RELIABILITY F1: schemathesis against `/openapi.json` of a real gateway process on the real broker.

Every operation gets up to 50 generated requests, valid and invalid, from a fixed seed: no answer
is a 5xx, and each one's status, content type and body are the ones the document lists.

The schema is built from `gateway.openapi.document` at import and checked equal to what the process
serves: `schemathesis.pytest.from_fixture` (4.32) reads `Function._nodeid`, which pytest 9 removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import document
from gateway.settings import GatewaySettings
from tests.support import GatewayProcess, KafkaEnv

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20_240_601,
        "generation": {"max-examples": 50, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    }
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def gateway(kafka: KafkaEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The gateway as deployed: default limits and deadlines, no credentials asked."""
    process = GatewayProcess(kafka, kafka.prefix(), tmp_path_factory.mktemp("fuzz"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


DOCUMENT = document(max_body_bytes=GatewaySettings().max_body_bytes)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def test_the_fuzzed_document_is_the_one_served(gateway: GatewayProcess) -> None:
    """The gateway serves, at `/openapi.json`, exactly the document the requests are generated from."""
    served = httpx.get(f"{gateway.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


@schema.parametrize()
def test_every_answer_is_documented_and_none_is_a_server_error(
    case: Case[Any], gateway: GatewayProcess
) -> None:
    """Generated requests get no 5xx, and only documented statuses, content types and bodies."""
    case.call_and_validate(base_url=gateway.url, checks=CHECKS, timeout=30)


@pytest.mark.parametrize(
    ("method", "path", "response"),
    [
        ("GET", "/events", "MethodNotAllowed"),
        ("PUT", "/notifications/s3", "MethodNotAllowed"),
        ("DELETE", "/healthz", "MethodNotAllowed"),
        ("GET", "/nope", "NotFound"),
        ("POST", "/functions/f/invoke/extra", "NotFound"),
    ],
)
def test_unknown_paths_and_methods_get_the_documented_problem(
    gateway: GatewayProcess, method: str, path: str, response: str
) -> None:
    """A path or method no operation has is answered as `components.responses` says: a JSON problem."""
    answer = httpx.request(method, f"{gateway.url}{path}", timeout=10)
    declared = DOCUMENT["components"]["responses"][response]
    assert answer.status_code == {"NotFound": 404, "MethodNotAllowed": 405}[response]
    assert answer.headers["content-type"] == "application/json"
    jsonschema.validate(answer.json(), DOCUMENT["components"]["schemas"]["Problem"])  # error codes listed
    assert declared["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    if answer.status_code == 405:
        assert set(declared["headers"]) == {"Allow"}
        assert answer.headers["allow"]


def test_the_gateway_logged_no_error(gateway: GatewayProcess) -> None:
    """Nothing schemathesis sent made the gateway log an error or an unhandled exception."""
    log = gateway.log.read_text()
    assert "Exception in ASGI application" not in log
    assert '"level":"error"' not in log

"""The gateway's OpenAPI 3.1 description (pure): what `GET /openapi.json` serves.

Kept beside the routes it describes; `tests/integration/test_gateway_operations.py` fails when a
route is served without being described here, or answers with a status not listed.
"""

from __future__ import annotations

from typing import Any

import bus
from bus.events import STRUCTURED_CONTENT_TYPE
from bus.http_binding import BATCH_CONTENT_TYPE
from bus.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bus.notifications import PROVIDERS
from bus.signatures import DELIVERY_HEADER, SIGNATURE_HEADER

__all__ = ["ERRORS", "document"]

ERRORS = (
    "invalid_event",
    "body_too_large",
    "event_too_large",
    "invalid_signature",
    "unknown_provider",
    "duplicate_delivery",
    "delivery_in_flight",
    "kafka_unavailable",
    "kafka_error",
    "not_ready",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "batch_over_burst",
    "request_timeout",
    "incomplete_body",
    "headers_too_large",
    "invalid_http",
    "unknown_function",
    "invalid_query",
    "function_error",
    "no_reply",
    "duplicate_invocation",
    "not_found",
    "method_not_allowed",
)
"""Every `error` code a problem response of the gateway carries. `headers_too_large`, `invalid_http`
and a `request_timeout` for headers come from its HTTP server (`gateway/server.py`), before any route
runs; `incomplete_body` answers a client already gone and is only counted. `not_found` and
`method_not_allowed` answer a path or method no operation has (`components.responses`)."""
# bus.events' check of datacontenttype, in the ECMA-262 dialect JSON Schema patterns use.
_MEDIA_TYPE = r"^[A-Za-z0-9_.+-]+/[A-Za-z0-9_.+-]+([ \t]*;[\t\x20-\x7e]*)?$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Problem")}}}


def _unavailable(description: str) -> dict[str, Any]:
    answer = _problem(description)
    answer["headers"] = {
        "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
    }
    return answer


_KAFKA_DOWN = (
    "Kafka is unreachable or did not acknowledge in time (`kafka_unavailable`, `kafka_error`), or the "
    "gateway is starting or stopping (`not_ready`). Nothing was published; retry."
)


def _connection_refusals(*, body: bool) -> dict[str, Any]:
    """What the HTTP server answers before or while the request is read; it then closes the connection."""
    late = "The request line and headers did not arrive within `BUS_HEADER_TIMEOUT` (10 s by default)"
    if body:
        late += ", or the body within `BUS_BODY_TIMEOUT` (10 s by default)"
    return {
        "408": _problem(f"{late} (`request_timeout`). The connection closes."),
        "431": _problem(
            "The request line and headers are over `BUS_MAX_HEADER_BYTES` (16 KiB by default; "
            "`headers_too_large`). The connection closes."
        ),
    }


def _accepted(what: str) -> dict[str, Any]:
    return {
        "description": f"Kafka acknowledged every event ({what}); the body lists their ids.",
        "content": {"application/json": {"schema": _ref("Accepted")}},
    }


def _binary_header(attribute: str, description: str) -> dict[str, Any]:
    return {
        "name": f"ce-{attribute}",
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


def _too_large(max_body_bytes: int) -> dict[str, Any]:
    return _problem(
        f"The body is over {max_body_bytes} bytes (`body_too_large`), or an event is over Kafka's "
        "record limit (`event_too_large`, `field` names it)."
    )


def _json_ok(description: str, status: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": status}},
    }
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _events(max_body_bytes: int) -> dict[str, Any]:
    required = "Required in binary mode; ignored in structured and batch mode."
    return {
        "summary": "Publish CloudEvents",
        "description": (
            f"Binary mode (`ce-*` headers, the body is `data`, `content-type` its `datacontenttype`), "
            f"structured mode (`{STRUCTURED_CONTENT_TYPE}`: the body wins over any `ce-*` header) or a "
            f"batch (`{BATCH_CONTENT_TYPE}`, all or nothing). Answered `202` only after Kafka "
            "acknowledged every event."
        ),
        "operationId": "postEvents",
        "parameters": [
            _binary_header("specversion", f"{required} Only `1.0`."),
            _binary_header("id", required),
            _binary_header("source", f"{required} A URI-reference."),
            _binary_header("type", required),
            _binary_header("time", "Binary mode: RFC 3339 timestamp."),
            _binary_header("subject", "Binary mode: the subject (also the default partition key)."),
            _binary_header("dataschema", "Binary mode: an absolute URI."),
        ],
        "requestBody": {
            "required": False,
            "description": f"At most {max_body_bytes} bytes.",
            "content": {
                STRUCTURED_CONTENT_TYPE: {"schema": _ref("CloudEvent")},
                BATCH_CONTENT_TYPE: {"schema": {"type": "array", "minItems": 1, "items": _ref("CloudEvent")}},
                "*/*": {"schema": {"description": "Binary mode: the event's data, in any media type."}},
            },
        },
        "security": [{}, {"bearer": []}, {"apiKey": []}],
        "responses": {
            "202": _accepted("in request order"),
            "400": _problem("Not a valid CloudEvent (`invalid_event`); `field` names the attribute."),
            "401": _problem(
                "Missing, unknown, revoked or expired credential (`unauthorized`), when `sources.http` "
                "asks for API keys or JWTs."
            ),
            "403": _problem(
                "The credential may not publish this `source` or `type`, or to this tenant (`forbidden`); "
                "`field` names which. Types `bus.*` and sources `bus://*` are the platform's own: "
                "refused unless the credential's globs name them (always, without authentication)."
            ),
            **_connection_refusals(body=True),
            "413": _too_large(max_body_bytes),
            "429": _problem(
                "Over the credential's rate (`rate_limited`); wait `Retry-After` seconds. A batch larger "
                "than the burst is a 413 (`batch_over_burst`)."
            ),
            "503": _unavailable(_KAFKA_DOWN),
        },
    }


def _notifications(max_body_bytes: int) -> dict[str, Any]:
    signed = "Required when the provider's notifications are signed (`secret_env` in the manifest)."
    return {
        "summary": "Publish an object-store notification as bus.object.* events",
        "description": (
            "An S3, MinIO or Aliyun OSS notification body. Ids derive from the object and the event, so "
            "a redelivery keeps them; S3's `s3:TestEvent` is answered `202` with no ids."
        ),
        "operationId": "postNotifications",
        "parameters": [
            {
                "name": "provider",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": list(PROVIDERS)},
            },
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": False,
                "description": f"{signed} `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=...]`.",
                "schema": {"type": "string"},
            },
            {
                "name": DELIVERY_HEADER,
                "in": "header",
                "required": False,
                "description": f"{signed} Unique per delivery; 1 to 200 of `A-Z a-z 0-9 _ : -`.",
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": True,
            "description": f"The provider's JSON body, at most {max_body_bytes} bytes.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "responses": {
            "202": _accepted("none for a test event"),
            "400": _problem("Not a notification body of this provider (`invalid_event`)."),
            "401": _problem("Missing, invalid or stale signature (`invalid_signature`)."),
            "404": _problem("No such provider (`unknown_provider`)."),
            "409": _problem(
                "This delivery id was published already (`duplicate_delivery`): the sender may stop retrying."
            ),
            **_connection_refusals(body=True),
            "413": _too_large(max_body_bytes),
            "503": _unavailable(
                f"{_KAFKA_DOWN} Or this delivery id is being published by an earlier attempt "
                "(`delivery_in_flight`): retry, and a 409 then says it was stored."
            ),
        },
    }


def _invoke(max_body_bytes: int) -> dict[str, Any]:
    failed = "The handler failed (`function_error`; `error_type` and `message` say how)"
    return {
        "summary": "Invoke one function",
        "description": (
            "Publishes the event straight to the function's topic. Synchronously (the default) the "
            "answer is the function's outcome, read from this gateway replica's reply topic; the "
            "function runs once, without retries. `mode=async` answers `202` once Kafka has the "
            "event; its outcome goes to the function's destinations. The body is a CloudEvent "
            "(binary or structured mode) or, otherwise, the data of a `bus.function.invoked` event."
        ),
        "operationId": "invokeFunction",
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "mode",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["sync", "async"]},
            },
            {
                "name": "timeout",
                "in": "query",
                "required": False,
                "description": "Seconds to wait for the outcome (default: the function's timeout + 5).",
                "schema": {"type": "number", "minimum": 0.1, "maximum": 900},
            },
        ],
        "requestBody": {
            "required": False,
            "description": f"At most {max_body_bytes} bytes.",
            "content": {
                "application/json": {"schema": {}},
                STRUCTURED_CONTENT_TYPE: {"schema": _ref("CloudEvent")},
            },
        },
        "responses": {
            "200": {
                "description": "The handler's return value (JSON); `bus-event-id` names the event.",
                "content": {"application/json": {"schema": {}}},
            },
            "202": _accepted("`mode=async`"),
            "400": _problem("Not an event, or a bad `mode` or `timeout` (`invalid_event`, `invalid_query`)."),
            "401": _problem("Missing or invalid credentials (`unauthorized`)."),
            "403": _problem(
                "These credentials may not send this event here, or it is a platform event "
                "(`bus.*` types but `bus.function.invoked`, `bus://*` sources) (`forbidden`)."
            ),
            "404": _problem("No such function (`unknown_function`)."),
            "409": _problem("A call with this event id is waiting on this replica (`duplicate_invocation`)."),
            **_connection_refusals(body=True),
            "413": _too_large(max_body_bytes),
            "422": _problem(f"{failed}: it raised `DeadLetter`, refusing the event."),
            "429": _unavailable("Over this key's rate (`rate_limited`)."),
            "500": _problem(f"{failed}: it raised."),
            "502": _problem(f"{failed}: its process crashed or ran out of memory."),
            "503": _unavailable(f"{_KAFKA_DOWN} Or the handler raised `Retry` (`function_error`)."),
            "504": _problem(
                f"{failed}: past its timeout; or no outcome within `timeout` (`no_reply`): the event "
                "is published and still runs."
            ),
        },
    }


def _schemas() -> dict[str, Any]:
    # The JSON format treats a null attribute as unset, so optional attributes may be null.
    optional = {"type": ["string", "null"], "minLength": 1}
    extension = {
        "anyOf": [
            {"type": ["string", "boolean", "null"]},
            {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
        ]
    }
    return {
        "Problem": {
            "type": "object",
            "required": ["error", "reason"],
            "properties": {
                "error": {"type": "string", "enum": list(ERRORS)},
                "reason": {"type": "string", "description": "What is wrong and how to fix it."},
                "field": {"type": "string", "description": "Path of the offending attribute or item."},
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["ids"],
            "properties": {"ids": {"type": "array", "items": {"type": "string"}}},
        },
        "CloudEvent": {
            "description": (
                "A CloudEvents 1.0 event in the JSON format. Other members are extensions: names of "
                "lower-case letters and digits, values strings, 32-bit integers or booleans. Data of a "
                "non-JSON `datacontenttype` is a string or `data_base64`; JSON nests at most 64 levels."
            ),
            "type": "object",
            "required": ["specversion", "id", "source", "type"],
            "properties": {
                "specversion": {"const": "1.0"},
                "id": {"type": "string", "minLength": 1},
                "source": {"type": "string", "minLength": 1, "description": "A URI-reference."},
                "type": {"type": "string", "minLength": 1},
                "time": {**optional, "format": "date-time", "description": "RFC 3339."},
                "subject": optional,
                "datacontenttype": {**optional, "pattern": _MEDIA_TYPE},
                "dataschema": {**optional, "pattern": "^[a-zA-Z][a-zA-Z0-9+.-]*:"},
                "data": {},
                "data_base64": {"type": "string", "contentEncoding": "base64"},
            },
            "propertyNames": {"pattern": "^([a-z0-9]{1,64}|data_base64)$"},
            "additionalProperties": extension,
            "not": {"required": ["data", "data_base64"]},
        },
    }


def document(*, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the gateway's routes, for a gateway with this body limit."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bus gateway",
            "version": bus.__version__,
            "description": "CloudEvents and object-store notifications onto Kafka.",
        },
        "paths": {
            "/events": {"post": _events(max_body_bytes)},
            "/notifications/{provider}": {"post": _notifications(max_body_bytes)},
            "/functions/{name}/invoke": {"post": _invoke(max_body_bytes)},
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "operationId": "getHealthz",
                    "responses": {
                        "200": _json_ok("The process serves requests.", "ok"),
                        **_connection_refusals(body=False),
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the broker answers",
                    "operationId": "getReadyz",
                    "responses": {
                        "200": _json_ok("Kafka is reachable.", "ready"),
                        **_connection_refusals(body=False),
                        "503": _unavailable("Kafka is not reachable (`not_ready`)."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "getMetrics",
                    "responses": {
                        "200": {
                            "description": "The text exposition format 0.0.4.",
                            "content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}},
                        },
                        **_connection_refusals(body=False),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "getOpenapi",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI 3.1 description of the gateway.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_connection_refusals(body=False),
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            # No operation answers these: a path not in `paths` or a method its path lacks does.
            "responses": {
                "NotFound": _problem("No operation has this path (`not_found`)."),
                "MethodNotAllowed": {
                    **_problem("The path has no operation for this method (`method_not_allowed`)."),
                    "headers": {
                        "Allow": {"description": "The methods the path takes.", "schema": {"type": "string"}}
                    },
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key or an HS256 JWT."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }

"""The public API: what each module exports stays what users import (httpx-style guard)."""

from __future__ import annotations

import importlib

import pytest

import bus
import bus.errors
import bus.patterns

EXPECTED: dict[str, set[str]] = {
    "bus": {"BusError", "CloudEvent", "InvalidEvent", "ManifestError", "__version__"},
    "bus.auth": {
        "PLATFORM_NAMES",
        "ApiKeys",
        "AuthError",
        "FailClosed",
        "ForbiddenError",
        "JwtVerifier",
        "Principal",
        "authorize",
        "principal_from_claims",
    },
    "bus.cron": {"Cron", "parse"},
    "bus.schedules": {
        "DEFAULT_GRACE",
        "TIMER_FIRED",
        "Checkpoint",
        "Due",
        "EventTemplate",
        "Schedule",
        "due",
        "fired_event",
        "last_fired",
        "last_tick",
        "next_tick",
        "parse_schedule",
        "timing_digest",
    },
    "bus.avro": {
        "AVRO_CONTENT_TYPE",
        "DEFAULT_COMPATIBILITY",
        "DEFAULT_MAX_BYTES",
        "DEFAULT_MAX_ITEMS",
        "BookRef",
        "Compatibility",
        "RegistryRef",
        "Schema",
        "SchemaBook",
        "check_compatible",
        "decode",
        "encode",
        "frame",
        "from_avro_event",
        "is_avro",
        "load_book",
        "parse",
        "parse_dataschema",
        "platform_book",
        "registry_uri",
        "schema_uri",
        "to_avro_event",
        "unframe",
        "validate",
    },
    "bus.metrics": {"CONTENT_TYPE", "DEFAULT_BUCKETS", "Counter", "Gauge", "Histogram", "Registry"},
    "bus.notifications": {"PROVIDERS", "normalise"},
    "bus.ratelimit": {"Decision", "RateLimiter"},
    "bus.registry": {"CONTENT_TYPE", "SchemaRegistry", "subject_name"},
    "bus.signatures": {
        "DELIVERY_HEADER",
        "SIGNATURE_HEADER",
        "Delivery",
        "ReplayCache",
        "SignatureError",
        "sign",
        "verify",
    },
    "bus.patterns": {"Pattern", "PatternError", "compile"},
    "bus.errors": {
        "AuthError",
        "BusError",
        "ConfigError",
        "ForbiddenError",
        "HandlerLoadError",
        "InvalidEvent",
        "KafkaError",
        "KafkaUnavailable",
        "LocalKafkaError",
        "ManifestError",
        "PublishError",
        "RefusedError",
        "RegistryError",
        "RegistryUnavailable",
        "SignatureError",
    },
    "bus.avro_store": {"SchemaStore", "TypedReader"},
    "bus.kafka.schema_store": {"REGISTRY_URL_VARIABLE", "KafkaSchemaStore", "open_store"},
    "bus.typed_events": {"EdgeSchemas", "register_book", "typed"},
    "bus.rule_index": {"DATA", "RuleIndex"},
    "bus.decisions": {"MAX_KEYS", "Decision", "Decisions", "matching"},
    "bus.routing": {"FlowTag", "Rule", "TagSelector", "event_tags", "explain", "matching_rules", "route"},
    "bus.fanout": {"MATCHED_RULES", "by_target", "deliveries", "needs_data", "routed_record"},
    "bus.input_transform": {
        "MAX_INPUT_BYTES",
        "MAX_PATHS",
        "MAX_TEMPLATE_BYTES",
        "RESERVED_VARIABLES",
        "InputTransform",
        "compile_constant",
        "compile_transformer",
    },
    "workers": {"Context", "DeadLetter", "Retry", "load_handler"},
    "workers.signals": {"DeadLetter", "Retry"},
    "bus.scaling": {
        "Decision",
        "Observation",
        "PartitionLag",
        "ScalerState",
        "decide",
        "lag_of",
        "partitions_cap",
    },
    "workers.testing": {"HandlerError", "TestInvocation", "TestRun", "invoke", "run"},
}

MODULES_WITH_ALL = [
    "bus",
    "bus.errors",
    "bus.events",
    "bus.http_binding",
    "bus.kafka_binding",
    "bus.manifest",
    "bus.naming",
    "bus.auth",
    "bus.avro",
    "bus.avro_codec",
    "bus.avro_compat",
    "bus.avro_guard",
    "bus.avro_schema",
    "bus.avro_store",
    "bus.avro_validation",
    "bus.metrics",
    "bus.notifications",
    "bus.ratelimit",
    "bus.cron",
    "bus.schedules",
    "bus.signatures",
    "bus.patterns",
    "bus.routing",
    "bus.rule_index",
    "bus.fanout",
    "bus.input_transform",
    "bus.control",
    "bus.replay",
    "bus.router",
    "bus.collector",
    "workers",
    "workers.handlers",
    "workers.outcome",
    "workers.invocation",
    "workers.sandbox",
    "workers.testing",
    "workers.runtime",
    "workers.verdict",
    "workers.retries",
    "workers.signals",
    "workers.lanes",
    "workers.progress",
    "workers.worker",
    "bus.dlq",
    "bus.kafka.dead_letters",
    "bus.scaling",
    "bus.supervisor",
    "bus.status",
    "bus.kafka.lag",
    "bus.deploy_k8s",
]


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_all_is_as_expected(module: str) -> None:
    """__all__ of the public modules is exactly the documented set: changing it is a decision."""
    assert set(importlib.import_module(module).__all__) == EXPECTED[module]


@pytest.mark.parametrize("module", MODULES_WITH_ALL)
def test_every_exported_name_exists(module: str) -> None:
    """Every name in a module's __all__ is defined there, and none is listed twice."""
    imported = importlib.import_module(module)
    names = list(imported.__all__)
    assert len(names) == len(set(names))
    missing = [name for name in names if not hasattr(imported, name)]
    assert missing == []


def test_errors_share_one_root() -> None:
    """Every error bus exports derives from BusError, so callers can catch them all at once."""
    for name in bus.errors.__all__:
        assert issubclass(getattr(bus.errors, name), bus.errors.BusError)


def test_pattern_error_is_a_value_error_not_a_bus_error() -> None:
    """PatternError is the ValueError SPEC §5 promises for bus.patterns.compile."""
    assert issubclass(bus.patterns.PatternError, ValueError)


def test_version_is_a_string() -> None:
    """bus.__version__ is the package version text."""
    assert isinstance(bus.__version__, str)
    assert bus.__version__.count(".") == 2

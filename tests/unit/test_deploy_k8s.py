"""`bus deploy k8s` and deploy/compose.yaml: valid against the Kubernetes, KEDA and Compose schemas.

The schemas are vendored in tests/fixtures/k8s-schemas (sources and versions in its README.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml

from bus import localkafka, manifest, naming
from bus import stack as stack_module
from bus import supervisor as supervisor_module
from bus.cli import main
from bus.deploy_k8s import (
    HEADER,
    METRICS_PORT,
    WORKER_OVERHEAD_MIB,
    K8sOptions,
    Rendered,
    dump,
    kubernetes_name,
    render,
)
from bus.errors import ManifestError
from bus.manifest import Scaling
from bus.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello" / "bus.yaml"
SCHEMAS = ROOT / "tests" / "fixtures" / "k8s-schemas"
COMPOSE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
KUBERNETES_VERSIONS = ("v1.30.0", "v1.37.0")
KIND_FILES = {"ConfigMap": "configmap-v1", "Deployment": "deployment-apps-v1", "Service": "service-v1"}

SHOP = """\
prefix: shop
functions:
  make_thumbnail:
    handler: images:make_thumbnail
    partitions: 4
    memory: 1Gi
    timeout: 2m
    retry: {attempts: 4, backoff: [1s, 10s, 1m]}
    scaling: {min: 0, max: 10, lag_threshold: 50, activation_lag_threshold: 5, cooldown: 2m}
  audit:
    handler: audit:record
    partitions: 2
    retry: {attempts: 1}
    scaling: {min: 3, max: 8}
rules:
  - name: uploads
    pattern: {type: [bus.object.created]}
    targets: [make_thumbnail, audit]
sources:
  object_stores:
    - {name: uploads, provider: s3, secret_env: UPLOADS_WEBHOOK_SECRET}
  http:
    auth: api_keys
    keys:
      - {id: shop, secret_env: SHOP_API_KEY}
      - {id: ops, secret_env: OPS_API_KEY}
"""

ENV_KEYS = """\
prefix: keys
functions:
  hello: {handler: handlers:greet}
sources:
  http: {auth: api_keys}
"""


# --- helpers ------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bus.yaml"
    path.write_text(text)
    return path


def rendered(path: Path, options: K8sOptions | None = None) -> list[Rendered]:
    return render(manifest.read(path), path.read_text(), options or K8sOptions())


def by_name(items: list[Rendered], kind: str, name: str) -> dict[str, Any]:
    (found,) = [
        dict(i.object) for i in items if i.object["kind"] == kind and i.object["metadata"]["name"] == name
    ]
    return found


def containers(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def _strict(node: Any) -> Any:
    """A CRD schema that rejects undeclared fields (a CRD prunes them silently)."""
    if isinstance(node, dict):
        out = {key: _strict(value) for key, value in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


@cache
def validator(kind: str, version: str) -> jsonschema.protocols.Validator:
    if kind == "ScaledObject":
        schema = _strict(json.loads((SCHEMAS / "keda-scaledobject-v1alpha1.json").read_text()))
        schema["properties"]["apiVersion"] = {"const": "keda.sh/v1alpha1"}
        schema["properties"]["kind"] = {"const": "ScaledObject"}
    else:
        schema = json.loads((SCHEMAS / f"kubernetes-{version}" / f"{KIND_FILES[kind]}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(obj: Mapping[str, Any], version: str) -> list[str]:
    errors = validator(obj["kind"], version).iter_errors(obj)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def mappings(node: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(node, Mapping):
        yield node
        for value in node.values():
            yield from mappings(value)
    elif isinstance(node, list):
        for item in node:
            yield from mappings(item)


def bus_up_argv(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, list[str]]:
    """The command line of each child `bus up` starts for `path` (bus/stack.py), started nothing."""
    monkeypatch.setattr(localkafka, "port_free", lambda port: True)
    monkeypatch.setattr(stack_module, "apply_file", lambda *args, **kwargs: "applied")
    monkeypatch.setattr(Stack, "_spawn", lambda self, child: None)
    monkeypatch.setattr(Stack, "_wait_gateway", lambda self, timeout: None)
    monkeypatch.setattr(Stack, "_check_started", lambda self, settle: None)
    monkeypatch.setattr(Stack, "_follow_applied", lambda self, settings: None)
    # The supervisor starts the workers: no lag monitor, topics or producer, and no processes.
    monkeypatch.setattr(supervisor_module, "LagMonitor", lambda *args, **kwargs: None)
    monkeypatch.setattr(supervisor_module, "ensure_topics", lambda *args, **kwargs: [])
    monkeypatch.setattr(supervisor_module, "build", lambda *args, **kwargs: None)
    monkeypatch.setattr(supervisor_module.WorkerPool, "_start", lambda self, slot: None)
    environ = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "BUS_HOME": str(tmp_path / "home")}
    stack = Stack(path, manifest.read(path), http_port=8080, environ=environ)
    stack.start()
    argv = {child.name: child.argv for child in stack._children}
    assert stack._supervisor is not None
    argv.update({f"worker:{name}": pool.argv for name, pool in stack._supervisor.pools.items()})
    return argv


def portable(argv: list[str], manifest_path: str) -> list[str]:
    """`argv` with the interpreter as `python` and the manifest at `/app/bus.yaml`."""
    return ["python", *("/app/bus.yaml" if arg == manifest_path else arg for arg in argv[1:])]


# --- validity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("source", ["hello", "shop", "env-keys"])
def test_every_object_is_valid_against_the_kubernetes_and_keda_schemas(
    tmp_path: Path, source: str, version: str
) -> None:
    """Each rendered object validates against its kind's schema, and its file parses back to it."""
    path = HELLO if source == "hello" else write(tmp_path, SHOP if source == "shop" else ENV_KEYS)
    items = rendered(path, K8sOptions(namespace="events", gateway_replicas=2))
    assert {item.object["kind"] for item in items} == {"ConfigMap", "Deployment", "Service", "ScaledObject"}
    for item in items:
        assert schema_errors(item.object, version) == [], item.file
        text = item.text()
        assert text.startswith(HEADER)
        assert yaml.safe_load(text) == item.object


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_schemas_reject_a_misspelt_field(version: str) -> None:
    """The validation has teeth: an unknown field fails for Kubernetes kinds and for KEDA's."""
    items = rendered(HELLO)
    deployment = by_name(items, "Deployment", "bus-gateway")
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    scaled = by_name(items, "ScaledObject", "bus-fn-hello")
    scaled["spec"] = {**scaled["spec"], "cooldown": 60}
    assert any("replica" in error for error in schema_errors(deployment, version))
    assert any("cooldown" in error for error in schema_errors(scaled, version))


def test_trigger_metadata_keys_are_ones_the_kafka_scaler_reads(tmp_path: Path) -> None:
    """KEDA's CRD accepts any metadata: the keys are checked against the kafka scaler's own list."""
    known = set(json.loads((SCHEMAS / "keda-kafka-trigger-metadata.json").read_text()))
    for item in [*rendered(HELLO), *rendered(write(tmp_path, SHOP))]:
        if item.object["kind"] == "ScaledObject":
            for trigger in item.object["spec"]["triggers"]:
                assert trigger["type"] == "kafka"
                assert set(trigger["metadata"]) <= known
                assert all(isinstance(value, str) for value in trigger["metadata"].values())


# --- layout -------------------------------------------------------------------------------------


def test_one_file_per_object_named_by_kind_and_name() -> None:
    """The bundled example renders six files, sorted, each `<kind>-<name>.yaml`."""
    assert [item.file for item in rendered(HELLO)] == [
        "configmap-bus-manifest.yaml",
        "deployment-bus-fn-hello.yaml",
        "deployment-bus-gateway.yaml",
        "deployment-bus-router.yaml",
        "scaledobject-bus-fn-hello.yaml",
        "service-bus-gateway.yaml",
    ]


def test_output_is_deterministic_with_sorted_keys(tmp_path: Path) -> None:
    """Two renders are byte for byte the same, and every mapping's keys are written sorted."""
    path = write(tmp_path, SHOP)
    first = [(item.file, item.text()) for item in rendered(path)]
    assert first == [(item.file, item.text()) for item in rendered(path)]
    for _, text in first:
        for mapping in mappings(yaml.safe_load(text)):
            assert list(mapping) == sorted(mapping)


def test_the_manifest_is_a_config_map_mounted_where_the_commands_read_it(tmp_path: Path) -> None:
    """The ConfigMap holds bus.yaml verbatim (as a `|` block); pods mount it and roll when it changes."""
    path = write(tmp_path, SHOP)
    items = rendered(path)
    config = by_name(items, "ConfigMap", "shop-manifest")
    assert config["data"] == {"bus.yaml": SHOP}
    assert "bus.yaml: |" in dump(config)
    checksum = hashlib.sha256(SHOP.encode()).hexdigest()
    for item in items:
        if item.object["kind"] == "Deployment":
            template = item.object["spec"]["template"]
            assert template["metadata"]["annotations"]["bus/manifest-sha256"] == checksum
            assert template["spec"]["volumes"] == [
                {"name": "manifest", "configMap": {"name": "shop-manifest"}}
            ]
            for container in containers(item.object):
                assert container["volumeMounts"][0]["mountPath"] == "/app/bus.yaml"
                assert container["command"][container["command"].index("-f") + 1] == "/app/bus.yaml"


def test_commands_are_those_bus_up_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Gateway, router and each worker run the command line bus/stack.py gives them."""
    path = write(tmp_path, SHOP)
    argv = bus_up_argv(path, monkeypatch, tmp_path)
    items = rendered(path)
    expected = {
        "shop-gateway": argv["gateway"],
        "shop-router": argv["router"],
        "shop-fn-make-thumbnail": argv["worker:make_thumbnail"],
        "shop-fn-audit": argv["worker:audit"],
    }
    for name, child in expected.items():
        main_container = by_name(items, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert main_container["command"] == portable(child, str(path))
    router = by_name(items, "Deployment", "shop-router")
    (apply,) = router["spec"]["template"]["spec"]["initContainers"]
    assert apply["command"] == ["python", "-m", "bus", "apply", "-f", "/app/bus.yaml"]


# --- scaling ------------------------------------------------------------------------------------


def test_scaled_objects_carry_the_manifest_scaling(tmp_path: Path) -> None:
    """min 0 scales to zero; max is capped at the partitions (not below min); the rest follows."""
    items = rendered(write(tmp_path, SHOP), K8sOptions(bootstrap="kafka-0.kafka:9092,kafka-1.kafka:9092"))
    thumbs = by_name(items, "ScaledObject", "shop-fn-make-thumbnail")["spec"]
    assert thumbs["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "shop-fn-make-thumbnail",
    }
    assert (thumbs["minReplicaCount"], thumbs["maxReplicaCount"]) == (0, 4)
    assert thumbs["cooldownPeriod"] == 120
    assert thumbs["pollingInterval"] == 10
    assert thumbs["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 30
    }
    topics = [trigger["metadata"]["topic"] for trigger in thumbs["triggers"]]
    assert topics == [
        naming.function_topic("shop", "make_thumbnail"),
        *(naming.retry_topic("shop", "make_thumbnail", level) for level in (1, 2, 3)),
    ]
    for trigger in thumbs["triggers"]:
        assert trigger["metadata"] | {"topic": "-"} == {
            "bootstrapServers": "kafka-0.kafka:9092,kafka-1.kafka:9092",
            "consumerGroup": naming.function_group("shop", "make_thumbnail"),
            "topic": "-",
            "lagThreshold": "50",
            "activationLagThreshold": "5",
            "offsetResetPolicy": "earliest",
            "allowIdleConsumers": "false",
            "excludePersistentLag": "false",
        }
    audit = by_name(items, "ScaledObject", "shop-fn-audit")["spec"]
    assert (audit["minReplicaCount"], audit["maxReplicaCount"]) == (3, 3)  # min 3 > 2 partitions: standby
    assert [t["metadata"]["topic"] for t in audit["triggers"]] == ["shop.fn.audit"]  # no retries
    worker = by_name(items, "Deployment", "shop-fn-audit")
    assert "replicas" not in worker["spec"]  # KEDA owns the count


def test_stabilization_and_persistent_lag_come_from_scaling_when_it_has_them(tmp_path: Path) -> None:
    """`scaling.stabilization` (seconds) and `scaling.exclude_persistent_lag` reach KEDA when present."""
    parsed = manifest.read(HELLO)
    hello = parsed.functions["hello"]
    scaling = SimpleNamespace(
        min=1, max=2, lag_threshold=10, activation_lag_threshold=0, cooldown=30.0,
        stabilization=90.5, exclude_persistent_lag=True,
    )  # fmt: skip
    changed = replace(parsed, functions={"hello": replace(hello, scaling=scaling)})  # type: ignore[arg-type]
    spec = by_name(render(changed, HELLO.read_text()), "ScaledObject", "bus-fn-hello")["spec"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 91
    }
    assert {t["metadata"]["excludePersistentLag"] for t in spec["triggers"]} == {"true"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 2)


@pytest.mark.skipif(
    not hasattr(Scaling(), "stabilization"), reason="the manifest has no scaling.stabilization"
)
def test_stabilization_and_persistent_lag_are_read_from_the_manifest(tmp_path: Path) -> None:
    """`stabilization: 45s` and `exclude_persistent_lag: true` in bus.yaml reach the ScaledObject."""
    text = HELLO.read_text().replace(
        "partitions: 3", "partitions: 3\n    scaling: {stabilization: 45s, exclude_persistent_lag: true}"
    )
    spec = by_name(rendered(write(tmp_path, text)), "ScaledObject", "bus-fn-hello")["spec"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 45
    }
    assert {t["metadata"]["excludePersistentLag"] for t in spec["triggers"]} == {"true"}


def test_worker_memory_is_the_function_memory_plus_overhead(tmp_path: Path) -> None:
    """A 1Gi function gets a 1Gi + 256Mi limit (requested as much); SIGTERM gets its timeout + 30 s."""
    worker = by_name(rendered(write(tmp_path, SHOP)), "Deployment", "shop-fn-make-thumbnail")
    (container,) = containers(worker)
    memory = f"{1024 + WORKER_OVERHEAD_MIB}Mi"
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": memory},
        "limits": {"memory": memory},
    }
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 150


# --- environment --------------------------------------------------------------------------------


def test_secrets_come_from_a_secret_never_inline(tmp_path: Path) -> None:
    """Every `secret_env` the manifest names reaches the gateway by secretKeyRef, and only the gateway."""
    items = rendered(write(tmp_path, SHOP))
    gateway_env = env_of(containers(by_name(items, "Deployment", "shop-gateway"))[0])
    for name in ("UPLOADS_WEBHOOK_SECRET", "SHOP_API_KEY", "OPS_API_KEY"):
        assert gateway_env[name] == {"secretKeyRef": {"name": "shop-secrets", "key": name}}
    for item in items:
        for mapping in mappings(item.object):
            assert "SHOP_API_KEY" not in mapping.values() or item.object["metadata"]["name"] == "shop-gateway"
    keys = rendered(write(tmp_path, ENV_KEYS))
    env = env_of(containers(by_name(keys, "Deployment", "keys-gateway"))[0])
    assert env["BUS_API_KEYS"] == {"secretKeyRef": {"name": "keys-secrets", "key": "BUS_API_KEYS"}}


def test_kafka_prefix_metrics_and_instance_ids_are_set_per_component(tmp_path: Path) -> None:
    """Every pod gets bootstrap and prefix; replicas name their transactional ids after their pod."""
    items = rendered(write(tmp_path, SHOP), K8sOptions(bootstrap="broker:9093"))
    pod_name = {"fieldRef": {"fieldPath": "metadata.name"}}
    for item in items:
        if item.object["kind"] == "Deployment":
            for container in containers(item.object):
                env = env_of(container)
                assert (env["KAFKA_BOOTSTRAP_SERVERS"], env["BUS_PREFIX"]) == ("broker:9093", "shop")
                assert container["envFrom"] == [{"secretRef": {"name": "shop-env", "optional": True}}]
    gateway = env_of(containers(by_name(items, "Deployment", "shop-gateway"))[0])
    assert gateway["BUS_GATEWAY_INSTANCE"] == pod_name
    assert gateway["BUS_HTTP_HOST"] == "0.0.0.0"
    worker = env_of(containers(by_name(items, "Deployment", "shop-fn-audit"))[0])
    assert worker["BUS_INSTANCE"] == pod_name
    assert worker["BUS_METRICS_PORT"] == str(METRICS_PORT)


def test_the_gateway_has_probes_and_a_service(tmp_path: Path) -> None:
    """Ready on /readyz (the broker answers), alive on /healthz; the Service selects its pods."""
    items = rendered(HELLO, K8sOptions(gateway_replicas=3))
    gateway = by_name(items, "Deployment", "bus-gateway")
    (container,) = containers(gateway)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["spec"]["replicas"] == 3
    service = by_name(items, "Service", "bus-gateway")
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http"}
    ]
    for item in items:
        if item.object["kind"] == "Deployment" and item.object["metadata"]["name"] != "bus-gateway":
            assert all("livenessProbe" not in c for c in containers(item.object))


# --- names --------------------------------------------------------------------------------------


def test_kubernetes_names_are_dns_labels() -> None:
    """Upper case and '_' are folded; a leading digit gets `bus-`; long names end in a hash."""
    assert kubernetes_name("Shop_EU", "fn", "make_thumbnail") == "shop-eu-fn-make-thumbnail"
    assert kubernetes_name("1shop", "gateway") == "bus-1shop-gateway"
    long_a, long_b = (kubernetes_name("p", "fn", "x" * 90 + tail) for tail in ("a", "b"))
    assert long_a != long_b
    for name in (long_a, long_b):
        assert len(name) <= 52
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)


def test_functions_whose_names_fold_together_are_refused(tmp_path: Path) -> None:
    """`Hello` and `hello` would share a Deployment: the render names both and the fix."""
    path = write(tmp_path, "functions:\n  hello: {handler: 'h:a'}\n  Hello: {handler: 'h:b'}\n")
    with pytest.raises(ManifestError, match=r"functions\.Hello.*'hello'.*rename one"):
        rendered(path)


# --- command line -------------------------------------------------------------------------------


def test_cli_writes_the_files_lists_them_and_removes_stale_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bus deploy k8s` prints each file; files an earlier render wrote are removed, others kept."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("BUS_PREFIX", raising=False)
    out = tmp_path / "k8s"
    out.mkdir()
    (out / "deployment-bus-fn-gone.yaml").write_text(HEADER + "kind: Deployment\n")
    (out / "mine.yaml").write_text("kind: Secret\n")
    path = write(tmp_path, SHOP)
    assert main(["deploy", "k8s", "-f", str(path), "-o", str(out), "--image", "registry.example/shop:1"]) == 0
    captured = capsys.readouterr()
    files = captured.out.splitlines()
    assert files == [str(out / item.file) for item in rendered(path)]
    assert sorted(p.name for p in out.iterdir()) == sorted([*(Path(f).name for f in files), "mine.yaml"])
    assert f"removed {out / 'deployment-bus-fn-gone.yaml'}" in captured.err
    assert "kubectl create secret generic shop-secrets" in captured.err
    assert "--from-literal=SHOP_API_KEY=" in captured.err
    gateway = yaml.safe_load((out / "deployment-shop-gateway.yaml").read_text())
    assert containers(gateway)[0]["image"] == "registry.example/shop:1"
    assert containers(gateway)[0]["env"][0] == {"name": "KAFKA_BOOTSTRAP_SERVERS", "value": "kafka:9092"}


def test_cli_honours_prefix_and_the_bootstrap_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--prefix` renames everything; `KAFKA_BOOTSTRAP_SERVERS` is the default, with a loopback note."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    out = tmp_path / "out"
    assert main(["deploy", "k8s", "-f", str(HELLO), "-o", str(out), "--prefix", "staging"]) == 0
    assert "pods cannot reach 127.0.0.1:9092" in capsys.readouterr().err
    scaled = yaml.safe_load((out / "scaledobject-staging-fn-hello.yaml").read_text())
    (trigger, *_) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["consumerGroup"] == "staging.fn.hello"
    assert trigger["metadata"]["bootstrapServers"] == "127.0.0.1:9092"


def test_cli_reports_an_invalid_manifest_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest error exits 2 with one line naming the path in the manifest; nothing is written."""
    path = write(tmp_path, "functions:\n  hello: {handler: nope}\n")
    assert main(["deploy", "k8s", "-f", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "functions.hello.handler" in err
    assert not (tmp_path / "out").exists()


# --- compose ------------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    """deploy/compose.yaml validates against the Compose Specification schema (no Docker here)."""
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    errors = jsonschema.validators.validator_for(schema)(schema).iter_errors(
        yaml.safe_load(COMPOSE.read_text())
    )
    assert [error.message for error in errors] == []


def test_compose_runs_what_bus_up_runs_for_the_example(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Kafka, `bus apply`, then the gateway, the router and one worker per function of examples/hello."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    argv = bus_up_argv(HELLO, monkeypatch, tmp_path)
    children = {"gateway" if n == "gateway" else n.replace("worker:", "worker-"): a for n, a in argv.items()}
    assert set(services) == {"kafka", "apply", *children}
    prefix = manifest.read(HELLO).prefix
    for name, child in children.items():
        service = services[name]
        assert service["command"] == portable(child, str(HELLO))
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert service["environment"]["BUS_PREFIX"] == prefix
        assert service["depends_on"] == {"apply": {"condition": "service_completed_successfully"}}
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["apply"]["command"] == ["python", "-m", "bus", "apply", "-f", "/app/bus.yaml"]
    assert services["gateway"]["environment"]["BUS_HTTP_HOST"] == "0.0.0.0"
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "PLAINTEXT://kafka:9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_the_dockerfile_installs_every_package_and_puts_the_example_in_app() -> None:
    """The image installs the project (each setuptools package is copied) with examples/hello at /app."""
    lines = DOCKERFILE.read_text().splitlines()
    copies = {line.split()[1] for line in lines if line.startswith("COPY ")}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert {package.split(".")[0] for package in packages} <= copies
    assert "COPY examples/hello /app" in lines
    assert any(line.startswith("RUN pip install") and " . " in f"{line} " for line in lines)
    assert "USER 10001" in lines  # runAsNonRoot in the rendered pods needs a numeric non-root user

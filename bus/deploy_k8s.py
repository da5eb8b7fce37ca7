"""Kubernetes manifests for a bus manifest (pure): the objects `bus deploy k8s` writes.

One gateway Deployment and Service, one router Deployment (whose init container runs `bus apply`),
and per function a worker Deployment with a KEDA ScaledObject holding the manifest's `scaling:`.
The manifest itself travels in a ConfigMap mounted over `/app/bus.yaml` in an image that holds the
handlers. Why each choice: docs/decisions/kubernetes.md.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from bus import naming
from bus.errors import ManifestError
from bus.manifest import Function, Manifest

__all__ = [
    "APP_DIR",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_IMAGE",
    "HEADER",
    "METRICS_PORT",
    "POLLING_INTERVAL",
    "WORKER_OVERHEAD_MIB",
    "K8sOptions",
    "Rendered",
    "component_argv",
    "dump",
    "kubernetes_name",
    "render",
    "secret_env_names",
    "secret_name",
]

DEFAULT_IMAGE = "bus:latest"
"""Image of deploy/Dockerfile, run with the bundled example or `FROM` it with your handlers."""
DEFAULT_BOOTSTRAP = "kafka:9092"
"""Kafka as pods see it when neither `--bootstrap` nor `KAFKA_BOOTSTRAP_SERVERS` says."""
APP_DIR = "/app"
"""Folder of the image holding the handlers; the manifest is mounted as `<APP_DIR>/bus.yaml`."""
MANIFEST_PATH = f"{APP_DIR}/bus.yaml"
METRICS_PORT = 9090
"""Port of `GET /metrics` on router and worker pods (`BUS_METRICS_PORT`)."""
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - inside a pod, so Prometheus can scrape /metrics
"""`BUS_METRICS_HOST` of router and worker pods."""
POLLING_INTERVAL = 10
"""Seconds between KEDA's lag checks."""
WORKER_OVERHEAD_MIB = 256
"""Memory a worker pod needs beyond its handler's `memory`: Python, the Kafka client and its buffers."""
DEFAULT_STABILIZATION = 30.0
"""Seconds of lower desired replicas before scaling down, when the manifest does not say."""
HEADER = "# Rendered by `bus deploy k8s`: edit bus.yaml and render again.\n"
"""First line of every file written; files starting with it are bus's to replace or remove."""

_MAX_NAME = 52  # a pod name adds `-<hash>-<5 chars>` and must stay a 63-character label


@dataclass(frozen=True, slots=True, kw_only=True)
class K8sOptions:
    """What the manifest does not say about a Kubernetes deployment."""

    image: str = DEFAULT_IMAGE
    """Container image with bus installed and the handlers in `/app` (deploy/Dockerfile)."""
    bootstrap: str = DEFAULT_BOOTSTRAP
    """`KAFKA_BOOTSTRAP_SERVERS` of every pod and KEDA's `bootstrapServers`."""
    namespace: str | None = None
    """Namespace written into every object; None: the one `kubectl` is told."""
    gateway_replicas: int = 1
    """Gateway pods."""
    router_replicas: int = 1
    """Router pods (more than the ingress partitions, 6, idle)."""
    http_port: int = 8080
    """Gateway container and Service port."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """One Kubernetes object and the file it is written to."""

    file: str
    object: Mapping[str, Any]

    def text(self) -> str:
        """The file's contents."""
        return HEADER + dump(self.object)


def kubernetes_name(*parts: str) -> str:
    """A DNS-1035 label from bus names: lower case, `-` for `_`, at most 52 characters.

    Longer names keep their first characters and end in a hash of the whole, so they stay distinct.
    """
    whole = "-".join(parts)
    name = whole.lower().replace("_", "-").strip("-")
    if not name[:1].isalpha():
        name = f"bus-{name}"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(whole.encode()).hexdigest()[:6]
        name = f"{name[: _MAX_NAME - 7].rstrip('-')}-{digest}"
    return name


def component_argv(component: str, manifest_path: str, *, http_port: int, function: str = "") -> list[str]:
    """The command line of a platform process after `python`, as `bus up` starts it (bus/stack.py):
    `-P`, so a folder of the working directory never shadows bus's own packages."""
    if component == "gateway":
        return ["-P", "-m", "gateway", "--port", str(http_port), "-f", manifest_path]
    if component == "router":
        return ["-P", "-m", "bus.router", "-f", manifest_path]
    return ["-P", "-m", "workers", "-f", manifest_path, "--function", function]


def secret_name(prefix: str) -> str:
    """The Kubernetes Secret holding the values of the manifest's `secret_env` variables."""
    return kubernetes_name(prefix, "secrets")


def secret_env_names(manifest: Manifest) -> list[str]:
    """Environment variables the gateway reads secrets from, as the manifest names them (sorted)."""
    names = {store.secret_env for store in manifest.object_stores if store.secret_env}
    names |= {key.secret_env for key in manifest.http_auth.keys}
    if manifest.http_auth.jwt_secret_env:
        names.add(manifest.http_auth.jwt_secret_env)
    if manifest.http_auth.mode == "api_keys" and not manifest.http_auth.keys:
        names.add("BUS_API_KEYS")  # keys listed in the environment instead (gateway/settings.py)
    return sorted(names)


def render(manifest: Manifest, manifest_text: str, options: K8sOptions = K8sOptions()) -> list[Rendered]:
    """Every object for `manifest` (whose file reads `manifest_text`), in file-name order."""
    plan = _Plan(manifest, manifest_text, options)
    objects = [
        plan.config_map(),
        plan.gateway(),
        plan.gateway_service(),
        plan.router(),
        *(obj for function in manifest.functions.values() for obj in plan.worker(function)),
    ]
    rendered = [Rendered(f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml", obj) for obj in objects]
    return sorted(rendered, key=lambda item: item.file)


def dump(obj: Mapping[str, Any]) -> str:
    """YAML with sorted keys and multi-line strings as literal blocks, so renders diff line by line."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=100)


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing multi-line strings as `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


class _Plan:
    """The names and shared pieces of one render."""

    def __init__(self, manifest: Manifest, manifest_text: str, options: K8sOptions) -> None:
        self.manifest = manifest
        self.text = manifest_text
        self.options = options
        self.base = kubernetes_name(manifest.prefix)
        self.config_name = kubernetes_name(manifest.prefix, "manifest")
        self.secret_name = secret_name(manifest.prefix)
        self.env_secret_name = kubernetes_name(manifest.prefix, "env")
        self.checksum = hashlib.sha256(manifest_text.encode()).hexdigest()
        self.workers = self._worker_names()

    def _worker_names(self) -> dict[str, str]:
        taken: dict[str, str] = {}
        for function in self.manifest.functions:
            name = kubernetes_name(self.manifest.prefix, "fn", function)
            if name in taken:
                raise ManifestError(
                    f"functions.{function}",
                    f"its Kubernetes name {name!r} is also function {taken[name]!r}'s "
                    "(names are lower-cased, '_' becomes '-'): rename one",
                )
            taken[name] = function
        return {function: name for name, function in taken.items()}

    # --- objects ------------------------------------------------------------------------------

    def config_map(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": self._metadata(self.config_name, self._labels("manifest")),
            "data": {"bus.yaml": self.text},
        }

    def gateway(self) -> dict[str, Any]:
        port = self.options.http_port
        env = [
            *self._kafka_env(),
            _env("BUS_HTTP_HOST", "0.0.0.0"),  # noqa: S104 - a pod serves on its own address
            _field_env("BUS_GATEWAY_INSTANCE", "metadata.name"),  # the batch publisher's transactional id
            *(_secret_env(name, self.secret_name) for name in secret_env_names(self.manifest)),
        ]
        container = self._container(
            "gateway",
            component_argv("gateway", MANIFEST_PATH, http_port=port),
            env=env,
            ports=[{"containerPort": port, "name": "http", "protocol": "TCP"}],
            memory_mib=512,
        )
        container["startupProbe"] = _http_probe("/healthz", period=2, failures=30)
        container["livenessProbe"] = _http_probe("/healthz", period=10, failures=3)
        container["readinessProbe"] = _http_probe("/readyz", period=5, failures=2)
        return self._deployment(
            kubernetes_name(self.manifest.prefix, "gateway"),
            self._labels("gateway"),
            containers=[container],
            replicas=self.options.gateway_replicas,
            metrics_port=port,
        )

    def gateway_service(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._metadata(
                kubernetes_name(self.manifest.prefix, "gateway"), self._labels("gateway")
            ),
            "spec": {
                "type": "ClusterIP",
                "selector": self._labels("gateway"),
                "ports": [
                    {"name": "http", "port": self.options.http_port, "protocol": "TCP", "targetPort": "http"}
                ],
            },
        }

    def router(self) -> dict[str, Any]:
        apply = self._container(
            "apply",
            ["-m", "bus", "apply", "-f", MANIFEST_PATH],
            env=self._kafka_env(),
            memory_mib=256,
        )
        router = self._container(
            "router",
            component_argv("router", MANIFEST_PATH, http_port=self.options.http_port),
            env=[
                *self._kafka_env(),
                _env("BUS_METRICS_PORT", str(METRICS_PORT)),
                _env("BUS_METRICS_HOST", ALL_INTERFACES),
            ],
            ports=[{"containerPort": METRICS_PORT, "name": "metrics", "protocol": "TCP"}],
            memory_mib=512,
        )
        return self._deployment(
            kubernetes_name(self.manifest.prefix, "router"),
            self._labels("router"),
            containers=[router],
            init_containers=[apply],
            replicas=self.options.router_replicas,
            metrics_port=METRICS_PORT,
        )

    def worker(self, function: Function) -> list[dict[str, Any]]:
        name = self.workers[function.name]
        labels = {**self._labels("worker"), "bus/function": name}
        container = self._container(
            "worker",
            component_argv("worker", MANIFEST_PATH, http_port=self.options.http_port, function=function.name),
            env=[
                *self._kafka_env(),
                _env("BUS_METRICS_PORT", str(METRICS_PORT)),
                _env("BUS_METRICS_HOST", ALL_INTERFACES),
                _field_env("BUS_INSTANCE", "metadata.name"),  # the replica's transactional id
            ],
            ports=[{"containerPort": METRICS_PORT, "name": "metrics", "protocol": "TCP"}],
            memory_mib=function.memory + WORKER_OVERHEAD_MIB,
        )
        deployment = self._deployment(
            name,
            labels,
            containers=[container],
            replicas=None,  # KEDA owns the count; a re-apply must not reset it
            metrics_port=METRICS_PORT,
            # SIGTERM finishes the invocations in flight: give the slowest one its timeout.
            grace=math.ceil(function.timeout) + 30,
            annotations={"bus/function-name": function.name},
        )
        return [deployment, self._scaled_object(function, name, labels)]

    def _scaled_object(self, function: Function, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
        scaling = function.scaling
        prefix = self.manifest.prefix
        # As bus.scaling decides: lag never asks for more replicas than partitions, but `min` is
        # honoured above them (standby replicas).
        most = max(min(scaling.max, function.partitions), scaling.min, 1)
        stabilization = float(getattr(scaling, "stabilization", DEFAULT_STABILIZATION))
        exclude_persistent = bool(getattr(scaling, "exclude_persistent_lag", False))
        group = naming.function_group(prefix, function.name)
        # One trigger per topic the group reads: a function with retries due must not scale to zero.
        topics = [
            naming.function_topic(prefix, function.name),
            *(naming.retry_topic(prefix, function.name, n) for n in range(1, function.retry.levels + 1)),
        ]
        triggers = [
            {
                "type": "kafka",
                "metadata": {
                    "bootstrapServers": self.options.bootstrap,
                    "consumerGroup": group,
                    "topic": topic,
                    "lagThreshold": str(scaling.lag_threshold),
                    "activationLagThreshold": str(scaling.activation_lag_threshold),
                    "offsetResetPolicy": "earliest",
                    "allowIdleConsumers": "false",
                    "excludePersistentLag": "true" if exclude_persistent else "false",
                },
            }
            for topic in topics
        ]
        return {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": self._metadata(name, labels, {"bus/function-name": function.name}),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicaCount": scaling.min,
                "maxReplicaCount": most,
                "pollingInterval": POLLING_INTERVAL,
                "cooldownPeriod": math.ceil(scaling.cooldown),
                "advanced": {
                    "horizontalPodAutoscalerConfig": {
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": math.ceil(stabilization)}}
                    }
                },
                "triggers": triggers,
            },
        }

    # --- shared pieces ------------------------------------------------------------------------

    def _labels(self, component: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/instance": self.base,
            "app.kubernetes.io/name": "bus",
        }

    def _metadata(
        self, name: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
        if annotations:
            metadata["annotations"] = dict(annotations)
        if self.options.namespace:
            metadata["namespace"] = self.options.namespace
        return metadata

    def _kafka_env(self) -> list[dict[str, Any]]:
        return [
            _env("KAFKA_BOOTSTRAP_SERVERS", self.options.bootstrap),
            _env("BUS_PREFIX", self.manifest.prefix),
        ]

    def _container(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Sequence[Mapping[str, Any]],
        memory_mib: int,
        ports: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": name,
            "image": self.options.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", *argv],
            "env": [dict(item) for item in env],
            # Kafka client options (BUS_KAFKA_*), the registry URL and what handlers read, if any.
            "envFrom": [{"secretRef": {"name": self.env_secret_name, "optional": True}}],
            "resources": {
                "requests": {"cpu": "100m", "memory": f"{memory_mib}Mi"},
                "limits": {"memory": f"{memory_mib}Mi"},
            },
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [
                {"name": "manifest", "mountPath": MANIFEST_PATH, "subPath": "bus.yaml", "readOnly": True}
            ],
        }
        if ports:
            container["ports"] = [dict(port) for port in ports]
        return container

    def _deployment(
        self,
        name: str,
        labels: Mapping[str, str],
        *,
        containers: list[dict[str, Any]],
        replicas: int | None,
        metrics_port: int,
        init_containers: list[dict[str, Any]] | None = None,
        grace: int = 30,
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        pod_spec: dict[str, Any] = {
            "containers": containers,
            "securityContext": {"runAsNonRoot": True},
            "terminationGracePeriodSeconds": grace,
            "volumes": [{"name": "manifest", "configMap": {"name": self.config_name}}],
        }
        if init_containers:
            pod_spec["initContainers"] = init_containers
        spec: dict[str, Any] = {
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {
                        # A changed manifest rolls the pods: they read it when they start.
                        "bus/manifest-sha256": self.checksum,
                        "prometheus.io/path": "/metrics",
                        "prometheus.io/port": str(metrics_port),
                        "prometheus.io/scrape": "true",
                    },
                },
                "spec": pod_spec,
            },
        }
        if replicas is not None:
            spec["replicas"] = replicas
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self._metadata(name, labels, annotations),
            "spec": spec,
        }


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def _secret_env(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}


def _http_probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,  # /readyz waits up to 2 s for the broker
        "failureThreshold": failures,
    }

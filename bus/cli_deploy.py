"""`bus deploy k8s -f bus.yaml [-o DIR]` (SPEC §9): render Kubernetes manifests into a folder.

Prints each file written, one per line; notes (files removed, the Secret to create) go to stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from bus import manifest
from bus.cli_args import positive
from bus.deploy_k8s import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_IMAGE,
    HEADER,
    K8sOptions,
    render,
    secret_env_names,
    secret_name,
)
from bus.errors import ConfigError

__all__ = ["add_commands", "run"]


_replicas = positive("replicas")
"""An argparse type: a number of pods, at least 1."""


def _namespace(text: str) -> str:
    """An argparse type: a Kubernetes namespace name (a DNS-1123 label)."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a namespace: lower-case letters, digits and '-'")
    return text


def add_commands(sub: Any) -> None:
    """Register `deploy k8s` on the top-level subparsers."""
    targets = sub.add_parser("deploy", help="render deployment files for a manifest").add_subparsers(
        dest="deploy_command", required=True
    )
    k8s = targets.add_parser(
        "k8s", help="Kubernetes Deployments, a Service, a ConfigMap and KEDA ScaledObjects"
    )
    k8s.add_argument("-f", "--file", type=Path, required=True, help="the manifest (bus.yaml)")
    k8s.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("k8s"),
        metavar="DIR",
        help="folder to write (default ./k8s)",
    )
    k8s.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        metavar="IMAGE",
        help=f"image with bus and the handlers (default {DEFAULT_IMAGE})",
    )
    k8s.add_argument(
        "--bootstrap",
        metavar="SERVERS",
        help=f"Kafka as pods reach it (default $KAFKA_BOOTSTRAP_SERVERS or {DEFAULT_BOOTSTRAP})",
    )
    k8s.add_argument(
        "--namespace", type=_namespace, metavar="NS", help="namespace of every object (default: kubectl's)"
    )
    k8s.add_argument("--gateway-replicas", type=_replicas, default=1, metavar="N", help="gateway pods (1)")
    k8s.add_argument("--router-replicas", type=_replicas, default=1, metavar="N", help="router pods (1)")


def run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Render, write and list the files; remove files an earlier render wrote that this one does not."""
    out = out or sys.stdout
    err = err or sys.stderr
    path: Path = args.file
    parsed = manifest.read(path, prefix=args.prefix or environ.get("BUS_PREFIX") or None)
    text = path.read_text(encoding="utf-8")  # read() succeeded: the file exists and is UTF-8
    bootstrap = args.bootstrap or environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP
    options = K8sOptions(
        image=args.image,
        bootstrap=bootstrap,
        namespace=args.namespace,
        gateway_replicas=args.gateway_replicas,
        router_replicas=args.router_replicas,
    )
    files = render(parsed, text, options)
    folder: Path = args.output
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = {item.file for item in files}
        for stale in sorted(folder.glob("*.yaml")):
            if stale.name not in written and _ours(stale):
                stale.unlink()
                print(f"removed {stale}", file=err)
        for item in files:
            (folder / item.file).write_text(item.text(), encoding="utf-8")
            print(folder / item.file, file=out)
    except OSError as exc:
        raise ConfigError(f"cannot write to {folder}: {exc.strerror}; choose another folder with -o") from exc
    if _loopback(bootstrap):
        print(f"note: pods cannot reach {bootstrap}; give --bootstrap the address they can", file=err)
    secrets = secret_env_names(parsed)
    if secrets:
        keys = " ".join(f"--from-literal={name}=..." for name in secrets)
        secret = secret_name(parsed.prefix)
        print(
            f"note: the gateway needs Secret {secret!r}: kubectl create secret generic {secret} {keys}",
            file=err,
        )
    return 0


def _ours(file: Path) -> bool:
    """Whether `file` was written by `bus deploy k8s` (its first line is the header)."""
    try:
        with file.open(encoding="utf-8") as handle:
            return handle.readline() == HEADER
    except (OSError, UnicodeDecodeError):
        return False


def _loopback(bootstrap: str) -> bool:
    """Whether every bootstrap server is this machine (unreachable from a pod)."""
    hosts = [
        server.strip().rsplit(":", 1)[0].strip("[]") for server in bootstrap.split(",") if server.strip()
    ]

    def local(host: str) -> bool:
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    return bool(hosts) and all(local(host) for host in hosts)

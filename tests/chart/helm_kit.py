"""Rendering, installing and impersonating the Helm chart in tests.

``helm`` and ``kubectl`` are the pinned binaries of ``fleetshift_devcluster.binaries``
(built from their Go modules on first use). The prometheus-operator CRDs come from the
pinned ``github.com/prometheus-operator/prometheus-operator`` module, through the Go
module proxy, like the Gateway API CRDs.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from lightkube import Client, KubeConfig
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount

from fleetshift_devcluster import binaries
from fleetshift_devcluster.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fleetshift"
PROMETHEUS_OPERATOR_VERSION = "v0.81.0"
MONITORING_KINDS = ("servicemonitors", "podmonitors", "prometheusrules")

Manifest = dict[str, Any]

CLUSTER_WIDE: dict[str, Any] = {}
HA: dict[str, Any] = {"replicaCount": 2}
MONITORING: dict[str, Any] = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
}


def namespaced(*namespaces: str) -> dict[str, Any]:
    """Values of the namespaced mode for ``namespaces``."""
    return {"watch": {"namespaces": list(namespaces)}}


def tool(binary: binaries.Binary) -> Path:
    """A pinned binary (built on first use)."""
    return binaries.ensure((binary,))[binary.name]


def run(argv: list[str], *, check: bool = True, stdin: str | None = None) -> str:
    """Run a command; on failure raise with its output, so a test failure says why."""
    done = subprocess.run(argv, capture_output=True, text=True, input=stdin, check=False)
    if check and done.returncode != 0:
        raise AssertionError(
            f"`{' '.join(argv)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout + done.stderr


def helm(*args: str, check: bool = True) -> str:
    return run([str(tool(binaries.HELM)), *args], check=check)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return run([str(tool(binaries.KUBECTL)), f"--kubeconfig={kubeconfig}", *args], stdin=stdin)


def values_file(values: dict[str, Any]) -> Path:
    """``values`` in a temporary file for ``helm -f``."""
    with tempfile.NamedTemporaryFile(
        "w", suffix=".yaml", prefix="fleetshift-values-", delete=False
    ) as handle:
        yaml.safe_dump(values, handle)
    return Path(handle.name)


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Values sets merged left to right (nested dicts merge, the rest is replaced)."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
    return merged


def render(
    values: dict[str, Any], *, release: str = "fs", namespace: str = "fleetshift-system"
) -> list[Manifest]:
    """``helm template`` of the chart, parsed."""
    text = helm(
        "template", release, str(CHART), "--namespace", namespace, "-f", str(values_file(values))
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: Iterable[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container_env(docs: Iterable[Manifest]) -> dict[str, str]:
    """The operator container's plain env values (not the ones from Secrets or fields)."""
    deployment = one(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def prometheus_operator_crds() -> list[Path]:
    source = binaries.module_dir(
        "github.com/prometheus-operator/prometheus-operator", PROMETHEUS_OPERATOR_VERSION
    )
    folder = source / "example" / "prometheus-operator-crd"
    return [folder / f"monitoring.coreos.com_{kind}.yaml" for kind in MONITORING_KINDS]


def service_account_kubeconfig(
    kube: Client, cluster: LocalCluster, namespace: str, account: str, folder: Path
) -> Path:
    """A kubeconfig that authenticates as ``account`` with a token from the TokenRequest API."""
    request = ServiceAccount.Token(
        metadata=ObjectMeta(name=account, namespace=namespace),
        spec=TokenRequestSpec(audiences=[], expirationSeconds=7200),
    )
    issued = kube.create(request, name=account, namespace=namespace)
    assert issued.status is not None, "the TokenRequest API issued no token"
    token = issued.status.token
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority-data": base64.b64encode(
                        cluster.keys.ca_cert.read_bytes()
                    ).decode(),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {
                "name": "local",
                "context": {"cluster": "local", "user": account, "namespace": namespace},
            }
        ],
        "current-context": "local",
    }
    path = folder / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


def client_for(kubeconfig: Path) -> Client:
    return Client(KubeConfig.from_file(kubeconfig), field_manager="fleetshift-tests")


def as_json(value: object) -> str:
    return json.dumps(value, sort_keys=True)

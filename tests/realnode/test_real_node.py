"""A real node beside kwok: pods run in containerd, Services go through kube-proxy, names
resolve through cluster DNS, and `down` leaves nothing behind. The last test stops the
session's cluster, so it stays last in this module."""

from __future__ import annotations

import base64
import ipaddress
import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fleetshift_devcluster import images, netns
from fleetshift_devcluster.nodeimages import PROBE_IMAGE
from fleetshift_devcluster.realnode import (
    KUBELET_CGROUP,
    KUBERNETES_SERVICE_IP,
    NODE_IP,
    NODE_NAME,
    POD_SUBNET,
    processes_of,
)
from fleetshift_devcluster.wait import wait_for
from realnode.conftest import RealNode, host_network_state
from support.runtime_kit import csv_body, train_model

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def probe_pod(name: str, args: list[str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "probe", "image": PROBE_IMAGE, "imagePullPolicy": "Never", "args": args}
            ],
        },
    }


def serving_deployment(name: str, replicas: int) -> dict[str, Any]:
    pod = probe_pod(name, ["serve", "8080"], {"app": name})
    spec = pod["spec"]
    spec["restartPolicy"] = "Always"
    spec["containers"][0]["ports"] = [{"containerPort": 8080}]
    spec["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/", "port": 8080},
        "periodSeconds": 1,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def create(node: RealNode, namespace: str, document: dict[str, Any]) -> None:
    node.kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(document))


def items(listing: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(listing)["items"]
    return found


def is_ready(pod: dict[str, Any]) -> dict[str, Any] | None:
    conditions = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return pod if ready else None


def finished_output(node: RealNode, namespace: str, name: str, timeout: float = 60) -> str:
    """Wait for a run-once pod to succeed and return its log (read through the kubelet)."""

    def phase() -> str | None:
        value: str | None = node.get("pod", name, namespace)["status"].get("phase")
        if value == "Failed":
            log = node.kubectl("logs", name, "-n", namespace, check=False)
            raise AssertionError(f"pod {name} failed: {log}")
        return value if value == "Succeeded" else None

    wait_for(phase, timeout=timeout, message=f"pod {name} succeeded")
    return node.kubectl("logs", name, "-n", namespace)


def test_a_pod_runs_in_containerd_on_the_real_node_beside_kwok(
    real_node: RealNode, node_namespace: str
) -> None:
    create(real_node, node_namespace, probe_pod("one", ["serve", "8080"]))
    pod = wait_for(
        lambda: is_ready(real_node.get("pod", "one", node_namespace)),
        timeout=60,
        message="the probe pod Ready on the real node",
    )
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_SUBNET)
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
    # kubectl logs goes apiserver -> kubelet (by InternalIP, client certificate) -> containerd.
    assert "serving on :8080" in real_node.kubectl("logs", "one", "-n", node_namespace)

    nodes = {
        n["metadata"]["name"]: n for n in items(real_node.kubectl("get", "nodes", "-o", "json"))
    }
    real = nodes.pop(NODE_NAME)
    assert {"type": "InternalIP", "address": NODE_IP} in real["status"]["addresses"]
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"] == "containerd://2.2.9"
    assert [n["metadata"]["annotations"].get("kwok.x-k8s.io/node") for n in nodes.values()] == [
        "fake"
    ], "one kwok node beside the real one"


def test_the_kubelet_reports_pod_cpu_and_memory(real_node: RealNode, node_namespace: str) -> None:
    """What metrics-server and a CPU HPA read: containerd 1.6 left these at 0."""
    create(real_node, node_namespace, probe_pod("measured", ["serve", "8080"]))
    wait_for(
        lambda: is_ready(real_node.get("pod", "measured", node_namespace)),
        timeout=60,
        message="the measured pod Ready",
    )

    def pod_stats() -> dict[str, Any] | None:
        summary = json.loads(
            real_node.kubectl("get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/stats/summary")
        )
        for pod in summary.get("pods", []):
            reference = pod["podRef"]
            if (reference["namespace"], reference["name"]) == (node_namespace, "measured"):
                cpu = pod.get("cpu", {}).get("usageCoreNanoSeconds", 0)
                memory = pod.get("memory", {}).get("workingSetBytes", 0)
                return pod if cpu > 0 and memory > 0 else None
        return None

    stats = wait_for(pod_stats, timeout=90, interval=2, message="CPU and memory of the pod")
    assert stats["memory"]["workingSetBytes"] > 1_000_000, "a Go HTTP server uses over 1 MB"


def test_a_cluster_ip_reaches_the_pods_through_kube_proxy(
    real_node: RealNode, node_namespace: str
) -> None:
    create(real_node, node_namespace, serving_deployment("web", 2))
    create(real_node, node_namespace, service("web"))
    wait_for(
        lambda: (
            len(
                [
                    p
                    for p in items(
                        real_node.kubectl(
                            "get", "pods", "-n", node_namespace, "-l", "app=web", "-o", "json"
                        )
                    )
                    if is_ready(p)
                ]
            )
            == 2
        ),
        timeout=60,
        message="two Ready backends",
    )
    backends = {
        p["metadata"]["name"]
        for p in items(
            real_node.kubectl("get", "pods", "-n", node_namespace, "-l", "app=web", "-o", "json")
        )
    }
    cluster_ip = real_node.get("service", "web", node_namespace)["spec"]["clusterIP"]

    # From a pod: the packet leaves the pod's netns, meets kube-proxy's DNAT on the node.
    create(real_node, node_namespace, probe_pod("client", ["get", f"http://{cluster_ip}/"]))
    answer = finished_output(real_node, node_namespace, "client")
    assert answer.split() == ["probe", answer.split()[1]]
    assert answer.split()[1] in backends

    # From the node's namespace: a new connection each time, spread over both backends.
    caller = netns.NetnsCaller(real_node.cluster.netns)
    try:

        def spread() -> set[str] | None:
            seen = set()
            for _ in range(20):
                with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=5) as reply:
                    seen.add(reply.read().decode().split()[1])
            return seen if seen == backends else None

        assert (
            wait_for(lambda: caller.call(spread), timeout=30, message="both backends") == backends
        )
    finally:
        caller.close()


def test_cluster_dns_names_services_and_in_cluster_clients_reach_the_apiserver(
    real_node: RealNode, node_namespace: str
) -> None:
    create(real_node, node_namespace, service("named"))
    cluster_ip = real_node.get("service", "named", node_namespace)["spec"]["clusterIP"]
    create(
        real_node,
        node_namespace,
        probe_pod("resolve", ["resolve", "kubernetes.default.svc.cluster.local"]),
    )
    assert finished_output(real_node, node_namespace, "resolve").split() == [KUBERNETES_SERVICE_IP]
    create(real_node, node_namespace, probe_pod("short", ["resolve", f"named.{node_namespace}"]))
    assert finished_output(real_node, node_namespace, "short").split() == [cluster_ip]

    # What kopf or any in-cluster client does: https://kubernetes.default.svc with the pod's
    # service account (kube-proxy -> the apiserver on the node IP, its certificate naming it).
    create(
        real_node,
        node_namespace,
        probe_pod(
            "incluster",
            [
                "get",
                "https://kubernetes.default.svc/version",
                f"{SERVICE_ACCOUNT}/ca.crt",
                f"{SERVICE_ACCOUNT}/token",
            ],
        ),
    )
    version = json.loads(finished_output(real_node, node_namespace, "incluster"))
    assert version["gitVersion"] == "v1.35.4"


def test_the_runtime_image_serves_xgboosts_predictions_as_a_restricted_pod(
    real_node: RealNode, node_namespace: str, tmp_path: Path
) -> None:
    """The image `make images` built, imported into containerd, in a namespace that enforces
    the restricted Pod Security Standard, behind a ClusterIP."""
    tarball = images.tarball_path(images.RUNTIME)
    if not tarball.exists():
        pytest.skip(f"no runtime image tarball at {tarball}: `make images` builds it")
    real_node.cluster.import_image(tarball)
    real_node.kubectl(
        "label", "namespace", node_namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    model = train_model()
    saved = model.save(tmp_path / "model.ubj")
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model"},
        "binaryData": {"model.ubj": base64.b64encode(saved.read_bytes()).decode()},
    }
    create(real_node, node_namespace, configmap)
    deployment = serving_deployment("runtime", 1)
    spec = deployment["spec"]["template"]["spec"]
    spec["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    spec["volumes"] = [
        {"name": "model", "configMap": {"name": "model"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    spec["containers"][0] = {
        "name": "runtime",
        "image": "fleetshift/runtime:dev",
        "imagePullPolicy": "Never",
        "env": [{"name": "FLEETSHIFT_MODEL_URI", "value": "/models/model.ubj"}],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ping", "port": 8080}, "periodSeconds": 1},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "model", "mountPath": "/models", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    create(real_node, node_namespace, deployment)
    create(real_node, node_namespace, service("runtime"))
    wait_for(
        lambda: any(
            is_ready(p)
            for p in items(
                real_node.kubectl(
                    "get", "pods", "-n", node_namespace, "-l", "app=runtime", "-o", "json"
                )
            )
        ),
        timeout=120,
        message="the runtime pod Ready",
    )
    cluster_ip = real_node.get("service", "runtime", node_namespace)["spec"]["clusterIP"]

    def predict() -> str:
        request = urllib.request.Request(
            f"http://{cluster_ip}/invocations",
            data=csv_body(model.rows),
            headers={"Content-Type": "text/csv"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            text: str = reply.read().decode()
            return text

    caller = netns.NetnsCaller(real_node.cluster.netns)
    try:
        # Ready is the readiness probe's word; kube-proxy programs the Service a moment
        # later, and on a loaded machine the first answer can take over the 10 s a
        # request may: asked again until an answer comes.
        answer = wait_for(lambda: caller.call(predict), timeout=90, interval=1, message="answer")
    finally:
        caller.close()
    scores = np.array([float(line) for line in answer.split()], dtype=np.float32)
    np.testing.assert_allclose(scores, model.expected(), rtol=0, atol=1e-6)


def test_down_removes_every_process_mount_namespace_and_rule(real_node: RealNode) -> None:
    """Runs last: stops the session's cluster with a pod still running on it."""
    cluster = real_node.cluster
    real_node.kubectl("create", "namespace", "left-running")
    create(real_node, "left-running", serving_deployment("stays", 1))
    wait_for(
        lambda: any(
            is_ready(p)
            for p in items(real_node.kubectl("get", "pods", "-n", "left-running", "-o", "json"))
        ),
        timeout=60,
        message="a pod running when down starts",
    )
    assert processes_of(cluster.folder), "the node's processes name the state folder"

    cluster.stop()

    assert processes_of(cluster.folder) == []
    assert netns.mounts_under(cluster.folder) == []
    assert not netns.netns_exists(cluster.netns)
    assert not any(Path("/sys/fs/cgroup").glob(f"*/{KUBELET_CGROUP}"))
    assert host_network_state() == real_node.host_before

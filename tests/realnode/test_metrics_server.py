"""metrics-server on the real node: the metrics API reports a real runtime pod's CPU, and the
HPA the operator generates for ``variants[].autoscaling`` scales the fleet out on real load.

This module sorts before ``test_real_node.py``, whose last test stops the session's cluster.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fleetshift_devcluster.processes import ManagedProcess
from fleetshift_devcluster.realnode import METRICS_API, NODE_NAME
from fleetshift_devcluster.wait import wait_for
from realnode import kit
from realnode.conftest import RealNode
from realnode.kit import Load, ModelServer, PodPrometheus, PrometheusAdapter
from support.runtime_kit import csv_body

ENDPOINT = "scaled"
CPU_REQUEST_MILLICORES = 100
TARGET_CPU_PERCENT = 50
LOAD_THREADS = 3


def millicores(quantity: str) -> float:
    """A CPU quantity as the metrics API writes it, in millicores.

    >>> millicores("12345678n"), millicores("250m"), millicores("2")
    (12.345678, 250.0, 2000.0)
    """
    units = {"n": 1e-6, "u": 1e-3, "m": 1.0}
    if quantity[-1] in units:
        return float(quantity[:-1]) * units[quantity[-1]]
    return float(quantity) * 1000


def ready_pods(node: RealNode, namespace: str) -> list[dict[str, Any]]:
    return kit.ready_pods(node, namespace, f"fleetshift.dev/endpoint={ENDPOINT}")


def test_metrics_server_reports_runtime_cpu_and_the_operators_cpu_hpa_scales_out_under_load(
    real_node: RealNode,
    node_namespace: str,
    operator_in_netns: ManagedProcess,
    models: tuple[ModelServer, Any],
) -> None:
    server, rows = models
    _scale_out_on_real_cpu(real_node, node_namespace, operator_in_netns, server, rows)


def _autoscaled_endpoint(
    namespace: str,
    models: ModelServer,
    autoscaling: dict[str, Any],
    model_file: str = "model.ubj",
    deployment_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Endpoint: one variant of the runtime image on the real node, autoscaled."""
    spec: dict[str, Any] = {
        "variants": [
            {
                "name": "main",
                "model": {"uri": f"{models.url}/{model_file}"},
                "image": "fleetshift/runtime:dev",
                "replicas": 1,
                "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
                "resources": {"requests": {"cpu": f"{CPU_REQUEST_MILLICORES}m", "memory": "128Mi"}},
                "autoscaling": autoscaling,
            }
        ]
    }
    if deployment_config is not None:
        spec["deploymentConfig"] = deployment_config
    return {
        "apiVersion": "fleetshift.dev/v1alpha1",
        "kind": "Endpoint",
        "metadata": {"name": ENDPOINT, "namespace": namespace},
        "spec": spec,
    }


def _apply_autoscaled(
    node: RealNode,
    namespace: str,
    operator: ManagedProcess,
    models: ModelServer,
    autoscaling: dict[str, Any],
    deployment_config: dict[str, Any] | None = None,
) -> str:
    """Apply the Endpoint, wait until it serves, and return its HPA's name."""
    node.apply(_autoscaled_endpoint(namespace, models, autoscaling, "model.ubj", deployment_config))

    def in_service() -> bool:
        if not operator.running():
            raise AssertionError(f"the operator exited:\n{operator.log_tail(40)}")
        status = node.get("fsep", ENDPOINT, namespace).get("status") or {}
        return status.get("phase") == "InService" and bool(ready_pods(node, namespace))

    wait_for(in_service, timeout=120, interval=1, message="the Endpoint InService on a real pod")
    hpas = json.loads(node.kubectl("get", "hpa", "-n", namespace, "-o", "json"))["items"]
    assert len(hpas) == 1, "one HPA for the one fleet"
    name: str = hpas[0]["metadata"]["name"]
    return name


def _scaled_out(node: RealNode, namespace: str, hpa_name: str, minimum: int) -> Any:
    def probe() -> dict[str, Any] | None:
        hpa = node.get("hpa", hpa_name, namespace)
        status = hpa.get("status", {})
        if (
            status.get("desiredReplicas", 0) > minimum
            and status.get("currentReplicas", 0) > minimum
        ):
            return hpa
        return None

    hpa = wait_for(probe, timeout=180, interval=2, message="the HPA scaling out under load")
    deployment = node.get("deployment", hpa["spec"]["scaleTargetRef"]["name"], namespace)
    assert deployment["spec"]["replicas"] > 1, "the HPA's count, not the operator's"
    wait_for(
        lambda: len(ready_pods(node, namespace)) > 1,
        timeout=90,
        interval=1,
        message="a second Ready runtime pod on the real node",
    )
    return hpa


def _scale_out_on_real_cpu(
    node: RealNode,
    namespace: str,
    operator: ManagedProcess,
    models: ModelServer,
    rows: Any,
) -> None:
    autoscaling = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetCPUUtilizationPercent": TARGET_CPU_PERCENT,
        "scaleOutStabilizationSeconds": 0,
    }
    hpa_name = _apply_autoscaled(node, namespace, operator, models, autoscaling)
    hpa = node.get("hpa", hpa_name, namespace)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pod_name = ready_pods(node, namespace)[0]["metadata"]["name"]

    # `kubectl top`: the aggregated metrics API, served by metrics-server from the kubelet.
    apiservice = json.loads(node.kubectl("get", "apiservice", METRICS_API, "-o", "json"))
    assert apiservice["spec"]["service"]["name"] == "metrics-server"

    def pod_cpu() -> float | None:
        listed = json.loads(
            node.kubectl(
                "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
            )
        )
        for item in listed["items"]:
            if item["metadata"]["name"] == pod_name:
                return sum(millicores(c["usage"]["cpu"]) for c in item["containers"]) or None
        return None

    wait_for(pod_cpu, timeout=90, interval=2, message=f"CPU of {pod_name} in the metrics API")
    top = node.kubectl("top", "pod", "-n", namespace, "--no-headers")
    assert pod_name in top, top

    service_ip = node.get("service", ENDPOINT, namespace)["spec"]["clusterIP"]
    load = Load(
        node.cluster.netns, f"http://{service_ip}/invocations", csv_body(rows), LOAD_THREADS
    )
    try:
        hpa = _scaled_out(node, namespace, hpa_name, minimum=1)
    finally:
        load.stop()
    used = hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
    assert used > TARGET_CPU_PERCENT, hpa["status"]
    assert load.answered > 0, f"{load.failed} requests failed, none answered"


def test_under_load_after_the_canary_greens_cpu_hpa_scales_out_and_idle_blues_does_not_balloon(
    real_node: RealNode,
    node_namespace: str,
    operator_in_netns: ManagedProcess,
    models: tuple[ModelServer, Any],
    tmp_path: Path,
) -> None:
    """argoproj/argo-rollouts#2857: one HPA over both fleets scaled the stable fleet to its
    maximum during a canary. Here each fleet has its own HPA over its own pods. A canary
    goes to 100%, blue is kept through a termination wait (idle, for a quick rollback),
    and under load green's HPA scales green out on green's real CPU while blue's, which
    sees only blue's idle pod, stays at one replica throughout."""
    server, rows = models
    autoscaling = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetCPUUtilizationPercent": TARGET_CPU_PERCENT,
        "scaleOutStabilizationSeconds": 0,
    }
    deployment_config = {
        "blueGreen": {
            "trafficRouting": {
                "type": "Canary",
                "canarySize": {"type": "CapacityPercent", "value": 50},
                "waitIntervalSeconds": 5,
            },
            "terminationWaitSeconds": 900,
            "maximumExecutionTimeoutSeconds": 1800,
        }
    }
    _apply_autoscaled(
        real_node, node_namespace, operator_in_netns, server, autoscaling, deployment_config
    )
    shutil.copy(tmp_path / "models" / "model.ubj", tmp_path / "models" / "model-v2.ubj")
    real_node.apply(
        _autoscaled_endpoint(node_namespace, server, autoscaling, "model-v2.ubj", deployment_config)
    )

    def blue_kept_idle() -> dict[str, Any] | None:
        if not operator_in_netns.running():
            raise AssertionError(f"the operator exited:\n{operator_in_netns.log_tail(40)}")
        status = real_node.get("fsep", ENDPOINT, node_namespace).get("status") or {}
        fleets = status.get("fleets") or {}
        stage = (status.get("step") or {}).get("stage")
        if stage == "TerminationWait" and {"blue", "green"} <= fleets.keys():
            return fleets
        return None

    fleets = wait_for(
        blue_kept_idle, timeout=180, interval=1, message="green at 100%, blue kept idle"
    )
    assert fleets["green"]["trafficPercent"] == 100, fleets
    assert fleets["blue"]["trafficPercent"] == 0, fleets
    blue_hpa, green_hpa = fleets["blue"]["deployment"], fleets["green"]["deployment"]
    for name in (blue_hpa, green_hpa):
        hpa = real_node.get("hpa", name, node_namespace)
        assert hpa["spec"]["scaleTargetRef"]["name"] == name, hpa["spec"]

    service_ip = real_node.get("service", ENDPOINT, node_namespace)["spec"]["clusterIP"]
    load = Load(
        real_node.cluster.netns,
        f"http://{service_ip}/invocations",
        csv_body(rows),
        LOAD_THREADS,
    )
    blue_seen: list[dict[str, Any]] = []

    def green_scaled_out() -> dict[str, Any] | None:
        blue = real_node.get("hpa", blue_hpa, node_namespace)
        blue_seen.append(blue.get("status", {}))
        green: dict[str, Any] = real_node.get("hpa", green_hpa, node_namespace).get("status", {})
        if green.get("desiredReplicas", 0) > 1 and green.get("currentReplicas", 0) > 1:
            return green
        return None

    try:
        green_status = wait_for(
            green_scaled_out, timeout=180, interval=2, message="green's HPA scaling out"
        )
        green_pods = (
            f"fleetshift.dev/revision={fleets['green']['revision']},fleetshift.dev/serving=true"
        )
        wait_for(
            lambda: len(kit.ready_pods(real_node, node_namespace, green_pods)) > 1,
            timeout=90,
            interval=1,
            message="green's new pod Ready and serving",
        )
        # Blue's HPA has had the whole scale-out to react; one more reading after it.
        blue_seen.append(real_node.get("hpa", blue_hpa, node_namespace).get("status", {}))
    finally:
        load.stop()

    used = green_status["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
    assert used > TARGET_CPU_PERCENT, green_status
    # (current, desired); desired is 0 until the HPA has first read blue's metrics.
    blue_counts = [(s.get("currentReplicas"), s.get("desiredReplicas", 0)) for s in blue_seen]
    assert all(current == 1 and desired <= 1 for current, desired in blue_counts), blue_counts
    assert blue_counts[-1] == (1, 1), blue_counts
    blue_deployment = real_node.get("deployment", blue_hpa, node_namespace)
    assert blue_deployment["spec"]["replicas"] == 1, "blue did not balloon"
    blue_used = [
        m["resource"]["current"]["averageUtilization"]
        for s in blue_seen
        for m in s.get("currentMetrics") or []
        if m.get("type") == "Resource"
    ]
    assert blue_used and max(blue_used) < TARGET_CPU_PERCENT, blue_seen
    status = real_node.get("fsep", ENDPOINT, node_namespace)["status"]
    assert status["fleets"]["blue"]["trafficPercent"] == 0, "blue served no caller"
    assert load.answered > 0 and load.failed == 0, load.counts()


INVOCATIONS_PER_REPLICA = 5


def test_the_invocations_per_replica_hpa_scales_out_on_the_custom_metrics_api(
    real_node: RealNode,
    node_namespace: str,
    operator_in_netns: ManagedProcess,
    models: tuple[ModelServer, Any],
    tmp_path: Path,
) -> None:
    """``targetInvocationsPerReplica`` on real traffic: Prometheus (Kubernetes discovery)
    scrapes the runtime pods, prometheus-adapter serves README.md's rule through the
    aggregator, and the operator's HPA reads it as a Pods metric and scales the fleet."""
    server, rows = models
    prometheus = PodPrometheus(real_node, tmp_path / "prometheus", [node_namespace])
    adapter: PrometheusAdapter | None = None
    try:
        adapter = PrometheusAdapter(real_node, tmp_path / "adapter", prometheus.url)
        autoscaling = {
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetInvocationsPerReplica": INVOCATIONS_PER_REPLICA,
            "scaleOutStabilizationSeconds": 0,
        }
        hpa_name = _apply_autoscaled(
            real_node, node_namespace, operator_in_netns, server, autoscaling
        )
        service_ip = real_node.get("service", ENDPOINT, node_namespace)["spec"]["clusterIP"]
        load = Load(
            real_node.cluster.netns, f"http://{service_ip}/invocations", csv_body(rows[:5]), 2
        )
        try:
            per_pod = wait_for(
                lambda: _custom_metric(real_node, node_namespace),
                timeout=120,
                interval=2,
                message="fleetshift_invocations_per_second in the custom metrics API",
            )
            hpa = _scaled_out(real_node, node_namespace, hpa_name, minimum=1)
        finally:
            load.stop()
        assert adapter.running(), adapter.process.log_tail(30)
    finally:
        if adapter is not None:
            adapter.stop()
        prometheus.stop()
    assert max(per_pod.values()) > INVOCATIONS_PER_REPLICA, per_pod
    pods_metric = next(m for m in hpa["status"]["currentMetrics"] if m["type"] == "Pods")
    assert pods_metric["pods"]["metric"]["name"] == "fleetshift_invocations_per_second"
    assert load.answered > 0 and load.failed == 0, load.counts()


def _custom_metric(node: RealNode, namespace: str) -> dict[str, float] | None:
    """Each pod's ``fleetshift_invocations_per_second`` from the aggregated API, when above 0."""
    listed = json.loads(
        node.kubectl(
            "get",
            "--raw",
            f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/*/"
            "fleetshift_invocations_per_second",
        )
    )
    values = {
        item["describedObject"]["name"]: millicores(item["value"]) / 1000
        for item in listed["items"]
    }
    return values if values and max(values.values()) > 0 else None

"""The chart renders what it promises, before any cluster sees it: `helm lint`, `helm
template` in both RBAC modes and with HA, the schema, and the pieces a reader relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.helm_kit import (
    CHART,
    CLUSTER_WIDE,
    HA,
    MONITORING,
    ROOT,
    container_env,
    find,
    helm,
    merge,
    namespaced,
    one,
    render,
    values_file,
)

VALUE_SETS = {
    "cluster-wide": CLUSTER_WIDE,
    "namespaced": namespaced("team-a", "team-b"),
    "ha": HA,
    "ha-namespaced-monitoring": merge(HA, namespaced("team-a"), MONITORING),
    "no-peering": {"peering": {"enabled": False}},
}


def test_chart_crds_are_byte_equal_to_the_top_level_crds() -> None:
    top = sorted((ROOT / "crds").glob("*.yaml"))
    assert top, "no CRDs in crds/"
    for path in top:
        copy = CHART / "crds" / path.name
        assert copy.exists(), f"{copy} missing: run `make crds`"
        assert copy.read_bytes() == path.read_bytes(), f"{copy} is stale: run `make crds`"
    extra = {p.name for p in (CHART / "crds").glob("*.yaml")} - {p.name for p in top}
    assert extra == {"kopf.dev_peerings.yaml"}, "only kopf's peering CRDs are the chart's own"


def test_kopf_peering_crds_define_both_scopes() -> None:
    crds = list(yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text()))
    scopes = {c["spec"]["names"]["kind"]: c["spec"]["scope"] for c in crds}
    assert scopes == {"ClusterKopfPeering": "Cluster", "KopfPeering": "Namespaced"}
    assert {c["spec"]["group"] for c in crds} == {"kopf.dev"}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_is_clean(values: dict[str, Any]) -> None:
    output = helm("lint", "--strict", str(CHART), "-f", str(values_file(values)))
    assert "1 chart(s) linted, 0 chart(s) failed" in output


def test_defaults_run_one_replica_cluster_wide_with_peering() -> None:
    docs = render(CLUSTER_WIDE)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    env = container_env(docs)
    assert env["FLEETSHIFT_NAMESPACES"] == "[]"
    assert env["FLEETSHIFT_PEERING"] == "fs-fleetshift"
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "fs-fleetshift"
    assert find(docs, "Role") == [] and find(docs, "RoleBinding") == []
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fs-fleetshift", "namespace": "fleetshift-system"}
    ]
    # Off by default: they need prometheus-operator's CRDs.
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert find(docs, kind) == []


def test_pod_is_restricted_with_probes_on_kopf_health_and_metrics_on_all_interfaces() -> None:
    docs = render(CLUSTER_WIDE)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = container_env(docs)
    assert env["FLEETSHIFT_HEALTH_HOST"] == "0.0.0.0"
    assert int(env["FLEETSHIFT_HEALTH_PORT"]) == ports["health"]
    assert env["FLEETSHIFT_METRICS_HOST"] == "0.0.0.0"
    assert int(env["FLEETSHIFT_METRICS_PORT"]) == ports["metrics"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]


def test_namespaced_mode_binds_a_role_in_each_listed_namespace_only() -> None:
    docs = render(namespaced("team-a", "team-b"))
    assert container_env(docs)["FLEETSHIFT_NAMESPACES"] == '["team-a","team-b"]'
    roles = {r["metadata"]["namespace"] for r in find(docs, "Role")}
    bindings = {b["metadata"]["namespace"] for b in find(docs, "RoleBinding")}
    assert roles == bindings == {"team-a", "team-b"}
    peerings = {p["metadata"]["namespace"] for p in find(docs, "KopfPeering")}
    assert peerings == {"team-a", "team-b"}
    assert find(docs, "ClusterKopfPeering") == []
    # The one cluster-scoped grant is read-only observation for kopf.
    observer = one(docs, "ClusterRole")
    verbs = {verb for rule in observer["rules"] for verb in rule["verbs"]}
    resources = {res for rule in observer["rules"] for res in rule["resources"]}
    assert verbs == {"list", "watch"}
    assert resources == {"customresourcedefinitions", "namespaces"}


def test_namespaced_mode_can_drop_the_cluster_scoped_observer() -> None:
    docs = render(merge(namespaced("team-a"), {"rbac": {"observeClusterScope": False}}))
    assert find(docs, "ClusterRole") == [] and find(docs, "ClusterRoleBinding") == []


def test_ha_runs_two_peering_replicas_that_roll_without_overlap() -> None:
    docs = render(HA)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pod_id = next(e for e in container["env"] if e["name"] == "POD_ID")
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "FLEETSHIFT_PEERING" in container_env(docs)
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_without_peering_one_replica_is_replaced_not_overlapped() -> None:
    docs = render({"peering": {"enabled": False}})
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert "FLEETSHIFT_PEERING" not in container_env(docs)
    assert find(docs, "ClusterKopfPeering") == []
    rules = one(docs, "ClusterRole")["rules"]
    assert not [r for r in rules if r["apiGroups"] == ["kopf.dev"]]


def test_several_replicas_without_peering_are_refused() -> None:
    output = helm(
        "template",
        "fs",
        str(CHART),
        "-f",
        str(values_file({"replicaCount": 2, "peering": {"enabled": False}})),
        check=False,
    )
    assert "replicaCount > 1 needs peering.enabled" in output


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicas": 2}, "replicas"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"watch": {"namespaces": ["Not_A_Namespace"]}}, "namespaces"),
        ({"prometheus": {"url": "prometheus:9090"}}, "url"),
    ],
)
def test_schema_rejects_wrong_values(values: dict[str, Any], complaint: str) -> None:
    output = helm("template", "fs", str(CHART), "-f", str(values_file(values)), check=False)
    assert "values don't meet the specifications of the schema" in output
    assert complaint in output


def test_prometheus_credentials_come_from_secrets_and_a_mounted_ca_bundle() -> None:
    values = {
        "prometheus": {
            "url": "https://prometheus.monitoring:9090",
            "bearerTokenSecret": {"name": "prom-token", "key": "token"},
            "caBundle": {"configMap": "prom-ca", "key": "ca.crt"},
        }
    }
    docs = render(values)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    by_name = {e["name"]: e for e in container["env"]}
    assert by_name["FLEETSHIFT_PROMETHEUS_URL"]["value"] == "https://prometheus.monitoring:9090"
    assert by_name["FLEETSHIFT_PROMETHEUS_BEARER_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "prom-token", "key": "token"}
    }
    ca_file = Path(by_name["FLEETSHIFT_PROMETHEUS_CA_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "prometheus-ca")
    assert ca_file.parent == Path(mount["mountPath"])
    volume = next(v for v in pod["volumes"] if v["name"] == "prometheus-ca")
    assert volume["configMap"] == {"name": "prom-ca"}


def test_monitoring_objects_select_the_operator_and_keep_endpoint_labels() -> None:
    docs = render(merge(MONITORING, namespaced("team-a")))
    service = one(docs, "Service")
    monitor = one(docs, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    pods = one(docs, "PodMonitor")
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    alerts = {
        rule["alert"]
        for group in one(docs, "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
    }
    assert {
        "ModelEndpointErrorBudgetBurn",
        "ModelEndpointHighErrorRate",
        "ModelEndpointHighLatencyP99",
    } <= alerts


def test_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard() -> None:
    docs = render(CLUSTER_WIDE)
    configmap = one(docs, "ConfigMap", "fs-fleetshift-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["fleetshift-rollouts.json"])
    assert dashboard["uid"] == "fleetshift-rollouts"
    titles = {p["title"] for p in dashboard["panels"]}
    assert {
        "Invocations",
        "4xx errors",
        "5xx errors",
        "Model latency p50",
        "Model latency p99",
        "Green traffic share",
    } <= titles
    annotations = {a["name"] for a in dashboard["annotations"]["list"]}
    assert {"Traffic step changes", "Deployments finished"} <= annotations

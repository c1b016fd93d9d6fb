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
from fleetshift_operator.api import ModelSource, Variant
from fleetshift_operator.health import LIVENESS_PATH, READINESS_PATH
from fleetshift_operator.manifests import LABEL_ENDPOINT, get_deployment
from fleetshift_operator.planning.types import FleetPlan

VALUE_SETS = {
    "cluster-wide": CLUSTER_WIDE,
    "namespaced": namespaced("team-a", "team-b"),
    "ha": HA,
    "ha-namespaced-monitoring": merge(HA, namespaced("team-a"), MONITORING),
    "no-peering": {"peering": {"enabled": False}},
    "network-policies": merge(namespaced("team-a"), {"networkPolicy": {"enabled": True}}),
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


def test_pod_is_restricted_with_probes_on_the_health_port_and_metrics_on_all_interfaces() -> None:
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
    assert container["livenessProbe"]["httpGet"] == {"path": LIVENESS_PATH, "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": READINESS_PATH, "port": "health"}
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
        ({"networkPolicy": {"enabled": "yes"}}, "enabled"),
        ({"networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1"]}}}, "cidrs"),
        ({"networkPolicy": {"modelPods": {"allowedNamespaces": [{"team": "web"}]}}}, "team"),
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


def test_the_operator_is_alive_and_ready_on_different_paths() -> None:
    container = one(render(CLUSTER_WIDE), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"]["path"] != readiness["httpGet"]["path"]
    assert liveness["httpGet"]["port"] == readiness["httpGet"]["port"] == "health"


NETWORK_POLICIES: dict[str, Any] = {"networkPolicy": {"enabled": True}}


def _rules_by_port(rules: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    """Each port of ``rules`` with the peers allowed on it (``[]``: any peer)."""
    peers: dict[Any, list[dict[str, Any]]] = {}
    for rule in rules:
        for port in rule["ports"]:
            peers.setdefault(port["port"], []).extend(rule.get("from") or rule.get("to") or [])
    return peers


def test_network_policies_are_off_by_default() -> None:
    assert find(render(CLUSTER_WIDE), "NetworkPolicy") == []


def test_the_operator_pod_policy_allows_only_probes_scrapes_api_server_prometheus_and_dns() -> None:
    docs = render(merge(namespaced("ml"), NETWORK_POLICIES))
    deployment = one(docs, "Deployment")
    policy = one(docs, "NetworkPolicy", "fs-fleetshift")
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == "fleetshift-system"
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {},
    }
    assert _rules_by_port(spec["ingress"]) == {"health": [], "metrics": [prometheus]}
    egress = _rules_by_port(spec["egress"])
    assert egress[443] == egress[6443] == [], "the API server at any address by default"
    assert egress[9090] == [prometheus]
    assert (
        egress[53]
        == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}] * 2
    )
    assert set(egress) == {443, 6443, 9090, 53}


def test_the_api_server_egress_can_name_its_addresses() -> None:
    values = merge(
        namespaced("ml"),
        NETWORK_POLICIES,
        {"networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [6443]}}},
    )
    egress = _rules_by_port(one(render(values), "NetworkPolicy", "fs-fleetshift")["spec"]["egress"])
    assert egress[6443] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert 443 not in egress


def test_model_pods_get_a_policy_in_every_watched_namespace() -> None:
    values = merge(
        namespaced("ml", "prod"),
        NETWORK_POLICIES,
        {"networkPolicy": {"modelPods": {"allowedNamespaces": [{"matchLabels": {"team": "web"}}]}}},
    )
    policies = [
        p
        for p in find(render(values), "NetworkPolicy")
        if p["metadata"]["name"] == "fs-fleetshift-model-pods"
    ]
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["ml", "prod"]
    for policy in policies:
        spec = policy["spec"]
        assert spec["podSelector"] == {
            "matchExpressions": [{"key": LABEL_ENDPOINT, "operator": "Exists"}]
        }
        assert spec["policyTypes"] == ["Ingress"], "egress stays open: models load from S3 or HTTP"
        ingress = _rules_by_port(spec["ingress"])
        assert ingress["http"] == [
            {"podSelector": {}},
            {"namespaceSelector": {"matchLabels": {"team": "web"}}},
        ]
        assert ingress["metrics"] == [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {},
            }
        ]
        assert set(ingress) == {"http", "metrics"}


def test_model_pod_ports_in_the_policy_are_the_ones_the_operator_names() -> None:
    endpoint = {"metadata": {"name": "churn", "namespace": "ml", "uid": "u1"}}
    variant = Variant(name="main", model=ModelSource(uri="s3://m/1"))
    deployment = get_deployment(
        endpoint, variant, FleetPlan("main", "abc", "green", 1, 0), include_replicas=True
    )
    pod = deployment["spec"]["template"]
    named = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    policy = one(
        render(merge(namespaced("ml"), NETWORK_POLICIES)),
        "NetworkPolicy",
        "fs-fleetshift-model-pods",
    )
    assert set(_rules_by_port(policy["spec"]["ingress"])) <= named
    assert LABEL_ENDPOINT in pod["metadata"]["labels"]


def test_a_model_namespace_may_admit_no_callers_but_prometheus() -> None:
    values = merge(
        namespaced("ml"),
        NETWORK_POLICIES,
        {"networkPolicy": {"modelPods": {"allowSameNamespace": False}}},
    )
    policy = one(render(values), "NetworkPolicy", "fs-fleetshift-model-pods")
    assert set(_rules_by_port(policy["spec"]["ingress"])) == {"metrics"}


def test_model_pod_policies_in_cluster_wide_mode_need_their_namespaces() -> None:
    output = helm(
        "template", "fs", str(CHART), "-f", str(values_file(NETWORK_POLICIES)), check=False
    )
    assert "networkPolicy.modelPods.namespaces" in output
    values = merge(NETWORK_POLICIES, {"networkPolicy": {"modelPods": {"namespaces": ["ml"]}}})
    assert (
        one(render(values), "NetworkPolicy", "fs-fleetshift-model-pods")["metadata"]["namespace"]
        == "ml"
    )

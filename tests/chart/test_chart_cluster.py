"""The chart on the real local control plane.

The rendered manifests pass the apiserver's server-side dry run; `helm install` puts the
operator pod on a kwok node past the `restricted` Pod Security level; and the real
operator process, authenticated with a token of the chart's ServiceAccount, completes a
canary rollout (the RBAC is enough) while that account may do nothing beyond the
allow-list below (the RBAC is no more). Two replicas share the work through kopf peering:
one acts, the other waits and takes over when the first leaves.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.authorization_v1 import SelfSubjectRulesReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.authorization_v1 import SelfSubjectRulesReview
from lightkube.resources.core_v1 import Namespace, Pod, ServiceAccount
from lightkube.types import PatchType
from prometheus_client.parser import text_string_to_metric_families

from chart.helm_kit import (
    CHART,
    CLUSTER_WIDE,
    HA,
    MONITORING,
    client_for,
    container_env,
    helm,
    kubectl,
    merge,
    namespaced,
    prometheus_operator_crds,
    render,
    service_account_kubeconfig,
    values_file,
)
from fleetshift_devcluster.cluster import LocalCluster, free_port
from fleetshift_devcluster.crds import install_crds
from fleetshift_devcluster.wait import wait_for
from support.operator_process import (
    OperatorProcess,
    create_serving,
    deployments_of,
    revision_of,
    serving_by_revision,
    set_spec,
    status_of,
)

NAME = "churn"
ClusterKopfPeering = create_global_resource(
    "kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings"
)
KopfPeering = create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")

Rule = tuple[str, str, str]
"""(API group, resource, verb) as a SelfSubjectRulesReview grants it."""


def _rules(group: str, resource: str, *verbs: str) -> set[Rule]:
    return {(group, resource, verb) for verb in verbs}


# What the operator needs in a namespace it watches: the allow-list the chart must match
# exactly. Each line is explained in charts/fleetshift/templates/_helpers.tpl.
WATCHED_NAMESPACE = (
    _rules("fleetshift.dev", "endpoints", "get", "list", "watch", "patch")
    | _rules("fleetshift.dev", "endpoints/status", "patch")
    | _rules("fleetshift.dev", "endpoints/finalizers", "update")
    | _rules("apps", "deployments", "list", "watch", "create", "patch", "delete")
    | _rules("", "pods", "list", "watch", "patch")
    | _rules("", "services", "list", "watch", "create", "patch", "delete")
    | _rules(
        "autoscaling", "horizontalpodautoscalers", "list", "watch", "create", "patch", "delete"
    )
    | _rules("policy", "poddisruptionbudgets", "list", "watch", "create", "patch", "delete")
    | _rules("", "configmaps", "list", "watch", "create", "patch")
    | _rules("gateway.networking.k8s.io", "httproutes", "create", "patch")
    | _rules("", "secrets", "get")
    | _rules("", "events", "create")
)
CRD_OBSERVATION = _rules("apiextensions.k8s.io", "customresourcedefinitions", "list", "watch")
NAMESPACE_OBSERVATION = _rules("", "namespaces", "list", "watch")
CLUSTER_PEERING = _rules("kopf.dev", "clusterkopfpeerings", "get", "list", "watch", "patch")
NAMESPACED_PEERING = _rules("kopf.dev", "kopfpeerings", "get", "list", "watch", "patch")


@pytest.fixture(scope="session")
def chart_crds(kube: Client) -> list[str]:
    """The chart's CRDs (Endpoint, kopf peering) and prometheus-operator's, established."""
    paths = sorted((CHART / "crds").glob("*.yaml")) + prometheus_operator_crds()
    documents = [document for path in paths for document in yaml.safe_load_all(path.read_text())]
    return install_crds(kube, documents, what="chart CRDs")


@pytest.fixture
def install(
    kubeconfig: Path, namespace: str, chart_crds: list[str]
) -> Iterator[Callable[[dict[str, Any]], tuple[str, str]]]:
    """``install(values)`` runs `helm install --wait` into the test's namespace and returns
    (release, output); every release is uninstalled afterwards (it has cluster-scoped parts)."""
    releases: list[str] = []

    def run(values: dict[str, Any]) -> tuple[str, str]:
        release = f"fs-{uuid.uuid4().hex[:6]}"
        releases.append(release)
        output = helm(
            "install",
            release,
            str(CHART),
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            f"--values={values_file(values)}",
            "--wait",
            "--timeout=180s",
        )
        return release, output

    yield run
    for release in releases:
        helm(
            "uninstall",
            release,
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            "--wait",
            check=False,
        )


def _granted(client: Client, namespace: str) -> tuple[set[Rule], set[tuple[str, str]]]:
    """What ``client``'s identity may do in ``namespace`` (`kubectl auth can-i --list`)."""
    review = client.create(
        SelfSubjectRulesReview(spec=SelfSubjectRulesReviewSpec(namespace=namespace))
    )
    assert review.status is not None and not review.status.incomplete
    resources: set[Rule] = set()
    for rule in review.status.resourceRules:
        assert not rule.resourceNames, f"unexpected resourceNames rule {rule}"
        for group in rule.apiGroups or [""]:
            for resource in rule.resources or []:
                resources.update((group, resource, verb) for verb in rule.verbs)
    urls = {
        (url, verb)
        for rule in review.status.nonResourceRules
        for url in rule.nonResourceURLs or []
        for verb in rule.verbs
    }
    return resources, urls


def _service_account_client(
    kube: Client, cluster: LocalCluster, namespace: str, account: str, folder: Path
) -> Client:
    return client_for(service_account_kubeconfig(kube, cluster, namespace, account, folder))


def _baseline(
    kube: Client, cluster: LocalCluster, namespace: str, tmp_path: Path
) -> tuple[set[Rule], set[tuple[str, str]]]:
    """What any authenticated ServiceAccount may do: the cluster's defaults."""
    kube.create(ServiceAccount(metadata=ObjectMeta(name="nobody", namespace=namespace)))
    client = _service_account_client(kube, cluster, namespace, "nobody", tmp_path)
    return _granted(client, namespace)


@pytest.fixture
def other_namespace(kube: Client) -> Iterator[str]:
    """A second namespace the chart is not told to watch."""
    name = f"unwatched-{uuid.uuid4().hex[:6]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name, labels={"fleetshift.dev/test": "true"})))
    yield name
    kube.delete(Namespace, name)


DRY_RUN_VALUES: dict[str, Callable[[str], dict[str, Any]]] = {
    "cluster-wide": lambda _: CLUSTER_WIDE,
    "namespaced": namespaced,
    "ha-monitoring": lambda _: merge(HA, MONITORING),
    "ha-namespaced-monitoring": lambda ns: merge(HA, namespaced(ns), MONITORING),
}


@pytest.mark.parametrize("values_for", DRY_RUN_VALUES.values(), ids=DRY_RUN_VALUES.keys())
def test_rendered_manifests_pass_a_server_side_dry_run(
    kubeconfig: Path,
    namespace: str,
    chart_crds: list[str],
    values_for: Callable[[str], dict[str, Any]],
) -> None:
    docs = render(values_for(namespace), namespace=namespace)
    output = kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=helm",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(docs),
    )
    applied = [line for line in output.splitlines() if "serverside-applied" in line]
    assert len(applied) == len(docs), output


def test_helm_install_runs_the_operator_pod_on_a_kwok_node_under_restricted_security(
    kube: Client, namespace: str, install: Callable[[dict[str, Any]], tuple[str, str]]
) -> None:
    kube.patch(
        Namespace,
        namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        patch_type=PatchType.MERGE,
    )

    release, output = install(CLUSTER_WIDE)

    deployment = kube.get(Deployment, f"{release}-fleetshift", namespace=namespace)
    assert deployment.status is not None and deployment.status.readyReplicas == 1
    pods = list(kube.list(Pod, namespace=namespace, labels={"app.kubernetes.io/instance": release}))
    assert len(pods) == 1
    pod = pods[0]
    assert pod.spec is not None and (pod.spec.nodeName or "").startswith("kwok-node-")
    assert pod.status is not None and pod.status.phase == "Running"
    assert kube.get(ClusterKopfPeering, f"{release}-fleetshift")
    assert f"kubectl -n {namespace} rollout status deployment/{release}-fleetshift" in output
    assert "kubectl apply -f examples/churn-baseline.yaml" in output


def test_cluster_wide_service_account_may_do_exactly_the_allow_list(
    kube: Client,
    cluster: LocalCluster,
    namespace: str,
    install: Callable[[dict[str, Any]], tuple[str, str]],
    tmp_path: Path,
) -> None:
    baseline, baseline_urls = _baseline(kube, cluster, namespace, tmp_path)
    release, _ = install(CLUSTER_WIDE)

    operator = _service_account_client(kube, cluster, namespace, f"{release}-fleetshift", tmp_path)
    granted, urls = _granted(operator, namespace)

    assert granted - baseline == WATCHED_NAMESPACE | CRD_OBSERVATION | CLUSTER_PEERING
    assert urls == baseline_urls


def test_namespaced_service_account_is_confined_to_its_namespaces(
    kube: Client,
    cluster: LocalCluster,
    namespace: str,
    other_namespace: str,
    install: Callable[[dict[str, Any]], tuple[str, str]],
    tmp_path: Path,
) -> None:
    baseline, _ = _baseline(kube, cluster, namespace, tmp_path)
    release, _ = install(namespaced(namespace))

    operator = _service_account_client(kube, cluster, namespace, f"{release}-fleetshift", tmp_path)
    watched, _ = _granted(operator, namespace)
    unwatched, _ = _granted(operator, other_namespace)

    observation = CRD_OBSERVATION | NAMESPACE_OBSERVATION
    assert watched - baseline == WATCHED_NAMESPACE | NAMESPACED_PEERING | observation
    assert unwatched - baseline == observation


# -- the real operator under the chart's ServiceAccount ------------------------------------


def _spec(model: str) -> dict[str, Any]:
    """Four replicas and a 25% canary that bakes 3 s (as tests/cluster/test_rollout.py)."""
    return {
        "variants": [{"name": "main", "model": {"uri": model}, "replicas": 4}],
        "deploymentConfig": {
            "blueGreen": {
                "trafficRouting": {
                    "type": "Canary",
                    "canarySize": {"type": "CapacityPercent", "value": 25},
                    "waitIntervalSeconds": 3,
                },
                "terminationWaitSeconds": 2,
                "maximumExecutionTimeoutSeconds": 1800,
            }
        },
    }


def _canary_completes(kube: Client, namespace: str, model: str) -> str:
    """Update the Endpoint to ``model`` and follow the canary to its end; green's revision."""
    blue = status_of(kube, NAME, namespace)["activeRevision"]
    update = _spec(model)
    green = revision_of(update)
    set_spec(kube, NAME, namespace, update)
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {blue: 3, green: 1},
        timeout=90,
        message="canary: 3 blue + 1 green serving",
    )
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {green: 4},
        timeout=90,
        message="all traffic on green",
    )
    wait_for(
        lambda: deployments_of(kube, namespace, NAME).keys() == {green},
        timeout=90,
        message="blue retired",
    )
    status = wait_for(
        lambda: (s := status_of(kube, NAME, namespace)).get("activeRevision") == green and s,
        timeout=30,
        message="green active in status",
    )
    assert status["phase"] == "InService"
    assert status["lastDeployment"]["outcome"] == "Succeeded"
    return green


def _create_in_service(kube: Client, namespace: str) -> str:
    return create_serving(kube, NAME, namespace, _spec("s3://models/churn/v1"), timeout=120)


def _operator(
    kubeconfig: Path, namespace: str, chart_env: dict[str, str], log: Path, pod: str
) -> tuple[OperatorProcess, dict[str, int]]:
    """The operator as the chart configures it, on loopback ports, named ``pod``."""
    ports = {"metrics": free_port(), "health": free_port()}
    env = {
        **chart_env,
        "POD_ID": pod,
        "FLEETSHIFT_POLL_INTERVAL_SECONDS": "1",
        "FLEETSHIFT_METRICS_HOST": "127.0.0.1",
        "FLEETSHIFT_METRICS_PORT": str(ports["metrics"]),
        "FLEETSHIFT_HEALTH_HOST": "127.0.0.1",
        "FLEETSHIFT_HEALTH_PORT": str(ports["health"]),
    }
    process = OperatorProcess(kubeconfig, namespace, log, extra_env=env)
    process.start()
    return process, ports


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text: str = answer.read().decode()
        return text


def _reconciles(ports: dict[str, int]) -> float:
    """Successful reconciles the replica behind ``ports`` has done."""
    text = _get(f"http://127.0.0.1:{ports['metrics']}/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "fleetshift_operator_reconciles"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("result") == "ok"
    )


def test_operator_under_the_chart_service_account_completes_a_canary(
    kube: Client,
    cluster: LocalCluster,
    namespace: str,
    install: Callable[[dict[str, Any]], tuple[str, str]],
    tmp_path: Path,
) -> None:
    release, _ = install(CLUSTER_WIDE)
    account = f"{release}-fleetshift"
    chart_env = container_env(render(CLUSTER_WIDE, release=release, namespace=namespace))
    assert chart_env["FLEETSHIFT_NAMESPACES"] == "[]", "cluster-wide, as installed"
    credentials = service_account_kubeconfig(kube, cluster, namespace, account, tmp_path)
    operator, ports = _operator(credentials, namespace, chart_env, tmp_path / "op.log", "op-0")
    try:
        health = wait_for(
            lambda: _get(f"http://127.0.0.1:{ports['health']}/healthz"),
            timeout=60,
            message="/healthz answers (the chart's liveness probe)",
        )
        assert json.loads(health) == {"alive": True}
        ready = wait_for(
            lambda: _get(f"http://127.0.0.1:{ports['health']}/readyz"),
            timeout=60,
            message="/readyz answers 200 after kopf's startup (the chart's readiness probe)",
        )
        assert json.loads(ready) == {"ready": True}
        blue = _create_in_service(kube, namespace)

        green = _canary_completes(kube, namespace, "s3://models/churn/v2")

        assert green != blue
        log = (tmp_path / "op.log").read_text()
        for complaint in ("403", "Forbidden", "Not enough permissions"):
            assert complaint not in log, operator.log_tail()
        peers = kube.get(ClusterKopfPeering, account).to_dict()  # type: ignore[no-untyped-call]
        assert "op-0" in (peers.get("status") or {}), "the replica keeps its peering keep-alive"
    finally:
        operator.stop()


def test_two_replicas_one_acts_and_the_standby_takes_over_when_it_leaves(
    kube: Client,
    cluster: LocalCluster,
    namespace: str,
    install: Callable[[dict[str, Any]], tuple[str, str]],
    tmp_path: Path,
) -> None:
    values = merge(HA, namespaced(namespace))
    release, _ = install(values)
    account = f"{release}-fleetshift"
    chart_env = container_env(render(values, release=release, namespace=namespace))
    credentials = service_account_kubeconfig(kube, cluster, namespace, account, tmp_path)

    def peers() -> dict[str, Any]:
        peering = kube.get(KopfPeering, account, namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
        status: dict[str, Any] = peering.get("status") or {}
        return status

    first, first_ports = _operator(credentials, namespace, chart_env, tmp_path / "a.log", "rep-a")
    second: OperatorProcess | None = None
    try:
        wait_for(lambda: "rep-a" in peers(), timeout=60, message="first replica peering")
        second, second_ports = _operator(
            credentials, namespace, chart_env, tmp_path / "b.log", "rep-b"
        )
        wait_for(lambda: "rep-b" in peers(), timeout=60, message="second replica peering")
        ranks = peers()
        assert ranks["rep-a"]["priority"] > ranks["rep-b"]["priority"], "the older one leads"

        _create_in_service(kube, namespace)
        _canary_completes(kube, namespace, "s3://models/churn/v2")

        assert _reconciles(first_ports) > 0, "the leader acts"
        assert _reconciles(second_ports) == 0, "the standby does nothing"

        first.stop()
        wait_for(lambda: "rep-a" not in peers(), timeout=30, message="leader left the peering")
        _canary_completes(kube, namespace, "s3://models/churn/v3")

        assert _reconciles(second_ports) > 0, "the standby took over"
        for log in ("a.log", "b.log"):
            text = (tmp_path / log).read_text()
            for complaint in ("403", "Forbidden", "Not enough permissions"):
                assert complaint not in text, f"{log}: {text[-2000:]}"
    finally:
        first.stop()
        if second is not None:
            second.stop()

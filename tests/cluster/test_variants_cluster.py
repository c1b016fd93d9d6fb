"""Per-variant rollouts, as a new user meets them on the real control plane: the
smallest spec, adding a variant to a live Endpoint, weights, a fleet that goes unready at
rest, and green pods that cannot be scheduled."""

from __future__ import annotations

import time
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.models.core_v1 import Container, PodSpec, ResourceQuotaSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Pod, ResourceQuota
from lightkube.resources.policy_v1 import PodDisruptionBudget

from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.api import Variant
from fleetshift_operator.planning.names import calculate_revision, fleet_name
from support.operator_process import (
    OperatorProcess,
    deployments_of,
    endpoint_manifest,
    make_unready,
    serving_by_revision,
    set_spec,
    status_of,
)

NAME = "churn"


def variant(name: str, model: str, replicas: int = 1, weight: int = 1) -> dict[str, Any]:
    return {"name": name, "model": {"uri": model}, "replicas": replicas, "weight": weight}


def revision(spec_variant: dict[str, Any]) -> str:
    return calculate_revision(Variant.model_validate(spec_variant))


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def create_in_service(
    kube: Client, namespace: str, main: dict[str, Any], policy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Create a one-variant Endpoint (with ``policy`` as its deploymentConfig) and wait
    for it to serve; returns the spec, for edits."""
    spec: dict[str, Any] = {"variants": [main]}
    if policy is not None:
        spec["deploymentConfig"] = policy
    kube.create(endpoint_manifest(NAME, namespace, spec))
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
        timeout=60,
        message="InService",
    )
    return spec


def test_the_smallest_endpoint_is_served_under_a_sagemaker_variant_name(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    only = {"name": "AllTraffic", "model": {"uri": "s3://models/churn/v1"}}
    kube.create(endpoint_manifest(NAME, namespace, {"variants": [only]}))
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "InService",
        timeout=60,
        message="the smallest Endpoint InService",
    )
    deployment = kube.get(
        Deployment, fleet_name(NAME, "AllTraffic", revision(only)), namespace=namespace
    )
    assert deployment.metadata is not None and deployment.metadata.name is not None
    assert deployment.metadata.name.startswith("churn-alltraffic-")
    assert serving_by_revision(kube, namespace, NAME) == {revision(only): 1}


def test_adding_a_variant_serves_it_without_redeploying_the_champion(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    champion = variant("champion", "s3://models/churn/v1", replicas=4, weight=80)
    kube.create(endpoint_manifest(NAME, namespace, {"variants": [champion]}))
    wait_for(
        lambda: (
            serving_by_revision(kube, namespace, NAME) == {revision(champion): 4}
            and status_of(kube, NAME, namespace).get("phase") == "InService"
        ),
        timeout=60,
        message="the champion InService",
    )
    before = kube.get(
        Deployment, fleet_name(NAME, "champion", revision(champion)), namespace=namespace
    )

    challenger = variant("challenger", "s3://models/churn/v2", replicas=1, weight=20)
    added = time.monotonic()
    set_spec(kube, NAME, namespace, {"variants": [champion, challenger]})
    wait_for(
        lambda: (
            serving_by_revision(kube, namespace, NAME)
            == {revision(champion): 4, revision(challenger): 1}
        ),
        timeout=60,
        message="4 champion and 1 challenger pods serving (80/20)",
    )
    print(f"adding a variant to it serving: {time.monotonic() - added:.2f} s")
    wait_for(
        lambda: (
            status_of(kube, NAME, namespace).get("observedGeneration") == 2
            and status_of(kube, NAME, namespace).get("phase") == "InService"
        ),
        timeout=30,
        message="generation 2 observed, InService",
    )
    status = status_of(kube, NAME, namespace)
    shares = {
        v["name"]: (v["requestedTrafficPercent"], v["trafficPercent"]) for v in status["variants"]
    }
    assert shares == {"champion": (80, 80), "challenger": (20, 20)}
    after = kube.get(
        Deployment, fleet_name(NAME, "champion", revision(champion)), namespace=namespace
    )
    assert before.metadata is not None and after.metadata is not None
    assert after.metadata.uid == before.metadata.uid, "the champion was not redeployed"
    assert set(deployments_of(kube, namespace, NAME)) == {revision(champion), revision(challenger)}

    # weight 0: its pods leave the Service, its fleet stays
    set_spec(kube, NAME, namespace, {"variants": [champion, {**challenger, "weight": 0}]})
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {revision(champion): 4},
        timeout=30,
        message="weight 0 serves nothing",
    )
    assert set(deployments_of(kube, namespace, NAME)) == {revision(champion), revision(challenger)}

    # removed: its fleet goes
    set_spec(kube, NAME, namespace, {"variants": [champion]})
    wait_for(
        lambda: set(deployments_of(kube, namespace, NAME)) == {revision(champion)},
        timeout=30,
        message="the removed variant's fleet deleted",
    )


def test_an_endpoint_whose_pods_all_go_unready_is_out_of_service_not_healthy(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    main = variant("main", "s3://models/churn/v1", replicas=2)
    create_in_service(kube, namespace, main)
    make_unready(kube, namespace, revision(main))
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("phase") == "OutOfService",
        timeout=30,
        message="OutOfService once no replica is Ready",
    )
    status = status_of(kube, NAME, namespace)
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Ready")["reason"] == "OutOfService"
    assert condition(status, "Degraded")["status"] == "True"


def test_green_pods_that_cannot_be_scheduled_show_at_once_and_roll_back_at_the_timeout(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    policy = {"blueGreen": {"provisioningTimeoutSeconds": 15}}
    main = variant("main", "s3://models/churn/v1", replicas=2)
    create_in_service(kube, namespace, main, policy)
    stuck = {**main, "model": {"uri": "s3://models/churn/v2"}, "nodeSelector": {"no": "such-node"}}
    set_spec(kube, NAME, namespace, {"variants": [stuck], "deploymentConfig": policy})
    started = time.monotonic()
    wait_for(
        lambda: (
            "Unschedulable"
            in condition(status_of(kube, NAME, namespace), "Degraded").get("message", "")
        ),
        timeout=20,
        message="Degraded names the Unschedulable reason",
    )
    print(f"Pending green to Degraded: {time.monotonic() - started:.2f} s")
    assert status_of(kube, NAME, namespace)["phase"] == "Updating"
    wait_for(
        lambda: (
            (status_of(kube, NAME, namespace).get("lastDeployment") or {}).get("outcome")
            == "RolledBack"
        ),
        timeout=40,
        message="rolled back at provisioningTimeoutSeconds",
    )
    last = status_of(kube, NAME, namespace)["lastDeployment"]
    assert "provisioningTimeoutSeconds (15s)" in last["reason"]
    assert "Unschedulable" in last["reason"]
    wait_for(
        lambda: set(deployments_of(kube, namespace, NAME)) == {revision(main)},
        timeout=30,
        message="the stuck green fleet deleted",
    )


def test_green_pods_refused_by_a_quota_say_so_in_degraded(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    main = variant("main", "s3://models/churn/v1", replicas=2)
    create_in_service(kube, namespace, main)
    kube.create(
        ResourceQuota(
            metadata=ObjectMeta(name="two-pods", namespace=namespace),
            spec=ResourceQuotaSpec(hard={"pods": "2"}),
        )
    )
    wait_for(
        lambda: any(
            q.status and q.status.hard for q in kube.list(ResourceQuota, namespace=namespace)
        ),
        timeout=30,
        message="the quota counted",
    )
    update = {**main, "model": {"uri": "s3://models/churn/v2"}}
    set_spec(kube, NAME, namespace, {"variants": [update]})
    wait_for(
        lambda: (
            "exceeded quota"
            in condition(status_of(kube, NAME, namespace), "Degraded").get("message", "")
        ),
        timeout=30,
        message="Degraded names the exceeded quota",
    )
    status = status_of(kube, NAME, namespace)
    assert status["phase"] == "Updating"
    assert condition(status, "Degraded")["reason"] == "PodsNotReady"
    # Blue keeps serving with both its pods (the EndpointSlices may lag a loaded machine).
    wait_for(
        lambda: serving_by_revision(kube, namespace, NAME) == {revision(main): 2},
        timeout=30,
        message="blue serving with its 2 pods",
    )


def test_a_10_percent_canary_on_3_replicas_reports_the_share_it_serves(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    canary = {
        "blueGreen": {
            "trafficRouting": {
                "type": "Canary",
                "canarySize": {"type": "CapacityPercent", "value": 10},
                "waitIntervalSeconds": 300,
            }
        }
    }
    main = variant("main", "s3://models/churn/v1", replicas=3)
    create_in_service(kube, namespace, main, canary)
    update = {**main, "model": {"uri": "s3://models/churn/v2"}}
    set_spec(kube, NAME, namespace, {"variants": [update], "deploymentConfig": canary})
    wait_for(
        lambda: (
            serving_by_revision(kube, namespace, NAME) == {revision(main): 3, revision(update): 1}
        ),
        timeout=60,
        message="3 blue and 1 green pod serving",
    )
    wait_for(
        lambda: status_of(kube, NAME, namespace).get("greenTrafficPercent") == 25,
        timeout=30,
        message="status says 25%, the share served",
    )
    status = status_of(kube, NAME, namespace)
    assert status["step"]["greenPercent"] == 10
    assert status["fleets"]["green"]["requestedTrafficPercent"] == 10
    split = condition(status, "TrafficSplit")
    assert split["status"] == "False"
    assert "asked 10%, serves 25%" in split["message"]


def disruption_budgets(kube: Client, namespace: str) -> dict[str, int | str]:
    return {
        (b.metadata.name or "").removeprefix(f"{NAME}-main-"): b.spec.maxUnavailable
        for b in kube.list(PodDisruptionBudget, namespace=namespace)
        if b.metadata and b.spec and b.spec.maxUnavailable is not None
    }


def test_each_fleet_has_a_disruption_budget_that_follows_the_fleet_and_the_spec(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    main = variant("main", "s3://models/churn/v1", replicas=3)
    spec = create_in_service(kube, namespace, main)
    blue = revision(main)
    wait_for(
        lambda: disruption_budgets(kube, namespace) == {blue: 1},
        timeout=30,
        message="one pod of the fleet at a time",
    )

    quarter = {**main, "disruptionBudget": {"maxUnavailable": "34%"}}
    set_spec(kube, NAME, namespace, {**spec, "variants": [quarter]})
    wait_for(
        lambda: disruption_budgets(kube, namespace) == {blue: "34%"},
        timeout=30,
        message="a percentage from the spec, without redeploying",
    )
    assert set(deployments_of(kube, namespace, NAME)) == {blue}

    update = {**quarter, "model": {"uri": "s3://models/churn/v2"}}
    set_spec(kube, NAME, namespace, {**spec, "variants": [update]})
    wait_for(
        lambda: disruption_budgets(kube, namespace) == {revision(update): "34%"},
        timeout=60,
        message="the new fleet has its budget and the retired one's is gone",
    )

    off = {**update, "disruptionBudget": {"enabled": False}}
    set_spec(kube, NAME, namespace, {**spec, "variants": [off]})
    wait_for(
        lambda: disruption_budgets(kube, namespace) == {},
        timeout=30,
        message="no budget when disabled",
    )


def test_model_pods_are_admitted_where_the_restricted_pod_security_standard_is_enforced(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    # The apiserver's own PodSecurity admission judges every pod the ReplicaSets create.
    kube.patch(
        Namespace,
        namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    main = variant("main", "s3://models/churn/v1", replicas=3)
    create_in_service(kube, namespace, main)
    deployment = kube.get(
        Deployment, fleet_name(NAME, "main", revision(main)), namespace=namespace
    ).to_dict()
    pod = deployment["spec"]["template"]["spec"]
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["metadata"]["annotations"]["fleetshift.dev/pod-template"] == "4"
    # The apiserver kept the drain: a deleted pod serves on while kube-proxy catches up.
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    # The check has teeth: a pod without the restrictions is refused in this namespace.
    with pytest.raises(ApiError, match="violates PodSecurity"):
        kube.create(
            Pod(
                metadata=ObjectMeta(name="unrestricted", namespace=namespace),
                spec=PodSpec(containers=[Container(name="c", image="busybox")]),
            )
        )


def test_turning_data_capture_on_rolls_the_variant_out_with_its_settings(
    kube: Client, namespace: str, operator_process: OperatorProcess
) -> None:
    main = variant("main", "s3://models/churn/v1", replicas=2)
    spec = create_in_service(kube, namespace, main)
    capturing = {
        **main,
        "dataCapture": {"destination": "s3://captures/churn", "samplingPercent": 10},
    }
    assert revision(capturing) != revision(main)
    set_spec(kube, NAME, namespace, {**spec, "variants": [capturing]})
    wait_for(
        lambda: (
            (s := status_of(kube, NAME, namespace)).get("phase") == "InService"
            and s.get("activeRevision") == revision(capturing)
        ),
        timeout=90,
        message="the capturing revision InService",
    )
    deployment = kube.get(
        Deployment, fleet_name(NAME, "main", revision(capturing)), namespace=namespace
    ).to_dict()
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["FLEETSHIFT_CAPTURE_DESTINATION"] == "s3://captures/churn"
    assert env["FLEETSHIFT_CAPTURE_SAMPLING_PERCENT"] == "10"

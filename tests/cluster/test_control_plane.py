"""The local control plane behaves as a real cluster does for what Fleetshift uses."""

from __future__ import annotations

import uuid

import psutil
import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.apiextensions_v1 import (
    CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion,
    CustomResourceValidation,
    JSONSchemaProps,
    ValidationRule,
)
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.autoscaling_v2 import (
    CrossVersionObjectReference,
    HorizontalPodAutoscalerSpec,
    MetricSpec,
    MetricTarget,
    ResourceMetricSource,
)
from lightkube.models.core_v1 import (
    Container,
    PodSpec,
    PodTemplateSpec,
    ResourceRequirements,
    ServicePort,
    ServiceSpec,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod, Service, ServiceAccount
from lightkube.resources.discovery_v1 import EndpointSlice

from fleetshift_devcluster.cluster import LocalCluster
from fleetshift_devcluster.wait import wait_for


def make_deployment(name: str, namespace: str, replicas: int) -> Deployment:
    labels = {"app": name}
    return Deployment(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=DeploymentSpec(
            replicas=replicas,
            selector=LabelSelector(matchLabels=labels),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=labels),
                spec=PodSpec(
                    containers=[
                        Container(
                            name="serve",
                            image="fleetshift/runtime:dev",
                            resources=ResourceRequirements(requests={"cpu": "100m"}),
                        )
                    ]
                ),
            ),
        ),
    )


def is_ready(pod: Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def ready_pods(kube: Client, namespace: str, app: str) -> list[Pod]:
    pods = kube.list(Pod, namespace=namespace, labels={"app": app})
    return [p for p in pods if is_ready(p) and p.metadata and not p.metadata.deletionTimestamp]


def ready_slice_addresses(kube: Client, namespace: str, service: str) -> set[str]:
    addresses: set[str] = set()
    slices = kube.list(
        EndpointSlice, namespace=namespace, labels={"kubernetes.io/service-name": service}
    )
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.endpoints or []:
            if endpoint.conditions and endpoint.conditions.ready:
                addresses.update(endpoint.addresses)
    return addresses


def test_deployment_gets_ready_pods_on_kwok_nodes(kube: Client, namespace: str) -> None:
    kube.create(make_deployment("web", namespace, replicas=3))

    def three_ready_pods() -> list[Pod] | None:
        found = ready_pods(kube, namespace, "web")
        return found if len(found) == 3 else None

    pods = wait_for(three_ready_pods, timeout=60, message="3 Ready pods")

    assert all(p.spec and (p.spec.nodeName or "").startswith("kwok-node-") for p in pods)
    assert all(p.status and p.status.phase == "Running" and p.status.podIP for p in pods)
    deployment = kube.get(Deployment, "web", namespace=namespace)
    assert deployment.status is not None
    wait_for(
        lambda: kube.get(Deployment, "web", namespace=namespace).status.readyReplicas == 3,  # type: ignore[union-attr]
        timeout=30,
        message="Deployment readyReplicas == 3",
    )


def test_endpointslice_follows_ready_pods_and_scale_down(kube: Client, namespace: str) -> None:
    kube.create(make_deployment("api", namespace, replicas=3))
    kube.create(
        Service(
            metadata=ObjectMeta(name="api", namespace=namespace),
            spec=ServiceSpec(
                selector={"app": "api"}, ports=[ServicePort(port=80, targetPort=8080)]
            ),
        )
    )

    def slice_matches_pods(expected_count: int) -> bool:
        pod_ips = {p.status.podIP for p in ready_pods(kube, namespace, "api") if p.status}
        slice_ips = ready_slice_addresses(kube, namespace, "api")
        return len(pod_ips) == expected_count and slice_ips == pod_ips

    wait_for(lambda: slice_matches_pods(3), timeout=60, message="slice lists the 3 Ready pods")

    kube.patch(Deployment, "api", {"spec": {"replicas": 1}}, namespace=namespace)

    wait_for(lambda: slice_matches_pods(1), timeout=60, message="slice shrinks to 1 pod")


def test_deleting_a_deployment_collects_its_replicaset_and_pods(
    kube: Client, namespace: str
) -> None:
    kube.create(make_deployment("gone", namespace, replicas=2))
    wait_for(lambda: len(ready_pods(kube, namespace, "gone")) == 2, timeout=60, message="2 pods")
    assert list(kube.list(ReplicaSet, namespace=namespace, labels={"app": "gone"}))

    kube.delete(Deployment, "gone", namespace=namespace)

    wait_for(
        lambda: not list(kube.list(ReplicaSet, namespace=namespace, labels={"app": "gone"})),
        timeout=60,
        message="ReplicaSet garbage-collected",
    )
    wait_for(
        lambda: not list(kube.list(Pod, namespace=namespace, labels={"app": "gone"})),
        timeout=60,
        message="pods garbage-collected",
    )


def test_namespace_deletion_completes(kube: Client) -> None:
    name = f"doomed-{uuid.uuid4().hex[:6]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    wait_for(
        lambda: kube.get(ServiceAccount, "default", namespace=name),
        timeout=30,
        message="default service account",
    )
    kube.create(make_deployment("app", name, replicas=2))
    kube.create(ConfigMap(metadata=ObjectMeta(name="settings", namespace=name), data={"a": "1"}))
    wait_for(lambda: len(ready_pods(kube, name, "app")) == 2, timeout=60, message="2 pods")

    kube.delete(Namespace, name)

    def namespace_gone() -> bool:
        try:
            kube.get(Namespace, name)
        except ApiError as error:
            return error.status.code == 404
        return False

    wait_for(namespace_gone, timeout=90, message=f"namespace {name} deleted")


def test_hpa_is_accepted_and_reports_conditions(kube: Client, namespace: str) -> None:
    kube.create(make_deployment("scaled", namespace, replicas=1))
    kube.create(
        HorizontalPodAutoscaler(
            metadata=ObjectMeta(name="scaled", namespace=namespace),
            spec=HorizontalPodAutoscalerSpec(
                scaleTargetRef=CrossVersionObjectReference(
                    apiVersion="apps/v1", kind="Deployment", name="scaled"
                ),
                minReplicas=1,
                maxReplicas=4,
                metrics=[
                    MetricSpec(
                        type="Resource",
                        resource=ResourceMetricSource(
                            name="cpu",
                            target=MetricTarget(type="Utilization", averageUtilization=60),
                        ),
                    )
                ],
            ),
        )
    )

    def condition_types() -> set[str]:
        hpa = kube.get(HorizontalPodAutoscaler, "scaled", namespace=namespace)
        return {c.type for c in (hpa.status.conditions if hpa.status else None) or []}

    types = wait_for(condition_types, timeout=60, message="HPA conditions")
    assert "AbleToScale" in types


def test_crd_cel_rule_rejects_invalid_object_with_its_message(kube: Client, namespace: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    group = "smoke.fleetshift.dev"
    plural = f"widgets{suffix}"
    kind = f"Widget{suffix.capitalize()}"
    message = "minReplicas must not exceed maxReplicas"
    schema = JSONSchemaProps(
        type="object",
        properties={
            "spec": JSONSchemaProps(
                type="object",
                required=["minReplicas", "maxReplicas"],
                properties={
                    "minReplicas": JSONSchemaProps(type="integer", minimum=0),
                    "maxReplicas": JSONSchemaProps(type="integer", minimum=1),
                },
                x_kubernetes_validations=[
                    ValidationRule(rule="self.minReplicas <= self.maxReplicas", message=message)
                ],
            )
        },
    )
    crd_name = f"{plural}.{group}"
    kube.create(
        CustomResourceDefinition(
            metadata=ObjectMeta(name=crd_name),
            spec=CustomResourceDefinitionSpec(
                group=group,
                scope="Namespaced",
                names=CustomResourceDefinitionNames(kind=kind, plural=plural),
                versions=[
                    CustomResourceDefinitionVersion(
                        name="v1",
                        served=True,
                        storage=True,
                        schema=CustomResourceValidation(openAPIV3Schema=schema),
                    )
                ],
            ),
        )
    )
    try:

        def established() -> bool:
            crd = kube.get(CustomResourceDefinition, crd_name)
            conditions = (crd.status.conditions if crd.status else None) or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, timeout=30, message="CRD established")
        widget = create_namespaced_resource(group, "v1", kind, plural)
        good = widget(
            metadata=ObjectMeta(name="good", namespace=namespace),
            spec={"minReplicas": 1, "maxReplicas": 3},
        )
        wait_for(lambda: kube.create(good), timeout=30, message="valid object accepted")

        bad = widget(
            metadata=ObjectMeta(name="bad", namespace=namespace),
            spec={"minReplicas": 5, "maxReplicas": 3},
        )
        with pytest.raises(ApiError) as rejected:
            kube.create(bad)
        assert rejected.value.status.code == 422
        assert message in (rejected.value.status.message or "")
    finally:
        kube.delete(CustomResourceDefinition, crd_name)


def test_server_side_apply_tracks_and_enforces_field_managers(kube: Client, namespace: str) -> None:
    def settings(value: str) -> ConfigMap:
        return ConfigMap(
            metadata=ObjectMeta(name="settings", namespace=namespace), data={"level": value}
        )

    kube.apply(settings("1"), field_manager="team-a")
    applied = kube.get(ConfigMap, "settings", namespace=namespace)
    managers = {
        (m.manager, m.operation)
        for m in (applied.metadata.managedFields if applied.metadata else []) or []
    }
    assert ("team-a", "Apply") in managers

    with pytest.raises(ApiError) as conflict:
        kube.apply(settings("2"), field_manager="team-b")
    assert conflict.value.status.code == 409

    kube.apply(settings("2"), field_manager="team-b", force=True)
    assert kube.get(ConfigMap, "settings", namespace=namespace).data == {"level": "2"}


def test_control_plane_listens_on_loopback_only(cluster: LocalCluster) -> None:
    listening: list[tuple[str, str, int]] = []
    for process in cluster.processes:
        for connection in psutil.Process(process.pid).net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                listening.append((process.name, connection.laddr.ip, connection.laddr.port))
    assert listening, "expected the control plane to listen somewhere"
    outside = [entry for entry in listening if entry[1] not in ("127.0.0.1", "::1")]
    assert not outside, f"listening beyond loopback: {outside}"

"""Running the real operator process against the local control plane, for one namespace."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from fleetshift_devcluster.cluster import LocalCluster
from fleetshift_devcluster.processes import ManagedProcess, stop_processes
from fleetshift_devcluster.wait import wait_for
from fleetshift_operator import api
from fleetshift_operator.planning.names import calculate_revision

EndpointResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)


@dataclasses.dataclass
class OperatorProcess:
    """``python -m fleetshift_operator`` watching one namespace."""

    kubeconfig: Path
    namespace: str
    log: Path
    process: ManagedProcess | None = None
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "FLEETSHIFT_NAMESPACES": json.dumps([self.namespace]),
            "FLEETSHIFT_METRICS_PORT": "0",
            "FLEETSHIFT_POLL_INTERVAL_SECONDS": "1",
            **self.extra_env,
        }
        self.process = ManagedProcess.spawn(
            "operator",
            [sys.executable, "-m", "fleetshift_operator"],
            self.log,
            cwd=self.log.parent,
            env=env,
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would: no chance to clean up."""
        if self.process is not None:
            self.process.signal(9)
            stop_processes([self.process], grace=5)

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process], grace=10)

    def log_tail(self) -> str:
        return self.process.log_tail(40) if self.process else ""


@pytest.fixture
def operator_process(
    cluster: LocalCluster, namespace: str, endpoint_crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, running for this test's namespace."""
    process = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator.log")
    process.start()
    yield process
    process.stop()


def endpoint_manifest(name: str, namespace: str, spec: dict[str, Any]) -> Any:
    return EndpointResource(metadata=ObjectMeta(name=name, namespace=namespace), spec=spec)


def read_endpoint(kube: Client, name: str, namespace: str) -> dict[str, Any]:
    body: dict[str, Any] = kube.get(EndpointResource, name, namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
    return body


def status_of(kube: Client, name: str, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = read_endpoint(kube, name, namespace).get("status") or {}
    return status


def set_spec(kube: Client, name: str, namespace: str, spec: dict[str, Any]) -> None:
    kube.patch(
        EndpointResource, name, {"spec": spec}, namespace=namespace, patch_type=PatchType.MERGE
    )


def annotate(kube: Client, name: str, namespace: str, annotations: dict[str, str | None]) -> None:
    kube.patch(
        EndpointResource,
        name,
        {"metadata": {"annotations": annotations}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )


def serving_by_revision(kube: Client, namespace: str, service: str) -> dict[str, int]:
    """Ready addresses in the Service's EndpointSlices, counted per fleet revision."""
    pods = {
        p.status.podIP: (p.metadata.labels or {}).get("fleetshift.dev/revision", "")
        for p in kube.list(Pod, namespace=namespace)
        if p.status and p.status.podIP and p.metadata
    }
    counts: dict[str, int] = {}
    slices = kube.list(
        EndpointSlice, namespace=namespace, labels={"kubernetes.io/service-name": service}
    )
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.endpoints or []:
            if endpoint.conditions and endpoint.conditions.ready:
                for address in endpoint.addresses:
                    revision = pods.get(address, "?")
                    counts[revision] = counts.get(revision, 0) + 1
    return counts


def deployments_of(kube: Client, namespace: str, endpoint: str) -> dict[str, int]:
    """Fleet Deployments of an endpoint: revision -> ready replicas."""
    found = {}
    for deployment in kube.list(
        Deployment, namespace=namespace, labels={"fleetshift.dev/endpoint": endpoint}
    ):
        labels = (deployment.metadata.labels if deployment.metadata else None) or {}
        ready = (deployment.status.readyReplicas or 0) if deployment.status else 0
        found[labels.get("fleetshift.dev/revision", "")] = ready
    return found


def in_service(kube: Client, name: str, namespace: str, revision: str) -> bool:
    """The Endpoint is InService on ``revision``."""
    status = status_of(kube, name, namespace)
    return status.get("phase") == "InService" and status.get("activeRevision") == revision


def settled_on(kube: Client, name: str, namespace: str, revision: str) -> bool:
    """``revision``'s is the only fleet left and the Endpoint is InService: a deployment
    that ended either way, the other fleet deleted."""
    return (
        deployments_of(kube, namespace, name).keys() == {revision}
        and status_of(kube, name, namespace).get("phase") == "InService"
    )


def rolled_back_to(kube: Client, name: str, namespace: str, revision: str) -> bool:
    """The deployment rolled back: InService on ``revision``, whose fleet is the only one left."""
    status = status_of(kube, name, namespace)
    return (
        status.get("phase") == "InService"
        and status.get("activeRevision") == revision
        and (status.get("lastDeployment") or {}).get("outcome") == "RolledBack"
        and set(deployments_of(kube, namespace, name)) == {revision}
    )


def create_serving(
    kube: Client, name: str, namespace: str, spec: dict[str, Any], *, timeout: float = 60
) -> str:
    """Create the Endpoint and wait until it is InService with each of its first variant's
    replicas serving; its revision."""
    kube.create(endpoint_manifest(name, namespace, spec))
    revision = revision_of(spec)
    wait_for(
        lambda: (
            status_of(kube, name, namespace).get("phase") == "InService"
            and serving_by_revision(kube, namespace, name)
            == {revision: spec["variants"][0]["replicas"]}
        ),
        timeout=timeout,
        message="InService with every replica serving",
    )
    return revision


def exists(kube: Client, kind: Any, name: str, namespace: str) -> bool:
    try:
        kube.get(kind, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return False
        raise
    return True


def revision_of(spec: dict[str, Any]) -> str:
    """The revision the operator computes for the first variant of an Endpoint ``spec``
    (a plain dict)."""
    return calculate_revision(api.EndpointSpec.model_validate(spec).variants[0])


def make_unready(kube: Client, namespace: str, revision: str) -> None:
    """Take every pod of a fleet out of Ready; kwok leaves pods marked custom alone."""
    pods = kube.list(Pod, namespace=namespace, labels={"fleetshift.dev/revision": revision})
    for pod in pods:
        assert pod.metadata is not None and pod.metadata.name is not None
        name = pod.metadata.name
        kube.patch(
            Pod,
            name,
            {"metadata": {"annotations": {"kwok.x-k8s.io/status": "custom"}}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        conditions = [
            {"type": "Ready", "status": "False"},
            {"type": "ContainersReady", "status": "False"},
        ]
        kube.patch(
            Pod.Status,
            name,
            {"status": {"conditions": conditions}},
            namespace=namespace,
            patch_type=PatchType.STRATEGIC,
        )

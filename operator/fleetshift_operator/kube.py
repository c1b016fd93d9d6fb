"""The one place that talks to the Kubernetes API server.

Every write is server-side apply with the ``fleetshift`` field manager, except
the status (a JSON patch that replaces it whole) and pod labels (a merge
patch of the one label the Replicas router owns).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lightkube import AsyncClient, codecs
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Pod, Secret, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from fleetshift_operator import api
from fleetshift_operator.manifests import (
    ANNOTATION_POD_TEMPLATE,
    LABEL_ENDPOINT,
    LABEL_REVISION,
    LABEL_SERVING,
    LABEL_VARIANT,
    Manifest,
)

FIELD_MANAGER = "fleetshift"
REAPPLY_SECONDS = 600.0
"""How long an unchanged manifest of an object that exists is not applied again."""
REPLICAS_HANDOFF_MANAGER = "fleetshift-replicas-handoff"

EndpointResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)
HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")

_KINDS: dict[str, Any] = {
    "Deployment": Deployment,
    "Service": Service,
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    "HTTPRoute": HTTPRoute,
    "PodDisruptionBudget": PodDisruptionBudget,
    "ConfigMap": ConfigMap,
}

_WAITING_FAILURES = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


@dataclasses.dataclass(frozen=True)
class PodView:
    """What the operator needs to know of one serving pod."""

    name: str
    variant: str
    revision: str
    ready: bool
    serving: bool
    created: str
    deleting: bool
    failure: str | None
    waiting: str | None = None
    """Why the pod is not running yet when that needs a person (Unschedulable), if so."""


@dataclasses.dataclass(frozen=True)
class DeploymentView:
    """What the operator needs to know of one fleet Deployment."""

    name: str
    variant: str
    revision: str
    replicas: int
    ready: int
    waiting: str | None = None
    """Why the Deployment cannot create its pods (a quota, an admission refusal), if so."""
    pod_template: int = 1
    """The operator's pod-template generation it was created with (``fleetshift.dev/
    pod-template``): an older fleet keeps its template until its variant's next revision."""


def _is_not_found(error: ApiError) -> bool:
    return error.status.code == 404


class Kube:
    """A thin async facade over lightkube for the objects an Endpoint owns."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._applied: dict[tuple[str, str, str], tuple[str, float]] = {}

    async def apply(self, manifest: Manifest, *, exists: bool = False) -> None:
        """Server-side apply ``manifest`` as the ``fleetshift`` field manager.

        An object the caller saw exist (``exists``), to which this process applied the
        same manifest less than ``REAPPLY_SECONDS`` ago, is not applied again: an Endpoint
        at rest then costs no write per resync. Drift made by hand is still undone
        within that time, and any change of the manifest is applied at once.
        """
        metadata = manifest["metadata"]
        key = (manifest["kind"], metadata.get("namespace", ""), metadata["name"])
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        now = time.monotonic()
        last = self._applied.get(key)
        if exists and last is not None and last[0] == digest and now - last[1] < REAPPLY_SECONDS:
            return
        await self.client.apply(codecs.from_dict(manifest), field_manager=FIELD_MANAGER, force=True)
        self._applied[key] = (digest, now)

    async def delete(self, kind: str, name: str, namespace: str) -> bool:
        """Delete one object; True if it existed."""
        self._applied.pop((kind, namespace, name), None)
        try:
            await self.client.delete(_KINDS[kind], name, namespace=namespace)
        except ApiError as error:
            if _is_not_found(error):
                return False
            raise
        return True

    async def hand_over_replicas(self, namespace: str, name: str, replicas: int) -> None:
        """Give ``spec.replicas`` a second owner so the main field manager can drop it.

        Server-side apply deletes a field its only owner stops applying; a
        Deployment whose replicas an HPA manages would fall back to 1 replica.
        A separate manager co-owns the same value first (the documented way to
        transfer ownership), then the HPA takes the field over when it scales.
        """
        await self.client.patch(
            Deployment,
            name,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"replicas": replicas},
            },
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager=REPLICAS_HANDOFF_MANAGER,
            force=True,
        )

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Change only a Deployment's replica count (its pod template stays as it is)."""
        await self.client.patch(
            Deployment,
            name,
            {"spec": {"replicas": replicas}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )

    async def deployments(self, namespace: str, endpoint: str) -> list[DeploymentView]:
        views = []
        async for item in self.client.list(
            Deployment, namespace=namespace, labels={LABEL_ENDPOINT: endpoint}
        ):
            views.append(deployment_view_of(item.to_dict()))
        return views

    async def names(self, kind: str, namespace: str, endpoint: str) -> list[str]:
        """Names of objects of ``kind`` labelled for ``endpoint``."""
        found = []
        async for item in self.client.list(
            _KINDS[kind], namespace=namespace, labels={LABEL_ENDPOINT: endpoint}
        ):
            if item.metadata is not None and item.metadata.name:
                found.append(item.metadata.name)
        return found

    async def pods(self, namespace: str, endpoint: str) -> list[PodView]:
        views = []
        async for pod in self.client.list(
            Pod, namespace=namespace, labels={LABEL_ENDPOINT: endpoint}
        ):
            views.append(pod_view(pod))
        return views

    async def set_serving(self, namespace: str, pods: Iterable[tuple[str, bool]]) -> None:
        """Add or remove the serving label on pods (missing pods are skipped)."""
        for name, serving in pods:
            value = "true" if serving else None
            try:
                await self.client.patch(
                    Pod,
                    name,
                    {"metadata": {"labels": {LABEL_SERVING: value}}},
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                )
            except ApiError as error:
                if not _is_not_found(error):
                    raise

    async def get_endpoint(self, namespace: str, name: str) -> Manifest | None:
        """The Endpoint as a plain dict, or None if it is gone."""
        try:
            endpoint = await self.client.get(EndpointResource, name, namespace=namespace)
        except ApiError as error:
            if _is_not_found(error):
                return None
            raise
        body: Manifest = endpoint.to_dict()  # type: ignore[no-untyped-call]
        return body

    async def set_phase(self, namespace: str, name: str, phase: str) -> None:
        """Set only ``status.phase`` (used while the Endpoint is being deleted)."""
        try:
            await self.client.patch(
                EndpointResource.Status,
                name,
                {"status": {"phase": phase}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            if not _is_not_found(error):
                raise

    async def read_secret(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded."""
        secret = await self.client.get(Secret, name, namespace=namespace)
        data = (secret.data or {}) if secret else {}
        if key not in data:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()

    async def replace_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace the Endpoint's whole status through the status subresource."""
        await self.client.patch(
            EndpointResource.Status,
            name,
            [{"op": "add", "path": "/status", "value": status}],
            namespace=namespace,
            patch_type=PatchType.JSON,
        )

    async def merge_condition(self, namespace: str, name: str, condition: dict[str, Any]) -> None:
        """Put one ``api.Condition`` (as a dict) into the Endpoint's status, keeping the
        other conditions and every other status field, through the status subresource.

        The condition replaces the one of the same ``type``; its ``lastTransitionTime``
        stays the old one when ``status`` did not change. The patch carries the
        resourceVersion read, so a concurrent status write makes it fail (409) rather
        than be lost. A missing Endpoint is skipped.
        """
        try:
            endpoint = await self.client.get(EndpointResource, name, namespace=namespace)
        except ApiError as error:
            if _is_not_found(error):
                return
            raise
        body: Manifest = endpoint.to_dict()  # type: ignore[no-untyped-call]
        conditions = list((body.get("status") or {}).get("conditions") or [])
        previous = next((c for c in conditions if c.get("type") == condition["type"]), None)
        if previous is not None and previous.get("status") == condition["status"]:
            condition = {**condition, "lastTransitionTime": previous["lastTransitionTime"]}
        merged = [c for c in conditions if c.get("type") != condition["type"]] + [condition]
        await self.client.patch(
            EndpointResource.Status,
            name,
            {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "status": {"conditions": merged},
            },
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )


def pod_view(pod: Pod) -> PodView:
    """Condense a Pod into what routing and failure detection need."""
    return pod_view_of(pod.to_dict())


def pod_view_of(body: Mapping[str, Any]) -> PodView:
    """The same from a Pod as the API serves it (a watch event's object, a kopf body).

    >>> pod_view_of({"metadata": {"name": "p", "labels": {"fleetshift.dev/revision": "r"}},
    ...     "status": {"conditions": [{"type": "PodScheduled", "status": "False",
    ...     "reason": "Unschedulable", "message": "0/3 nodes"}]}}).waiting
    'Unschedulable: 0/3 nodes'
    """
    metadata = body.get("metadata") or {}
    labels = metadata.get("labels") or {}
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    failure = None
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting is not None and waiting.get("reason") in _WAITING_FAILURES:
            failure = f"{waiting['reason']} in pod {metadata.get('name', '?')}"
    unscheduled = _condition_says(conditions, "PodScheduled", "False", "Unschedulable")
    return PodView(
        name=metadata.get("name") or "",
        variant=labels.get(LABEL_VARIANT, ""),
        revision=labels.get(LABEL_REVISION, ""),
        ready=ready,
        serving=labels.get(LABEL_SERVING) == "true",
        created=metadata.get("creationTimestamp") or "",
        deleting=bool(metadata.get("deletionTimestamp")),
        failure=failure,
        waiting=unscheduled,
    )


def _condition_says(
    conditions: Sequence[Mapping[str, Any]], kind: str, state: str, default: str | None = None
) -> str | None:
    """``reason: message`` of the last condition ``kind`` in ``state``, if there is one.

    >>> _condition_says([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
    ...     "message": "0/3 nodes are available"}], "PodScheduled", "False")
    'Unschedulable: 0/3 nodes are available'
    >>> _condition_says([{"type": "PodScheduled", "status": "True"}], "PodScheduled", "False")
    """
    said = None
    for condition in conditions:
        if condition.get("type") == kind and condition.get("status") == state:
            reason = condition.get("reason") or default or kind
            message = condition.get("message")
            said = f"{reason}: {message}" if message else reason
    return said


def deployment_view_of(body: Mapping[str, Any]) -> DeploymentView:
    """A fleet Deployment as the API serves it, condensed.

    >>> deployment_view_of({"metadata": {"name": "d", "labels": {"fleetshift.dev/variant": "v",
    ...     "fleetshift.dev/revision": "r"}}, "spec": {"replicas": 3},
    ...     "status": {"readyReplicas": 2}})
    DeploymentView(name='d', ..., ready=2, waiting=None, pod_template=1)
    """
    metadata = body.get("metadata") or {}
    labels = metadata.get("labels") or {}
    status = body.get("status") or {}
    waiting = _condition_says(status.get("conditions") or [], "ReplicaFailure", "True")
    return DeploymentView(
        name=metadata.get("name") or "",
        variant=labels.get(LABEL_VARIANT, ""),
        revision=labels.get(LABEL_REVISION, ""),
        replicas=(body.get("spec") or {}).get("replicas") or 0,
        ready=status.get("readyReplicas") or 0,
        waiting=waiting,
        pod_template=int((metadata.get("annotations") or {}).get(ANNOTATION_POD_TEMPLATE, "1")),
    )

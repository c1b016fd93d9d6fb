"""Live edits of who copies requests to a shadow: the gateway (an ``HTTPRoute``
``RequestMirror``) or production's pods (the Endpoint's shadows ConfigMap). Whichever the
spec says, the other stops: a shadow never gets each request twice, and production is
never redeployed for it. The real operator on the local control plane; each test has its
own namespace and polls cluster state.
"""

from __future__ import annotations

import json
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import ConfigMap

from fleetshift_devcluster.wait import wait_for
from fleetshift_operator.kube import HTTPRoute
from support.operator_process import (
    OperatorProcess,
    deployments_of,
    endpoint_manifest,
    revision_of,
    set_spec,
    status_of,
)
from support.specs import endpoint_spec

NAME = "churn"
MAIN = {"name": "main", "model": {"uri": "s3://models/churn/v1"}, "replicas": 2}
SHADOW = {
    "name": "shadow",
    "model": {"uri": "s3://models/churn/v2"},
    "replicas": 1,
    "shadow": {"samplingPercent": 20},
}


def spec(traffic: dict[str, Any]) -> dict[str, Any]:
    return {
        **endpoint_spec(termination=2, timeout=1800),
        "variants": [MAIN, SHADOW],
        "traffic": traffic,
    }


def gateway(mirroring: str | None = None) -> dict[str, Any]:
    routing: dict[str, Any] = {"parentRefs": [{"name": "public"}]}
    if mirroring is not None:
        routing["mirroring"] = mirroring
    return {"router": "GatewayAPI", "gatewayAPI": routing}


def copiers(kube: Client, namespace: str) -> tuple[list[str], list[str]]:
    """Who copies to which shadow revision: (the pods' file, the route's mirror filters)."""
    try:
        config = kube.get(ConfigMap, f"{NAME}-shadows", namespace=namespace)
        pods = [s["revision"] for s in json.loads((config.data or {})["mirror.json"])["shadows"]]
    except ApiError:
        pods = []
    try:
        route = kube.get(HTTPRoute, NAME, namespace=namespace).to_dict()  # type: ignore[no-untyped-call]
    except ApiError:
        return pods, []
    filters = route["spec"]["rules"][0].get("filters") or []
    gateway_copies = [
        f["requestMirror"]["backendRef"]["name"].rsplit("-", 1)[1]
        for f in filters
        if f["type"] == "RequestMirror"
    ]
    return pods, gateway_copies


def create_copying(kube: Client, namespace: str, traffic: dict[str, Any], where: str) -> str:
    """Create the Endpoint with ``traffic`` and wait until it is InService with production's
    pods alone copying to the shadow; returns the shadow's revision."""
    shadow = revision_of({"variants": [SHADOW]})
    kube.create(endpoint_manifest(NAME, namespace, spec(traffic)))
    wait_for(
        lambda: (
            status_of(kube, NAME, namespace).get("phase") == "InService"
            and copiers(kube, namespace) == ([shadow], [])
        ),
        timeout=60,
        message=f"InService {where}, production's pods copying",
    )
    return shadow


def test_switching_who_mirrors_never_copies_twice_and_never_redeploys_production(
    kube: Client,
    namespace: str,
    gateway_api_crds: list[str],
    operator_process: OperatorProcess,
) -> None:
    shadow = create_copying(kube, namespace, gateway("Runtime"), "with runtime mirroring")
    fleets = deployments_of(kube, namespace, NAME)

    set_spec(kube, NAME, namespace, spec(gateway("Gateway")))
    wait_for(
        lambda: copiers(kube, namespace) == ([], [shadow]),
        timeout=60,
        message="the gateway copying and the pods' file emptied",
    )
    set_spec(kube, NAME, namespace, spec(gateway("Runtime")))
    wait_for(
        lambda: copiers(kube, namespace) == ([shadow], []),
        timeout=60,
        message="the pods copying again and the route without its mirror",
    )
    assert deployments_of(kube, namespace, NAME) == fleets, "no fleet was redeployed"
    assert status_of(kube, NAME, namespace).get("phase") == "InService"


def test_moving_a_shadowed_endpoint_to_the_gateway_stops_the_pods_copies(
    kube: Client,
    namespace: str,
    gateway_api_crds: list[str],
    operator_process: OperatorProcess,
) -> None:
    shadow = create_copying(kube, namespace, {"router": "Replicas"}, "on the Replicas router")
    set_spec(kube, NAME, namespace, spec(gateway()))
    wait_for(
        lambda: copiers(kube, namespace) == ([], [shadow]),
        timeout=60,
        message="the gateway copying (its default) and the pods' file emptied",
    )

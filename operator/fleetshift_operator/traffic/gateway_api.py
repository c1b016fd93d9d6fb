"""The ``GatewayAPI`` router: per-fleet Services and one ``HTTPRoute`` with exact weights."""

from __future__ import annotations

from collections.abc import Sequence

from fleetshift_operator.kube import Kube, PodView
from fleetshift_operator.manifests import (
    Manifest,
    calculate_mirror_targets,
    get_fleet_service,
    get_http_route,
)
from fleetshift_operator.observe import Observer
from fleetshift_operator.planning.names import fleet_name
from fleetshift_operator.planning.types import FleetPlan
from fleetshift_operator.traffic.base import apply_peers_config


class GatewayAPIRouter:
    """Weights on an ``HTTPRoute``; the gateway splits requests exactly."""

    def __init__(self, kube: Kube, observer: Observer) -> None:
        self.kube = kube
        self.observer = observer

    async def route(
        self, endpoint: Manifest, fleets: Sequence[FleetPlan], pods: Sequence[PodView]
    ) -> None:
        metadata = endpoint["metadata"]
        services = set(
            await self.observer.names("Service", metadata["namespace"], metadata["name"])
        )
        for fleet in fleets:
            service = get_fleet_service(endpoint, fleet)
            await self.kube.apply(service, exists=service["metadata"]["name"] in services)
        routing = endpoint["spec"].get("traffic", {}).get("gatewayAPI") or {}
        # The shadows' fleet Services are applied above, like every fleet's; requests
        # naming a variant are the route's to match, so the file names no variants. With
        # the gateway mirroring, the file names no shadows either: one the runtime wrote
        # before (``mirroring: Runtime``, or the Replicas router) is emptied, or production
        # pods would copy each request once more beside the gateway's copy.
        runtime_mirrors = routing.get("mirroring") == "Runtime"
        targets = calculate_mirror_targets(endpoint, list(fleets)) if runtime_mirrors else []
        await apply_peers_config(self.kube, self.observer, endpoint, targets, [])
        await self.kube.apply(get_http_route(endpoint, list(fleets), routing))

    async def retire(self, endpoint: Manifest, fleets: Sequence[FleetPlan]) -> None:
        metadata = endpoint["metadata"]
        name, namespace = metadata["name"], metadata["namespace"]
        keep = {fleet_name(name, f.variant, f.revision) for f in fleets} | {name}
        for service in await self.observer.names("Service", namespace, name):
            if service not in keep:
                await self.kube.delete("Service", service, namespace)

"""The ``GatewayAPI`` router: per-fleet Services and one ``HTTPRoute`` with exact weights."""

from __future__ import annotations

from collections.abc import Sequence

from fleetshift_operator.kube import Kube, PodView
from fleetshift_operator.manifests import (
    Manifest,
    calculate_mirror_targets,
    get_fleet_service,
    get_http_route,
    get_mirror_config,
    mirror_config_name,
)
from fleetshift_operator.observe import Observer
from fleetshift_operator.planning.names import fleet_name
from fleetshift_operator.planning.types import FleetPlan


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
        if routing.get("mirroring") == "Runtime":
            await self._point_at_shadows(endpoint, list(fleets))
        await self.kube.apply(get_http_route(endpoint, list(fleets), routing))

    async def _point_at_shadows(self, endpoint: Manifest, fleets: list[FleetPlan]) -> None:
        """``mirroring: Runtime``: the shadows ConfigMap production pods read, naming each
        shadow's target fleet Service (applied above, like every fleet's), written once an
        Endpoint has had a shadow so that removing it is seen. Requests naming a variant are
        the route's to match, so it names no variants."""
        namespace, name = endpoint["metadata"]["namespace"], endpoint["metadata"]["name"]
        targets = calculate_mirror_targets(endpoint, fleets)
        config = mirror_config_name(name)
        configs = await self.observer.names("ConfigMap", namespace, name)
        if targets or config in configs:
            await self.kube.apply(get_mirror_config(endpoint, targets), exists=config in configs)

    async def retire(self, endpoint: Manifest, fleets: Sequence[FleetPlan]) -> None:
        metadata = endpoint["metadata"]
        name, namespace = metadata["name"], metadata["namespace"]
        keep = {fleet_name(name, f.variant, f.revision) for f in fleets} | {name}
        for service in await self.observer.names("Service", namespace, name):
            if service not in keep:
                await self.kube.delete("Service", service, namespace)

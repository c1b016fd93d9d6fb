"""The ``Replicas`` router: one stable Service, the share follows serving replicas.

The stable Service selects every pod of the endpoint labelled
``fleetshift.dev/serving: "true"``. Both fleets exist at full size during a
blue/green deployment (capacity is pre-scaled), and the router labels just
enough pods of each to give green its share, as SageMaker shifts capacity:
with 4 replicas per fleet and green at 25%, 3 blue and 1 green pod serve.
kube-proxy then spreads requests over the Ready endpoints of the Service's
EndpointSlices, so the split is real without a mesh.

Shadow variants take no share. Production pods copy sampled requests to them: the router
gives each shadow's target fleet a Service of its own and writes the Endpoint's shadows
ConfigMap, which production pods mount and their runtime reads (``runtime/README.md``,
"Shadow variants"). With two or more variants serving callers, each has a Service over
its serving pods, named in the same file: a pod that receives a request naming another
variant (``X-Amzn-SageMaker-Target-Variant``) forwards it there.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetshift_operator.kube import Kube, PodView
from fleetshift_operator.manifests import (
    Manifest,
    calculate_mirror_targets,
    calculate_pinnable_variants,
    get_fleet_service,
    get_stable_service,
    get_variant_service,
    variant_service_name,
)
from fleetshift_operator.observe import Observer
from fleetshift_operator.planning.names import fleet_name
from fleetshift_operator.planning.types import FleetPlan
from fleetshift_operator.traffic.base import apply_peers_config


def calculate_serving_pods(fleets: Sequence[FleetPlan], pods: Sequence[PodView]) -> set[str]:
    """The pods that must carry the serving label.

    A fleet serves with as many pods as the plan's ``serving_replicas`` says, or
    with all of them when that is None and it has traffic (a fleet not planned
    serves with none). Among a fleet's pods Ready ones come first, and among those
    the ones already serving (no churn), oldest first; pods being deleted never serve.

    >>> from fleetshift_operator.planning.types import FleetPlan
    >>> def pod(name, rev, ready=True, serving=False):
    ...     return PodView(name, "main", rev, ready, serving, name, False, None)
    >>> plan = [FleetPlan("main", "b", "blue", 4, 75, serving_replicas=3),
    ...         FleetPlan("main", "g", "green", 4, 25, serving_replicas=1)]
    >>> blue = [pod(f"b{i}", "b", serving=True) for i in range(4)]
    >>> pods = blue + [pod(f"g{i}", "g") for i in range(4)]
    >>> sorted(calculate_serving_pods(plan, pods))
    ['b0', 'b1', 'b2', 'g0']
    """
    chosen: set[str] = set()
    by_variant: dict[str, list[FleetPlan]] = {}
    for fleet in fleets:
        by_variant.setdefault(fleet.variant, []).append(fleet)
    for variant, planned in by_variant.items():
        for fleet in planned:
            members = [
                p
                for p in pods
                if p.variant == variant and p.revision == fleet.revision and not p.deleting
            ]
            if fleet.serving_replicas is None:
                if fleet.traffic_percent > 0:
                    chosen.update(p.name for p in members)
                continue
            ranked = sorted(members, key=lambda p: (not p.ready, not p.serving, p.created, p.name))
            chosen.update(p.name for p in ranked[: fleet.serving_replicas])
    return chosen


class ReplicasRouter:
    """Labels pods so the stable Service's endpoints match the plan."""

    def __init__(self, kube: Kube, observer: Observer) -> None:
        self.kube = kube
        self.observer = observer

    async def route(
        self, endpoint: Manifest, fleets: Sequence[FleetPlan], pods: Sequence[PodView]
    ) -> None:
        namespace, name = endpoint["metadata"]["namespace"], endpoint["metadata"]["name"]
        services = await self.observer.names("Service", namespace, name)
        await self.kube.apply(get_stable_service(endpoint), exists=name in services)
        await self._point_at_peers(endpoint, list(fleets), services)
        wanted = calculate_serving_pods(fleets, pods)
        # Add before removing, so the Service never has fewer endpoints than needed.
        await self.kube.set_serving(
            namespace, [(p.name, True) for p in pods if p.name in wanted and not p.serving]
        )
        await self.kube.set_serving(
            namespace, [(p.name, False) for p in pods if p.name not in wanted and p.serving]
        )

    async def _point_at_peers(
        self, endpoint: Manifest, fleets: list[FleetPlan], services: list[str]
    ) -> None:
        """A Service for each shadow's target fleet and each pinnable variant, then the
        ConfigMap that names them (written once an Endpoint has had one, so that removing
        it is seen)."""
        targets = calculate_mirror_targets(endpoint, fleets)
        pinnable = calculate_pinnable_variants(endpoint, fleets)
        wanted = [get_fleet_service(endpoint, target) for target in targets]
        wanted += [get_variant_service(endpoint, variant) for variant in pinnable]
        for service in wanted:
            await self.kube.apply(service, exists=service["metadata"]["name"] in services)
        await apply_peers_config(self.kube, self.observer, endpoint, targets, pinnable)

    async def retire(self, endpoint: Manifest, fleets: Sequence[FleetPlan]) -> None:
        """The Services of fleets that are no longer a shadow's target and of variants no
        longer pinnable (the stable Service outlives every fleet)."""
        namespace, name = endpoint["metadata"]["namespace"], endpoint["metadata"]["name"]
        targets = calculate_mirror_targets(endpoint, list(fleets))
        keep = {fleet_name(name, f.variant, f.revision) for f in targets} | {name}
        keep |= {
            variant_service_name(name, v)
            for v in calculate_pinnable_variants(endpoint, list(fleets))
        }
        for service in await self.observer.names("Service", namespace, name):
            if service not in keep:
                await self.kube.delete("Service", service, namespace)

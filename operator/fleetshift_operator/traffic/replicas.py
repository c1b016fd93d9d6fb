"""The ``Replicas`` router: one stable Service, the share follows serving replicas.

The stable Service selects every pod of the endpoint labelled
``fleetshift.dev/serving: "true"``. Both fleets exist at full size during a
blue/green deployment (capacity is pre-scaled), and the router labels just
enough pods of each to give green its share, as SageMaker shifts capacity:
with 4 replicas per fleet and green at 25%, 3 blue and 1 green pod serve.
kube-proxy then spreads requests over the Ready endpoints of the Service's
EndpointSlices, so the split is real without a mesh.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetshift_operator.kube import Kube, PodView
from fleetshift_operator.manifests import Manifest, get_stable_service
from fleetshift_operator.observe import Observer
from fleetshift_operator.planning.types import FleetPlan


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
        wanted = calculate_serving_pods(fleets, pods)
        # Add before removing, so the Service never has fewer endpoints than needed.
        await self.kube.set_serving(
            namespace, [(p.name, True) for p in pods if p.name in wanted and not p.serving]
        )
        await self.kube.set_serving(
            namespace, [(p.name, False) for p in pods if p.name not in wanted and p.serving]
        )

    async def retire(self, endpoint: Manifest, fleets: Sequence[FleetPlan]) -> None:
        """Nothing to remove: the stable Service outlives every fleet."""

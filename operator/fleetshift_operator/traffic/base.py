"""The traffic-router plug point: one Protocol, one implementation per router."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fleetshift_operator.kube import Kube, PodView
from fleetshift_operator.manifests import Manifest, get_mirror_config, mirror_config_name
from fleetshift_operator.observe import Observer
from fleetshift_operator.planning.types import FleetPlan


class TrafficRouter(Protocol):
    """Makes each fleet carry the share of traffic the plan gives it."""

    async def route(
        self, endpoint: Manifest, fleets: Sequence[FleetPlan], pods: Sequence[PodView]
    ) -> None:
        """Apply the plan's traffic split. Fleets absent from ``fleets`` get none."""
        ...

    async def retire(self, endpoint: Manifest, fleets: Sequence[FleetPlan]) -> None:
        """Remove router objects of fleets that are no longer planned (after ``route``)."""
        ...


async def apply_peers_config(
    kube: Kube,
    observer: Observer,
    endpoint: Manifest,
    targets: list[FleetPlan],
    pinnable: list[str],
) -> None:
    """The ConfigMap production pods read their peers from (each shadow's target fleet,
    each pinnable variant), written once an Endpoint has had one, so that removing the
    last is seen."""
    namespace, name = endpoint["metadata"]["namespace"], endpoint["metadata"]["name"]
    config = mirror_config_name(name)
    configs = await observer.names("ConfigMap", namespace, name)
    if targets or pinnable or config in configs:
        await kube.apply(get_mirror_config(endpoint, targets, pinnable), exists=config in configs)

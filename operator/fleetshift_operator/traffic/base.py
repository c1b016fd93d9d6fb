"""The traffic-router plug point: one Protocol, one implementation per router."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fleetshift_operator.kube import PodView
from fleetshift_operator.manifests import Manifest
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

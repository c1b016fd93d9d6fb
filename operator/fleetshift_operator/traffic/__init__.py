"""Traffic routers behind one Protocol, chosen by ``spec.traffic.router``."""

from __future__ import annotations

from fleetshift_operator.kube import Kube
from fleetshift_operator.observe import Observer
from fleetshift_operator.traffic.base import TrafficRouter
from fleetshift_operator.traffic.gateway_api import GatewayAPIRouter
from fleetshift_operator.traffic.replicas import ReplicasRouter

ROUTERS: dict[str, type[ReplicasRouter] | type[GatewayAPIRouter]] = {
    "Replicas": ReplicasRouter,
    "GatewayAPI": GatewayAPIRouter,
}


def make_router(router: str, kube: Kube, observer: Observer | None = None) -> TrafficRouter:
    """The router named by ``spec.traffic.router``; it writes through ``kube`` and reads
    the Endpoint's objects through ``observer`` (default: ``kube``, the apiserver).

    >>> sorted(ROUTERS)
    ['GatewayAPI', 'Replicas']
    """
    try:
        return ROUTERS[router](kube, observer or kube)
    except KeyError:
        raise ValueError(f"unknown traffic router {router!r}; known: {sorted(ROUTERS)}") from None


__all__ = ["GatewayAPIRouter", "ReplicasRouter", "TrafficRouter", "make_router"]

"""``python -m fleetshift_operator``: run the operator against the current KUBECONFIG."""

from __future__ import annotations

import asyncio

import kopf

from fleetshift_operator import handlers
from fleetshift_operator.settings import OperatorSettings


def main() -> None:
    settings = OperatorSettings()
    handlers.configure(settings)
    liveness = f"http://127.0.0.1:{settings.health_port}/healthz" if settings.health_port else None
    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            liveness_endpoint=liveness,
        )
    )


if __name__ == "__main__":
    main()

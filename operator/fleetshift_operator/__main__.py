"""``python -m fleetshift_operator``: run the operator against the current KUBECONFIG."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import kopf

from fleetshift_operator import handlers
from fleetshift_operator.health import serve_probes
from fleetshift_operator.logs import LOGGER, configure_logging
from fleetshift_operator.settings import OperatorSettings


def peering_priority(started_ns: int) -> int:
    """A kopf peering priority by seniority: the replica started first acts.

    kopf pauses every replica that sees a peer of higher priority, and *all* of
    them when two share one. Replicas of one Deployment share their environment,
    so each takes the negated start time in microseconds: an older replica
    outranks a newer one, a replica started during a rolling update waits as a
    standby instead of taking over, and two replicas tie only when started in
    the same microsecond.

    >>> peering_priority(2_000_000_000) > peering_priority(3_000_000_000)
    True
    """
    return -(started_ns // 1000)


def main() -> None:
    settings = OperatorSettings()
    configure_logging(settings.log_format, settings.log_level)
    handlers.configure(settings)
    logging.getLogger(LOGGER).info(
        "operator starting: %s, poll %g s, resync %g s",
        "namespaces " + ", ".join(settings.namespaces) if settings.namespaces else "all namespaces",
        settings.poll_interval_seconds,
        settings.resync_seconds,
        extra={"peering": settings.peering or "standalone"},
    )
    priority = settings.peering_priority
    if settings.peering is not None and priority is None:
        priority = peering_priority(time.time_ns())
    asyncio.run(
        run(
            settings,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            priority=priority,
        )
    )


async def run(settings: OperatorSettings, **operator_options: Any) -> None:
    """kopf's operator, with the pod's probes (:mod:`fleetshift_operator.health`) served
    beside it when ``settings.health_port`` is set: readiness turns true when kopf raises
    its ready flag, after the startup handler."""
    ready = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        if settings.health_port:
            await stack.enter_async_context(
                serve_probes(settings.health_host, settings.health_port, ready)
            )
        await kopf.operator(ready_flag=ready, **operator_options)


if __name__ == "__main__":
    main()

"""The operator pod's two probes, on one port (``FLEETSHIFT_HEALTH_PORT``).

- ``/healthz`` (liveness): 200 while the operator's event loop answers. A stuck loop stops
  answering and the kubelet restarts the pod.
- ``/readyz`` (readiness): 503 until kopf has run the startup handler (settings applied,
  API client built, metrics served) and released its watches, then 200. kopf raises the
  ``ready`` flag at that moment (``kopf.operator(ready_flag=...)``).

A pod that is alive but not ready is one still starting: the chart's rolling update waits
for readiness before it stops the old pod.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


def probe_app(ready: asyncio.Event) -> web.Application:
    """The probe routes; readiness follows ``ready``."""

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readiness(_: web.Request) -> web.Response:
        is_ready = ready.is_set()
        return web.json_response({"ready": is_ready}, status=200 if is_ready else 503)

    app = web.Application()
    app.add_routes([web.get(LIVENESS_PATH, alive), web.get(READINESS_PATH, readiness)])
    return app


@contextlib.asynccontextmanager
async def serve_probes(host: str, port: int, ready: asyncio.Event) -> AsyncIterator[int]:
    """Serve the probes on ``host:port`` while the block runs; yields the bound port
    (``port`` 0 binds a free one)."""
    runner = web.AppRunner(probe_app(ready), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()

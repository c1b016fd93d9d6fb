"""The operator pod's probes: liveness answers from the start, readiness only once kopf
has finished the startup handler and raised its ready flag."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import kopf
import pytest

from fleetshift_operator import __main__ as entry
from fleetshift_operator.health import LIVENESS_PATH, READINESS_PATH, serve_probes
from fleetshift_operator.settings import OperatorSettings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _status(client: httpx.AsyncClient, port: int, path: str) -> int:
    return (await client.get(f"http://127.0.0.1:{port}{path}")).status_code


async def _first_answer(client: httpx.AsyncClient, port: int, path: str) -> int:
    """The status of ``path`` once the probe server (started by a task on this loop) binds:
    each refused attempt hands the loop to that task."""
    for _ in range(1000):
        try:
            return await _status(client, port, path)
        except httpx.ConnectError:
            await asyncio.sleep(0)
    raise AssertionError(f"nothing answers on port {port}")


def test_liveness_and_readiness_are_different_paths() -> None:
    assert LIVENESS_PATH != READINESS_PATH


def test_readiness_follows_the_ready_flag_and_liveness_does_not() -> None:
    async def scenario() -> None:
        ready = asyncio.Event()
        async with (
            serve_probes("127.0.0.1", 0, ready) as port,
            httpx.AsyncClient() as client,
        ):
            assert await _status(client, port, LIVENESS_PATH) == 200
            assert await _status(client, port, READINESS_PATH) == 503
            ready.set()
            assert await _status(client, port, READINESS_PATH) == 200
            assert await _status(client, port, LIVENESS_PATH) == 200

    asyncio.run(scenario())


def test_the_operator_pod_is_ready_only_after_kopf_finishes_its_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run`` hands kopf the flag that readiness follows; kopf raises it after the startup
    handlers (a stand-in for kopf holds its startup open until the test releases it)."""
    port = _free_port()
    startup_may_finish = asyncio.Event()
    startup_finished = asyncio.Event()
    stop = asyncio.Event()
    received: dict[str, Any] = {}

    async def kopf_operator(*, ready_flag: asyncio.Event, **options: Any) -> None:
        received.update(options)
        await startup_may_finish.wait()
        ready_flag.set()
        startup_finished.set()
        await stop.wait()

    monkeypatch.setattr(kopf, "operator", kopf_operator)
    settings = OperatorSettings(health_host="127.0.0.1", health_port=port)

    async def scenario() -> None:
        operator = asyncio.create_task(entry.run(settings, clusterwide=True))
        async with httpx.AsyncClient() as client:
            alive = await _first_answer(client, port, LIVENESS_PATH)
            assert alive == 200
            assert await _status(client, port, READINESS_PATH) == 503, "ready during startup"
            startup_may_finish.set()
            await startup_finished.wait()
            assert await _status(client, port, READINESS_PATH) == 200
        stop.set()
        await operator

    asyncio.run(scenario())
    assert received == {"clusterwide": True}


def test_no_probe_server_without_a_health_port(monkeypatch: pytest.MonkeyPatch) -> None:
    flags: list[asyncio.Event] = []

    async def kopf_operator(*, ready_flag: asyncio.Event, **_: Any) -> None:
        flags.append(ready_flag)

    monkeypatch.setattr(kopf, "operator", kopf_operator)
    asyncio.run(entry.run(OperatorSettings(health_port=0)))
    assert len(flags) == 1

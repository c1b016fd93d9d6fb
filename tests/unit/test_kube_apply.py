"""Unchanged manifests of objects that exist are not applied again within the re-apply
window. The API client is a recorder here (a fake: what is under test is the decision
to call it); the cluster tests run the same code against the real apiserver."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleetshift_operator import kube as kube_module
from fleetshift_operator.kube import Kube


class Recorder:
    def __init__(self) -> None:
        self.applied: list[str] = []
        self.deleted: list[str] = []

    async def apply(self, obj: Any, **_: Any) -> None:
        self.applied.append(obj.metadata.name)

    async def delete(self, kind: Any, name: str, **_: Any) -> None:
        self.deleted.append(name)


def service(port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "churn", "namespace": "ml"},
        "spec": {"ports": [{"port": port}]},
    }


def test_an_unchanged_manifest_of_an_existing_object_is_applied_once() -> None:
    client = Recorder()
    kube = Kube(client)  # type: ignore[arg-type]

    async def run() -> None:
        await kube.apply(service(), exists=True)
        await kube.apply(service(), exists=True)
        await kube.apply(service(), exists=False)  # gone, by what the caller saw: apply
        await kube.apply(service(81), exists=True)  # changed: apply
        await kube.delete("Service", "churn", "ml")
        await kube.apply(service(81), exists=True)  # deleted by us: apply

    asyncio.run(run())
    assert client.applied == ["churn", "churn", "churn", "churn"]


def test_drift_is_undone_once_the_reapply_window_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Recorder()
    kube = Kube(client)  # type: ignore[arg-type]
    clock = [1000.0]
    monkeypatch.setattr("fleetshift_operator.kube.time.monotonic", lambda: clock[0])

    async def run() -> None:
        await kube.apply(service(), exists=True)
        clock[0] += kube_module.REAPPLY_SECONDS - 1
        await kube.apply(service(), exists=True)
        clock[0] += 2
        await kube.apply(service(), exists=True)

    asyncio.run(run())
    assert client.applied == ["churn", "churn"]

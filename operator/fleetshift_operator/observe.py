"""Where a reconcile reads an Endpoint's children: watch-fed indexes, or the apiserver.

The operator observes from kopf indexes that its watches keep current (``handlers.py``
declares them), so a reconcile costs no read of Deployments, pods, Services or HPAs;
the apiserver reader (:class:`~fleetshift_operator.kube.Kube` itself) serves tools and
tests that run one reconcile without an operator around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from fleetshift_operator.kube import DeploymentView, PodView

Key = tuple[str, str]
"""(namespace, endpoint name): how the indexes are keyed."""


class Observer(Protocol):
    """Reads the objects labelled for one Endpoint."""

    async def deployments(self, namespace: str, endpoint: str) -> list[DeploymentView]:
        """Its fleet Deployments."""
        ...

    async def pods(self, namespace: str, endpoint: str) -> list[PodView]:
        """Its serving pods."""
        ...

    async def names(self, kind: str, namespace: str, endpoint: str) -> list[str]:
        """Names of its objects of ``kind`` (``Service`` or ``HorizontalPodAutoscaler``)."""
        ...


class IndexedObserver:
    """Reads watch-fed indexes that map (namespace, endpoint) to views of its objects.

    >>> import asyncio
    >>> d = DeploymentView("ep-main-abc", "main", "abc", 3, 3)
    >>> seen = IndexedObserver({("ml", "ep"): [d]}, {}, {"Service": {("ml", "ep"): ["ep"]}})
    >>> asyncio.run(seen.deployments("ml", "ep")) == [d], asyncio.run(seen.pods("ml", "ep"))
    (True, [])
    >>> asyncio.run(seen.names("Service", "ml", "ep"))
    ['ep']
    """

    def __init__(
        self,
        deployments: Mapping[Key, Iterable[DeploymentView]],
        pods: Mapping[Key, Iterable[PodView]],
        names: Mapping[str, Mapping[Key, Iterable[str]]],
    ) -> None:
        self._deployments = deployments
        self._pods = pods
        self._names = names

    async def deployments(self, namespace: str, endpoint: str) -> list[DeploymentView]:
        return list(self._deployments.get((namespace, endpoint), ()))

    async def pods(self, namespace: str, endpoint: str) -> list[PodView]:
        return list(self._pods.get((namespace, endpoint), ()))

    async def names(self, kind: str, namespace: str, endpoint: str) -> list[str]:
        return sorted(set((self._names.get(kind) or {}).get((namespace, endpoint), ())))
